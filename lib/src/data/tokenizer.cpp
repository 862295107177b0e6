#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include "cellstate/data/tokenizer.h"

#include "cellstate/util/random.h"
#include "cellstate/util/io.h"

#include <c10/util/Exception.h>
#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>

namespace cellstate {

namespace {

// The shim's C interface (lib/spm_shim/spm_shim.cpp).
struct SpmApi {
  int (*abi_version)();
  int (*train)(const char*, char*, int);
  void* (*create)();
  void (*destroy)(void*);
  int (*load)(void*, const char*, long, char*, int);
  int (*piece_size)(void*);
  int (*special_id)(void*, int);
  int (*encode)(void*, const char*, long, int, float, double, int*, int, char*, int);
  int (*decode)(void*, const int*, int, char*, int, char*, int);
  int (*id_to_piece)(void*, int, char*, int);
  int (*piece_to_id)(void*, const char*, long);
};

std::string executable_dir() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

template <typename F>
void bind(void* lib, const char* name, F& fn) {
  void* sym = ::dlsym(lib, name);
  if (sym == nullptr)
    throw std::runtime_error(std::string("SentencePiece shim lacks symbol ") + name);
  fn = reinterpret_cast<F>(sym);
}

SpmApi load_api() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("CELLSTATE_SPM_SHIM")) candidates.emplace_back(env);
  candidates.push_back(executable_dir() + "/../lib/libcellstate_spm.so");
#ifdef CELLSTATE_SPM_SHIM_PATH
  candidates.emplace_back(CELLSTATE_SPM_SHIM_PATH);
#endif
  std::string tried;
  for (const auto& path : candidates) {
    if (!file_exists(path)) {
      tried += " " + path + " (missing)";
      continue;
    }
    // A new namespace: SentencePiece's bundled protobuf never meets LibTorch's.
    void* lib = ::dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* e = ::dlerror();
      tried += " " + path + " (" + (e ? e : "dlmopen failed") + ")";
      continue;
    }
    SpmApi api{};
    bind(lib, "cellstate_spm_abi_version", api.abi_version);
    bind(lib, "cellstate_spm_train", api.train);
    bind(lib, "cellstate_spm_new", api.create);
    bind(lib, "cellstate_spm_delete", api.destroy);
    bind(lib, "cellstate_spm_load", api.load);
    bind(lib, "cellstate_spm_piece_size", api.piece_size);
    bind(lib, "cellstate_spm_special_id", api.special_id);
    bind(lib, "cellstate_spm_encode", api.encode);
    bind(lib, "cellstate_spm_decode", api.decode);
    bind(lib, "cellstate_spm_id_to_piece", api.id_to_piece);
    bind(lib, "cellstate_spm_piece_to_id", api.piece_to_id);
    if (api.abi_version() != 3)
      throw std::runtime_error(path + ": SentencePiece shim of another version (rebuild)");
    return api;
  }
  throw std::runtime_error("cannot load the SentencePiece shim libcellstate_spm.so; tried:" +
                           tried + " (set CELLSTATE_SPM_SHIM to its path)");
}

// The shim is loaded once per process: each dlmopen namespace is a scarce
// resource (glibc allows 16), and it is never unloaded.
const SpmApi& api() {
  static const SpmApi instance = load_api();
  return instance;
}

std::string quote_arg(const std::string& key, const std::string& value) {
  if (value.find_first_of(" \t\n\"") != std::string::npos)
    throw std::invalid_argument("tokenizer option --" + key + " must not contain spaces or quotes");
  return " --" + key + "=" + value;
}

std::string join(const std::vector<std::string>& items, char sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

}  // namespace

struct Tokenizer::Handle {
  void* processor = nullptr;
  std::mutex mutex;  // SentencePieceProcessor is not documented as thread-safe
  ~Handle() {
    if (processor) api().destroy(processor);
  }
};

Tokenizer::Tokenizer(std::shared_ptr<Handle> handle, std::string bytes, int64_t vocab_size)
    : handle_(std::move(handle)), bytes_(std::move(bytes)), vocab_size_(vocab_size) {}

Tokenizer Tokenizer::from_bytes(std::string bytes, const std::string& name) {
  if (bytes.empty()) throw InputError(name, 0, "empty file, expected a SentencePiece model");
  const auto& spm = api();
  auto handle = std::make_shared<Handle>();
  handle->processor = spm.create();
  if (handle->processor == nullptr) throw std::bad_alloc();
  char err[512];
  if (spm.load(handle->processor, bytes.data(), static_cast<long>(bytes.size()), err, sizeof err) < 0)
    throw InputError(name, 0, std::string("not a valid SentencePiece model (") + err + ")");
  const int ids[4] = {spm.special_id(handle->processor, 0), spm.special_id(handle->processor, 1),
                      spm.special_id(handle->processor, 2), spm.special_id(handle->processor, 3)};
  if (ids[0] != kPadId || ids[1] != kUnkId || ids[2] != kBosId || ids[3] != kEosId) {
    std::ostringstream msg;
    msg << "SentencePiece model with pad/unk/bos/eos ids " << ids[0] << "/" << ids[1] << "/"
        << ids[2] << "/" << ids[3] << ", expected 0/1/2/3 (train it with cellstate)";
    throw InputError(name, 0, msg.str());
  }
  const int64_t size = spm.piece_size(handle->processor);
  return Tokenizer(std::move(handle), std::move(bytes), size);
}

Tokenizer Tokenizer::load(const std::string& path) {
  if (!file_exists(path)) throw InputError(path, 0, "missing SentencePiece model file");
  return from_bytes(read_file(path), path);
}

Tokenizer Tokenizer::train(const std::vector<std::string>& files,
                           const TokenizerTrainOptions& options) {
  if (files.empty()) throw std::invalid_argument("tokenizer training needs at least one file");
  TempDir dir("cellstate-spm");
  // One plain file with the non-empty lines of every input: SentencePiece
  // itself reads neither gzip nor names with commas.
  const std::string corpus = dir.file("corpus.txt");
  int64_t lines = 0;
  {
    std::ofstream out(corpus, std::ios::binary);
    std::string line;
    for (const auto& file : files) {
      LineReader reader(file);
      while (reader.next(line)) {
        if (line.find_first_not_of(" \t") == std::string::npos) continue;
        out << line << '\n';
        ++lines;
      }
    }
    if (!out) throw std::runtime_error(corpus + ": cannot write");
  }
  if (lines == 0) throw InputError(files.front(), 0, "no text to train a tokenizer on (empty input)");
  if (options.vocab_size < 5)
    throw std::invalid_argument("tokenizer vocab size must be at least 5, got " +
                                std::to_string(options.vocab_size));
  const std::string& type = options.model_type;
  if (type != "unigram" && type != "bpe" && type != "char" && type != "word")
    throw std::invalid_argument("tokenizer model type must be unigram, bpe, char or word, got '" +
                                type + "'");
  std::string args = "--input=" + corpus + " --model_prefix=" + dir.file("spm");
  args += quote_arg("model_type", type);
  args += quote_arg("vocab_size", std::to_string(options.vocab_size));
  args += " --hard_vocab_limit=false --pad_id=0 --unk_id=1 --bos_id=2 --eos_id=3";
  args += quote_arg("character_coverage", std::to_string(options.character_coverage));
  args += quote_arg("normalization_rule_name", options.normalization);
  args += quote_arg("input_sentence_size", std::to_string(options.max_sentences));
  args += " --shuffle_input_sentence=true --minloglevel=2 --max_sentence_length=65536";
  // One trainer thread: threads cannot be started inside the dlmopen namespace.
  args += " --num_threads=1";
  const auto add_symbols = [&](const std::vector<std::string>& symbols, const char* flag) {
    if (symbols.empty()) return;
    for (const auto& s : symbols)
      if (s.empty() || s.find(',') != std::string::npos)
        throw std::invalid_argument("tokenizer symbol '" + s + "' is empty or contains a comma");
    args += quote_arg(flag, join(symbols, ','));
  };
  add_symbols(options.user_symbols, "user_defined_symbols");
  add_symbols(options.control_symbols, "control_symbols");
  const auto& spm = api();
  char err[1024];
  if (spm.train(args.c_str(), err, sizeof err) < 0)
    throw std::runtime_error(std::string("SentencePiece training failed: ") + err);
  return load(dir.file("spm.model"));
}

Tokenizer Tokenizer::train_on(const std::vector<std::string>& sentences,
                              const TokenizerTrainOptions& options) {
  TempDir dir("cellstate-text");
  const std::string path = dir.file("sentences.txt");
  {
    std::ofstream out(path, std::ios::binary);
    for (const auto& s : sentences) {
      // One sentence per line: line breaks inside a text become spaces.
      std::string line = s;
      for (char& c : line)
        if (c == '\n' || c == '\r') c = ' ';
      out << line << '\n';
    }
  }
  return train({path}, options);
}

void Tokenizer::save(const std::string& path) const { atomic_write(path, bytes_); }

std::vector<int64_t> Tokenizer::encode_impl(std::string_view text, int nbest, double alpha,
                                            uint64_t seed) const {
  // The uniform draw for the n-best sample, from the seed alone.
  const double u = DataRng(seed).uniform();
  const auto& spm = api();
  std::lock_guard<std::mutex> lock(handle_->mutex);
  std::vector<int> ids(text.size() + 16);
  char err[512];
  for (;;) {
    const int n = spm.encode(handle_->processor, text.data(), static_cast<long>(text.size()), nbest,
                             static_cast<float>(alpha), u, ids.data(), static_cast<int>(ids.size()),
                             err, sizeof err);
    if (n < 0) throw std::runtime_error(std::string("SentencePiece encode failed: ") + err);
    if (static_cast<size_t>(n) <= ids.size()) {
      return std::vector<int64_t>(ids.begin(), ids.begin() + n);
    }
    ids.resize(static_cast<size_t>(n));
  }
}

std::vector<int64_t> Tokenizer::encode(std::string_view text) const {
  return encode_impl(text, 0, 0.0, 0);
}

std::vector<int64_t> Tokenizer::sample_encode(std::string_view text, double alpha, uint64_t seed,
                                              int nbest) const {
  TORCH_CHECK(nbest >= 2, "sample_encode: nbest must be at least 2, got ", nbest);
  return encode_impl(text, nbest, alpha, seed);
}

std::vector<std::string> Tokenizer::encode_pieces(std::string_view text) const {
  std::vector<std::string> out;
  for (const int64_t id : encode(text)) out.push_back(id_to_piece(id));
  return out;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> in;
  in.reserve(ids.size());
  for (const int64_t id : ids) {
    TORCH_CHECK(id >= 0 && id < vocab_size_, "decode: id ", id, " outside the vocabulary [0, ",
                vocab_size_, ")");
    if (id == kPadId || id == kBosId || id == kEosId) continue;
    in.push_back(static_cast<int>(id));
  }
  const auto& spm = api();
  std::lock_guard<std::mutex> lock(handle_->mutex);
  std::string out(in.size() * 8 + 16, '\0');
  char err[512];
  for (;;) {
    const int n = spm.decode(handle_->processor, in.data(), static_cast<int>(in.size()), out.data(),
                             static_cast<int>(out.size()), err, sizeof err);
    if (n < 0) throw std::runtime_error(std::string("SentencePiece decode failed: ") + err);
    if (static_cast<size_t>(n) <= out.size()) {
      out.resize(static_cast<size_t>(n));
      return out;
    }
    out.resize(static_cast<size_t>(n));
  }
}

std::string Tokenizer::id_to_piece(int64_t id) const {
  TORCH_CHECK(id >= 0 && id < vocab_size_, "id_to_piece: id ", id, " outside the vocabulary [0, ",
              vocab_size_, ")");
  const auto& spm = api();
  std::lock_guard<std::mutex> lock(handle_->mutex);
  std::string out(64, '\0');
  for (;;) {
    const int n = spm.id_to_piece(handle_->processor, static_cast<int>(id), out.data(),
                                  static_cast<int>(out.size()));
    if (static_cast<size_t>(n) <= out.size()) {
      out.resize(static_cast<size_t>(n));
      return out;
    }
    out.resize(static_cast<size_t>(n));
  }
}

int64_t Tokenizer::piece_to_id(std::string_view piece) const {
  const auto& spm = api();
  std::lock_guard<std::mutex> lock(handle_->mutex);
  return spm.piece_to_id(handle_->processor, piece.data(), static_cast<long>(piece.size()));
}

}  // namespace cellstate
