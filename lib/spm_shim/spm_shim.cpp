// A C interface around SentencePiece, built as its own shared object and
// loaded by the library with dlmopen() into a separate link-map namespace.
//
// Why: Debian's libsentencepiece.so.0 exports the symbols of the protobuf-lite
// it bundles, and LibTorch loads a different libprotobuf; in one namespace the
// two collide (version abort or crash). In its own namespace SentencePiece
// sees only its own protobuf. The namespace also has its own C/C++ runtime and
// heap, so nothing allocated here is freed there or the other way round:
// every function takes caller-owned buffers and returns the size it needs.
//
// Conventions: functions returning int give >= 0 on success (a size or count)
// and -1 on failure, with the reason copied into `err` (NUL-terminated,
// truncated to `err_cap`). When a result does not fit its buffer the function
// returns the size it needs and writes nothing; the caller retries.

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstring>

#include <fcntl.h>
#include <unistd.h>
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace {

int fail(const std::string& message, char* err, int err_cap) {
  if (err != nullptr && err_cap > 0) {
    const size_t n = std::min(message.size(), static_cast<size_t>(err_cap - 1));
    std::memcpy(err, message.data(), n);
    err[n] = '\0';
  }
  return -1;
}

int copy_ids(const std::vector<int>& ids, int* out, int cap) {
  const int n = static_cast<int>(ids.size());
  if (n <= cap) std::copy(ids.begin(), ids.end(), out);
  return n;
}

int copy_bytes(const std::string& s, char* out, int cap) {
  const int n = static_cast<int>(s.size());
  if (n <= cap) std::memcpy(out, s.data(), s.size());
  return n;
}

sentencepiece::SentencePieceProcessor* processor(void* handle) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int cellstate_spm_abi_version() { return 3; }

__attribute__((visibility("default"))) int cellstate_spm_train(const char* args, char* err,
                                                               int err_cap) {
  try {
    // The trainer logs its command line to stderr whatever --minloglevel
    // says; errors come back in the status, so its stderr is silenced.
    const int saved = ::dup(STDERR_FILENO);
    const int null = ::open("/dev/null", O_WRONLY);
    if (saved >= 0 && null >= 0) ::dup2(null, STDERR_FILENO);
    const auto status = sentencepiece::SentencePieceTrainer::Train(args);
    if (saved >= 0 && null >= 0) ::dup2(saved, STDERR_FILENO);
    if (saved >= 0) ::close(saved);
    if (null >= 0) ::close(null);
    if (!status.ok()) return fail(status.ToString(), err, err_cap);
    return 0;
  } catch (const std::exception& e) {
    return fail(e.what(), err, err_cap);
  }
}

__attribute__((visibility("default"))) void* cellstate_spm_new() {
  return new (std::nothrow) sentencepiece::SentencePieceProcessor();
}

__attribute__((visibility("default"))) void cellstate_spm_delete(void* handle) {
  delete processor(handle);
}

__attribute__((visibility("default"))) int cellstate_spm_load(void* handle, const char* data,
                                                              long size, char* err, int err_cap) {
  try {
    const auto status =
        processor(handle)->LoadFromSerializedProto(std::string(data, static_cast<size_t>(size)));
    if (!status.ok()) return fail(status.ToString(), err, err_cap);
    return 0;
  } catch (const std::exception& e) {
    return fail(e.what(), err, err_cap);
  }
}

__attribute__((visibility("default"))) int cellstate_spm_piece_size(void* handle) {
  return processor(handle)->GetPieceSize();
}

__attribute__((visibility("default"))) int cellstate_spm_special_id(void* handle, int which) {
  auto* p = processor(handle);
  switch (which) {
    case 0: return p->pad_id();
    case 1: return p->unk_id();
    case 2: return p->bos_id();
    case 3: return p->eos_id();
    default: return -1;
  }
}

// The best segmentation (nbest_size == 0), or one sampled from the
// nbest_size best with probability proportional to exp(alpha * score):
// SentencePiece's own n-best subword regularisation (Kudo 2018), except that
// the caller supplies the uniform draw `u` in [0, 1). SentencePiece's own
// sampler cannot be used: it draws from a thread_local generator seeded once
// per thread, so its samples cannot be reproduced from a seed, and threads
// cannot be started inside this dlmopen namespace.
__attribute__((visibility("default"))) int cellstate_spm_encode(void* handle, const char* text,
                                                                long size, int nbest_size,
                                                                float alpha, double u, int* ids,
                                                                int cap, char* err, int err_cap) {
  try {
    std::vector<int> out;
    const std::string input(text, static_cast<size_t>(size));
    if (nbest_size <= 1) {
      const auto status = processor(handle)->Encode(input, &out);
      if (!status.ok()) return fail(status.ToString(), err, err_cap);
      return copy_ids(out, ids, cap);
    }
    const auto nbest = processor(handle)->NBestEncodeAsImmutableProto(input, nbest_size);
    const int n = static_cast<int>(nbest.nbests_size());
    if (n == 0) {
      if (input.empty()) return 0;
      return fail("no n-best segmentation (subword sampling needs a unigram model)", err, err_cap);
    }
    std::vector<double> weight(static_cast<size_t>(n));
    double best = -1e300, total = 0;
    for (int i = 0; i < n; ++i) best = std::max(best, static_cast<double>(alpha) * nbest.nbests(i).score());
    for (int i = 0; i < n; ++i) {
      weight[static_cast<size_t>(i)] = std::exp(static_cast<double>(alpha) * nbest.nbests(i).score() - best);
      total += weight[static_cast<size_t>(i)];
    }
    int pick = n - 1;
    double acc = 0;
    for (int i = 0; i < n; ++i) {
      acc += weight[static_cast<size_t>(i)] / total;
      if (u < acc) {
        pick = i;
        break;
      }
    }
    const auto chosen = nbest.nbests(pick);
    for (size_t k = 0; k < chosen.pieces_size(); ++k)
      out.push_back(static_cast<int>(chosen.pieces(static_cast<int>(k)).id()));
    return copy_ids(out, ids, cap);
  } catch (const std::exception& e) {
    return fail(e.what(), err, err_cap);
  }
}

__attribute__((visibility("default"))) int cellstate_spm_decode(void* handle, const int* ids,
                                                                int n, char* out, int cap,
                                                                char* err, int err_cap) {
  try {
    std::string text;
    const auto status = processor(handle)->Decode(std::vector<int>(ids, ids + n), &text);
    if (!status.ok()) return fail(status.ToString(), err, err_cap);
    return copy_bytes(text, out, cap);
  } catch (const std::exception& e) {
    return fail(e.what(), err, err_cap);
  }
}

__attribute__((visibility("default"))) int cellstate_spm_id_to_piece(void* handle, int id,
                                                                     char* out, int cap) {
  return copy_bytes(processor(handle)->IdToPiece(id), out, cap);
}

__attribute__((visibility("default"))) int cellstate_spm_piece_to_id(void* handle,
                                                                     const char* piece,
                                                                     long size) {
  return processor(handle)->PieceToId(std::string(piece, static_cast<size_t>(size)));
}

}  // extern "C"
