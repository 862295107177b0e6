#include "cellstate/tasks/model_dir.h"

#include "cellstate/nn/quantize.h"

#include "cellstate/util/io.h"
#include "cellstate/util/runtime.h"
#include "cellstate/util/sha256.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string_view>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace cellstate {

namespace {

std::string shape_string(const at::IntArrayRef& sizes) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < sizes.size(); ++i) s << (i ? ", " : "") << sizes[i];
  s << "]";
  return s.str();
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/// The bytes LibTorch writes for `archive` (serialised in memory, so that a
/// failed write is ours to report).
std::string archive_bytes(torch::serialize::OutputArchive& archive) {
  std::string bytes;
  archive.save_to([&bytes](const void* data, size_t n) {
    bytes.append(static_cast<const char*>(data), n);
    return n;
  });
  return bytes;
}

/// Checks the zip directory of a weights archive before LibTorch reads it:
/// every entry's declared size must be possible -- a stored entry no larger
/// than the file and equal to its stored size, a deflated one at most 1032
/// times its compressed size (deflate's limit) -- since LibTorch's reader
/// allocates whatever size an entry declares (a damaged one said 2.4 GB).
void check_archive_directory(const std::string& bytes, const std::string& path) {
  auto bad = [&](const std::string& why) { return InputError(path, 0, "not a readable weights file (" + why + ")"); };
  const size_t n = bytes.size();
  auto u16 = [&](size_t at) -> uint64_t {
    if (at + 2 > n) throw bad("truncated zip directory");
    return static_cast<uint64_t>(static_cast<uint8_t>(bytes[at])) |
           static_cast<uint64_t>(static_cast<uint8_t>(bytes[at + 1])) << 8;
  };
  auto u32 = [&](size_t at) -> uint64_t { return u16(at) | u16(at + 2) << 16; };
  auto u64 = [&](size_t at) -> uint64_t { return u32(at) | u32(at + 4) << 32; };
  // The end-of-central-directory record: within the last 22 + 65535 bytes.
  if (n < 22) throw bad("too short for a zip archive");
  size_t eocd = std::string::npos;
  for (size_t i = n - 22;; --i) {
    if (u32(i) == 0x06054b50) {
      eocd = i;
      break;
    }
    if (i == 0 || n - i >= 22 + 65535) break;
  }
  if (eocd == std::string::npos) throw bad("no zip directory");
  uint64_t entries = u16(eocd + 10), offset = u32(eocd + 16);
  if ((entries == 0xFFFF || offset == 0xFFFFFFFF) && eocd >= 20 && u32(eocd - 20) == 0x07064b50) {
    const uint64_t zip64 = u64(eocd - 20 + 8);  // the zip64 end record
    if (zip64 > n || u32(static_cast<size_t>(zip64)) != 0x06064b50) throw bad("a damaged zip64 directory");
    entries = u64(static_cast<size_t>(zip64) + 32);
    offset = u64(static_cast<size_t>(zip64) + 48);
  }
  if (offset > n || entries > n / 46) throw bad("a damaged zip directory");
  size_t at = static_cast<size_t>(offset);
  for (uint64_t e = 0; e < entries; ++e) {
    if (u32(at) != 0x02014b50) throw bad("a damaged zip directory entry");
    const uint64_t method = u16(at + 10), name_len = u16(at + 28), extra_len = u16(at + 30),
                   comment_len = u16(at + 32);
    uint64_t packed = u32(at + 20), size = u32(at + 24);
    // Sizes of 0xFFFFFFFF are in the zip64 extra field: size, then packed.
    for (size_t x = at + 46 + name_len, end = x + extra_len; x + 4 <= end;) {
      const uint64_t id = u16(x), len = u16(x + 2);
      if (id == 0x0001) {
        size_t v = x + 4;
        if (size == 0xFFFFFFFF && v + 8 <= x + 4 + len) size = u64(v), v += 8;
        if (packed == 0xFFFFFFFF && v + 8 <= x + 4 + len) packed = u64(v);
      }
      x += 4 + len;
    }
    const std::string name = bytes.substr(std::min(n, at + 46), std::min<uint64_t>(name_len, 80));
    if (packed > n) throw bad("zip entry '" + name + "' is larger than the file");
    if (method == 0 ? size != packed : method != 8 || size > packed * 1032 + 1024)
      throw bad("zip entry '" + name + "' declares " + std::to_string(size) + " bytes from " + std::to_string(packed));
    at += 46 + name_len + extra_len + comment_len;
  }
}

/// The records of a weights archive (LibTorch's zip format), name -> bytes.
std::map<std::string, std::string> archive_records(const std::string& bytes) {
  std::istringstream in(bytes);
  caffe2::serialize::PyTorchStreamReader reader(&in);
  std::map<std::string, std::string> records;
  for (const auto& name : reader.getAllRecords()) {
    auto [data, size] = reader.getRecord(name);
    records[name] = std::string(static_cast<const char*>(data.get()), size);
  }
  return records;
}

/// The tensor names listed in the class definition LibTorch writes into a
/// weights archive ('__parameters__ = ["a", "b", ]' and '__buffers__ = [...]'),
/// read as plain text; empty when the text does not have that form.
std::set<std::string> listed_tensor_names(const std::string& code) {
  std::set<std::string> names;
  for (const std::string key : {"__parameters__ = [", "__buffers__ = ["}) {
    const size_t start = code.find(key);
    if (start == std::string::npos) return {};
    const size_t end = code.find(']', start);
    if (end == std::string::npos) return {};
    for (size_t at = start + key.size(); at < end;) {
      const size_t open = code.find('"', at);
      if (open == std::string::npos || open > end) break;
      const size_t close = code.find('"', open + 1);
      if (close == std::string::npos || close > end) return {};
      names.insert(code.substr(open + 1, close - open - 1));
      at = close + 1;
    }
  }
  return names;
}

/// Whether save_weights stores this tensor as int8 under WeightStorage::kInt8:
/// the 2-D floating parameters (weight matrices and embedding tables) of at
/// least kMinInt8Values values.
constexpr int64_t kMinInt8Values = 1024;
bool stored_as_int8(const torch::Tensor& t, bool is_buffer) {
  return !is_buffer && t.is_floating_point() && t.dim() == 2 && t.numel() >= kMinInt8Values;
}

/// The name of the per-row scales of an int8 tensor NAME in a weights archive.
constexpr std::string_view kInt8ScaleSuffix = ".int8_scale";
std::string int8_scale_name(const std::string& name) { return name + std::string(kInt8ScaleSuffix); }

/// Whether `name` is the scales' name of a tensor among `names`.
bool is_int8_scale_name(const std::string& name, const std::set<std::string>& names) {
  const auto n = kInt8ScaleSuffix.size();
  return name.size() > n && name.compare(name.size() - n, n, kInt8ScaleSuffix) == 0 &&
         names.count(name.substr(0, name.size() - n));
}

/// Writes the tensors of `module` into `archive` as save_weights stores them
/// under `storage`; with `placeholders`, uninitialised tensors of the same
/// shapes and types instead of the values (the layout check_archive_layout
/// compares a file with).
void write_weights(torch::serialize::OutputArchive& archive, const torch::nn::Module& module, WeightStorage storage,
                   bool placeholders) {
  torch::NoGradGuard no_grad;
  auto store = [&](const std::string& name, const torch::Tensor& t, bool is_buffer) {
    auto value = t.detach();
    if (storage == WeightStorage::kInt8 && stored_as_int8(value, is_buffer)) {
      // Per row (output channel, or token of an embedding table): the
      // rounding the int8 products use (nn/quantize.h), so a loaded weight
      // rounds to the integers stored here.
      const auto [q, scale] = quantize_symmetric_int8(value, /*dim=*/1);  // one scale per row
      archive.write(name, placeholders ? torch::empty(q.sizes(), q.options()) : q.contiguous(), is_buffer);
      archive.write(int8_scale_name(name), placeholders ? torch::empty(scale.sizes(), scale.options()) : scale,
                    /*is_buffer=*/true);
      return;
    }
    if (storage == WeightStorage::kFloat16 && value.is_floating_point()) value = value.to(torch::kHalf);
    archive.write(name, placeholders ? torch::empty(value.sizes(), value.options()) : value.contiguous(), is_buffer);
  };
  for (const auto& p : module.named_parameters(true)) store(p.key(), p.value(), false);
  for (const auto& b : module.named_buffers(true)) store(b.key(), b.value(), true);
}

/// How the archive `records` stores its tensors: float16 and int8 tensors
/// show in its pickle by their storage types.
WeightStorage archive_storage(const std::map<std::string, std::string>& records) {
  const auto pickle = records.find("data.pkl");
  if (pickle == records.end()) return WeightStorage::kFloat32;
  if (pickle->second.find("CharStorage") != std::string::npos) return WeightStorage::kInt8;
  if (pickle->second.find("HalfStorage") != std::string::npos) return WeightStorage::kFloat16;
  return WeightStorage::kFloat32;
}

/// Checks that the archive `bytes` holds nothing but what save_weights writes
/// for the tensors of `module`: the same records; the same TorchScript class
/// definition, constants, version and pickle (names, shapes, types),
/// byte for byte; tensor records of the right sizes. LibTorch's reader
/// compiles the class definition it finds in an archive, and its compiler can
/// crash on a damaged one; its unpickler allocates whatever length a damaged
/// pickle says (gigabytes). So the records are compared with the ones
/// LibTorch writes for the expected tensors before anything reads them.
void check_archive_layout(const torch::nn::Module& module, const std::string& bytes, const std::string& path) {
  check_archive_directory(bytes, path);
  const auto found = archive_records(bytes);
  // save_weights stores a whole archive one way (float32, float16, or int8
  // matrices with float32 scales).
  torch::serialize::OutputArchive expected_archive;
  write_weights(expected_archive, module, archive_storage(found), /*placeholders=*/true);
  std::set<std::string> names;
  for (const auto& p : module.named_parameters(true)) names.insert(p.key());
  for (const auto& b : module.named_buffers(true)) names.insert(b.key());
  const auto expected = archive_records(archive_bytes(expected_archive));
  auto not_ours = [&](const std::string& why) {
    return InputError(path, 0, "not a cellstate weights file (" + why + ")");
  };
  // The class definition first: when it lists other tensors, say which.
  const std::string code = "code/__torch__.py";
  if (expected.count(code) && found.count(code) && found.at(code) != expected.at(code)) {
    const auto listed = listed_tensor_names(found.at(code));
    for (const auto& name : names)
      if (!listed.empty() && !listed.count(name))
        throw InputError(path, 0, "no tensor '" + name + "' (the weights do not fit the config)");
    for (const auto& name : listed)
      if (!names.count(name) && !is_int8_scale_name(name, names))
        throw InputError(path, 0, "unexpected tensor '" + name.substr(0, 80) + "' (the weights do not fit the config)");
  }
  for (const auto& [name, _] : found)
    if (!expected.count(name)) throw not_ours("unexpected record '" + name.substr(0, 80) + "'");
  for (const auto& [name, content] : expected) {
    const auto it = found.find(name);
    if (it == found.end()) throw not_ours("no record '" + name + "'");
    if (name.rfind("data/", 0) == 0) {
      if (it->second.size() != content.size())
        throw not_ours("record '" + name + "' has " + std::to_string(it->second.size()) + " bytes, expected " +
                       std::to_string(content.size()));
    } else if (name == "data.pkl") {
      if (it->second != content)
        throw InputError(path, 0, "the tensors' shapes or types are not the ones config.json describes (damaged "
                                  "weights, or the weights of another model)");
    } else if (it->second != content) {
      throw not_ours("record '" + name + "' is not the one written for this model's tensors; damaged, or from "
                     "another model");
    }
  }
}

}  // namespace


nlohmann::json new_model_config(const std::string& task) {
  return {{"task", task},
          {"format_version", kModelFormatVersion},
          {"created", utc_now()},
          {"cellstate_version", version()}};
}

void write_model_config(const std::string& dir, const nlohmann::json& config) {
  std::filesystem::create_directories(dir);
  atomic_write(dir + "/config.json", config.dump(2) + "\n");
}


void save_weights(const torch::nn::Module& module, const std::string& path, WeightStorage storage) {
  torch::serialize::OutputArchive archive;
  write_weights(archive, module, storage, /*placeholders=*/false);
  atomic_write(path, archive_bytes(archive));
}

void save_weights(const torch::nn::Module& module, const std::string& path, bool half) {
  save_weights(module, path, half ? WeightStorage::kFloat16 : WeightStorage::kFloat32);
}

void load_weights(torch::nn::Module& module, const std::string& path, bool verified) {
  if (!file_exists(path)) throw InputError(path, 0, "missing weights file");
  torch::serialize::InputArchive archive;
  // A damaged archive can make LibTorch's reader throw c10::Error or plain
  // std:: exceptions (a missing record, a bad pickle): all of them mean the
  // same to the user.
  auto unreadable = [&](const std::string& why) {
    return InputError(path, 0, "not a readable weights file (" + why.substr(0, 200) + ")");
  };
  try {
    const std::string bytes = read_file(path);
    if (!verified) check_archive_layout(module, bytes, path);
    archive.load_from(bytes.data(), bytes.size());
  } catch (const InputError&) {
    throw;
  } catch (const c10::Error& e) {
    throw unreadable(e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw unreadable(e.what());
  }
  std::set<std::string> expected;
  torch::NoGradGuard no_grad;
  auto read = [&](const std::string& name, bool is_buffer) {
    expected.insert(name);
    torch::Tensor value;
    bool found = false;
    try {
      found = archive.try_read(name, value, is_buffer);
    } catch (const c10::Error& e) {
      throw unreadable(e.what_without_backtrace());
    } catch (const std::exception& e) {
      throw unreadable(e.what());
    }
    if (!found) throw InputError(path, 0, "no tensor '" + name + "' (the weights do not fit the config)");
    return value;
  };
  auto fill = [&](const std::string& name, torch::Tensor& target, bool is_buffer) {
    torch::Tensor value = read(name, is_buffer);
    if (value.scalar_type() == torch::kChar && stored_as_int8(target, is_buffer) && value.dim() == 2 &&
        value.sizes() == target.sizes()) {
      // int8 rows and their scales (WeightStorage::kInt8): widened here.
      const auto scale = read(int8_scale_name(name), /*is_buffer=*/true);
      if (scale.scalar_type() != torch::kFloat || scale.dim() != 1 || scale.size(0) != value.size(0))
        throw InputError(path, 0, "tensor '" + int8_scale_name(name) + "' has shape " +
                                      shape_string(scale.sizes()) + ", expected [" +
                                      std::to_string(value.size(0)) + "] float32 scales");
      if (!torch::isfinite(scale).all().item<bool>() || !(scale > 0).all().item<bool>())
        throw InputError(path, 0, "tensor '" + int8_scale_name(name) +
                                      "' holds scales that are not positive and finite (damaged weights)");
      target.copy_(value.to(torch::kFloat).mul_(scale.unsqueeze(1)).to(target.dtype()));
      return;
    }
    if (value.sizes() != target.sizes())
      throw InputError(path, 0, "tensor '" + name + "' has shape " + shape_string(value.sizes()) +
                                    ", the config expects " + shape_string(target.sizes()));
    if (!value.is_floating_point() && target.is_floating_point())
      throw InputError(path, 0, "tensor '" + name + "' holds " + std::string(c10::toString(value.scalar_type())) +
                                    ", expected floating-point values");
    if (value.is_floating_point() && !torch::isfinite(value).all().item<bool>())
      throw InputError(path, 0, "tensor '" + name + "' holds NaN or infinite values (damaged weights)");
    target.copy_(value.to(target.dtype()));
  };
  for (auto& p : module.named_parameters(true)) fill(p.key(), p.value(), false);
  for (auto& b : module.named_buffers(true)) fill(b.key(), b.value(), true);
  for (const auto& key : archive.keys())
    if (!expected.count(key))
      throw InputError(path, 0, "unexpected tensor '" + key + "' (the weights do not fit the config)");
}

std::string model_file(const std::string& dir, const std::string& name) {
  const std::string path = dir + "/" + name;
  if (!file_exists(path)) throw InputError(path, 0, "missing file (the model directory is incomplete)");
  return path;
}

Tokenizer load_model_tokenizer(const std::string& dir, const nlohmann::json& config) {
  auto tokenizer = Tokenizer::load(model_file(dir, "tokenizer.model"));
  const auto vocab = config_get<int64_t>(config, "vocab_size", dir + "/config.json");
  if (vocab != tokenizer.vocab_size())
    throw InputError(dir + "/tokenizer.model", 0,
                     "has " + std::to_string(tokenizer.vocab_size()) + " pieces, config.json says " +
                         std::to_string(vocab) + " (mismatched model files)");
  return tokenizer;
}

Tokenizer train_model_tokenizer(const std::string& dir, bool resume, const std::vector<std::string>& texts,
                                const TokenizerTrainOptions& options, const std::string& name,
                                const ProcessGroup& group) {
  const std::string path = dir + "/" + name;
  if (!group.distributed()) {
    if (resume && file_exists(path)) return Tokenizer::load(path);
    auto tokenizer = Tokenizer::train_on(texts, options);
    tokenizer.save(path);
    return tokenizer;
  }
  if (group.main() && !(resume && file_exists(path))) Tokenizer::train_on(texts, options).save(path);
  share_file(group, path);
  return Tokenizer::load(path);
}

Implementation model_implementation(const nlohmann::json& config, const std::string& file,
                                    std::optional<Implementation> chosen) {
  if (chosen) return *chosen;
  const auto model = config_get<nlohmann::json>(config, "model", file);
  try {
    return parse_implementation(config_optional(model, "trained_impl", file, std::string("custom")));
  } catch (const std::invalid_argument& e) {
    throw_config_error(file, e.what());
  }
}

std::string shipped_models_root() {
  auto is_dir = [](const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  };
  if (const char* env = std::getenv("CELLSTATE_MODELS")) return env;
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    std::string exe(buf, static_cast<size_t>(n));
    const std::string dir = exe.substr(0, exe.rfind('/'));
    for (const std::string& candidate : {dir + "/../../models", dir + "/../share/cellstate/models"})
      if (is_dir(candidate)) {
        char resolved[PATH_MAX];
        return ::realpath(candidate.c_str(), resolved) ? std::string(resolved) : candidate;
      }
  }
#ifdef CELLSTATE_SOURCE_DIR
  return std::string(CELLSTATE_SOURCE_DIR) + "/models";
#else
  return "models";
#endif
}

std::string shipped_model_dir(const std::string& name) { return shipped_models_root() + "/" + name; }

std::vector<ShippedModel> shipped_models(const std::string& task) {
  std::vector<ShippedModel> found;
  std::error_code ec;
  const std::string prefix = task + "-";
  for (const auto& entry : std::filesystem::directory_iterator(shipped_models_root(), ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || !entry.is_directory(ec) || !file_exists(entry.path().string() + "/config.json"))
      continue;
    const std::string rest = name.substr(prefix.size());  // DATASET[-VARIANT]
    const auto dash = rest.find('-');
    found.push_back({name, dash == std::string::npos ? rest : rest.substr(dash + 1), entry.path().string()});
  }
  std::sort(found.begin(), found.end(), [](const ShippedModel& a, const ShippedModel& b) { return a.name < b.name; });
  return found;
}

std::string resolve_model_dir(const std::string& task, const std::string& value, const std::string& option) {
  struct stat st {};
  if (value.empty() || value.find('/') != std::string::npos || ::stat(value.c_str(), &st) == 0) return value;
  const auto models = shipped_models(task);
  std::string names;
  for (const auto& m : models) {
    const std::string rest = m.name.substr(task.size() + 1);
    if (value == m.name || value == m.short_name || value == rest) return m.dir;
    names += (names.empty() ? "" : ", ") + m.short_name;
  }
  throw std::invalid_argument(option + " " + value + ": no such directory, and no shipped " + task + " model is named so" +
                              (names.empty() ? std::string(" (none is installed)") : " (shipped: " + names + ")"));
}

// ---------------------------------------------------------------- manifest

namespace {

constexpr const char* kStagingSuffix = ".partial";
constexpr const char* kReplacedInfix = ".replaced.";

}  // namespace


void write_manifest(const std::string& dir, const std::string& task) {
  nlohmann::json files = nlohmann::json::array(), tokenizers = nlohmann::json::array();
  for (const auto& name : manifest_files(dir)) {
    const std::string path = dir + "/" + name;
    files.push_back({{"name", name},
                     {"bytes", static_cast<int64_t>(std::filesystem::file_size(path))},
                     {"sha256", sha256_file(path)}});
    if (name.size() > 6 && name.compare(name.size() - 6, 6, ".model") == 0)
      tokenizers.push_back({{"file", name}, {"pieces", Tokenizer::load(path).vocab_size()},
                            {"sha256", files.back()["sha256"]}});
  }
  const nlohmann::json manifest = {{"format_version", kModelFormatVersion},
                                   {"task", task},
                                   {"cellstate_version", version()},
                                   {"created", utc_now()},
                                   {"files", files},
                                   {"tokenizers", tokenizers}};
  atomic_write(dir + "/" + kManifestName, manifest.dump(2) + "\n");
}



// ---------------------------------------------------------------- transactions

namespace {

bool is_empty_directory(const std::string& dir) {
  std::error_code ec;
  return std::filesystem::is_empty(dir, ec) && !ec;
}

std::string read_owner(const std::string& staging) {
  std::ifstream in(staging + "/" + kOwnerFileName);
  std::string pid;
  std::getline(in, pid);
  return pid.empty() ? std::string("unknown") : pid;
}

}  // namespace

ModelTransaction::ModelTransaction(const std::string& dir, const std::string& task, ModelWriteOptions options,
                                   const ProcessGroup& group)
    : target_(dir), task_(task) {
  while (target_.size() > 1 && target_.back() == '/') target_.pop_back();
  if (!group.main()) {
    std::string pattern = (std::filesystem::temp_directory_path() / ("cellstate-rank" + std::to_string(group.rank()) +
                                                                       "-XXXXXX")).string();
    if (!::mkdtemp(pattern.data())) throw WriteError(pattern, std::string("cannot create a scratch directory: ") +
                                                                  std::strerror(errno));
    staging_ = pattern;
    scratch_ = true;
    return;
  }
  staging_ = target_ + kStagingSuffix;
  const auto parent = std::filesystem::path(target_).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) throw WriteError(target_, "cannot create " + parent.string() + ": " + ec.message());
  }
  lock();
  try {
    recover_swap();
    prepare(options);
    atomic_write(staging_ + "/" + kOwnerFileName, std::to_string(::getpid()) + "\n");
  } catch (...) {
    release();
    throw;
  }
}

void ModelTransaction::lock() {
  for (int attempt = 0; attempt < 10; ++attempt) {
    if (::mkdir(staging_.c_str(), 0755) != 0 && errno != EEXIST) throw WriteError(staging_, std::strerror(errno));
    const int fd = ::open(staging_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) continue;  // renamed away between mkdir and open
      throw WriteError(staging_, std::strerror(errno));
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK)
        throw std::runtime_error(target_ + ": another process (PID " + read_owner(staging_) +
                                 ") is training this model now; wait for it or choose another --model");
      throw WriteError(staging_, std::strerror(err));
    }
    // The directory locked must still be the one at the staging path (a
    // trainer finishing may have renamed it to DIR in between).
    struct stat held {}, now {};
    if (::fstat(fd, &held) == 0 && ::stat(staging_.c_str(), &now) == 0 && held.st_ino == now.st_ino &&
        held.st_dev == now.st_dev) {
      lock_fd_ = fd;
      return;
    }
    ::close(fd);
  }
  throw WriteError(staging_, "cannot lock it (it keeps being replaced)");
}

void ModelTransaction::recover_swap() {
  // A swap done as two renames (where the file system cannot exchange) that
  // was killed between them left the old model as DIR.replaced.PID.
  const auto parent = std::filesystem::path(target_).parent_path();
  const std::string base = std::filesystem::path(target_).filename().string() + kReplacedInfix;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(parent.empty() ? "." : parent, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.compare(0, base.size(), base) != 0) continue;
    const std::string pid = name.substr(base.size());
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos || process_alive(std::stoll(pid)))
      continue;
    if (!file_exists(target_)) {
      if (std::rename(entry.path().c_str(), target_.c_str()) != 0) throw WriteError(target_, std::strerror(errno));
    } else {
      std::error_code rm;
      std::filesystem::remove_all(entry.path(), rm);
    }
  }
}

void ModelTransaction::clear_staging() {
  for (const auto& entry : std::filesystem::directory_iterator(staging_)) std::filesystem::remove_all(entry.path());
}

void ModelTransaction::prepare(const ModelWriteOptions& options) {
  remove_stale_temporaries(staging_);
  const bool target_exists = file_exists(target_);
  if (target_exists && !is_directory(target_)) throw InputError(target_, 0, "exists and is not a directory");
  const bool target_is_model = target_exists && file_exists(target_ + "/config.json");
  const bool target_empty = target_exists && is_empty_directory(target_);
  if (target_exists && !target_is_model && !target_empty)
    throw InputError(target_, 0,
                     "holds files but no cellstate model (no config.json); choose another --model directory");
  const bool interrupted = has_checkpoint(staging_);
  if (options.resume) {
    if (interrupted) {
      resuming_ = true;
      return;
    }
    if (target_is_model && has_checkpoint(target_)) {
      // A finished run trained further: its directory copied (the copy is
      // what changes; DIR stays as it is until commit).
      clear_staging();
      for (const auto& entry : std::filesystem::directory_iterator(target_)) {
        const std::string name = entry.path().filename().string();
        if (!entry.is_regular_file() || is_temporary_name(name) || name == kManifestName) continue;
        std::error_code ec;
        std::filesystem::copy_file(entry.path(), staging_ + "/" + name,
                                   std::filesystem::copy_options::overwrite_existing, ec);
        if (ec) throw WriteError(staging_ + "/" + name, ec.message());
      }
      resuming_ = resuming_finished_ = true;
      return;
    }
    throw InputError(target_, 0,
                     std::string("nothing to resume: no checkpoint in ") + staging_ +
                         (target_is_model ? " nor in the model (it was trained without keeping one)" : "") +
                         "; train without --resume to start afresh");
  }
  if (interrupted && !options.overwrite)
    throw InputError(staging_, 0,
                     "holds an interrupted training run; continue it with --resume, or discard it with --overwrite");
  if (target_is_model && !options.overwrite) {
    std::string what = "a trained model";
    try {
      const auto config = nlohmann::json::parse(read_file(target_ + "/config.json"));
      if (config.is_object() && config.contains("task") && config["task"].is_string())
        what = "a trained " + config["task"].get<std::string>() + " model";
    } catch (const std::exception&) {
    }
    throw InputError(target_, 0,
                     "already holds " + what +
                         "; replace it with --overwrite (it stays until the new one is complete), or continue its "
                         "training with --resume");
  }
  clear_staging();
}

void ModelTransaction::commit() {
  if (committed_) return;
  if (scratch_) {
    committed_ = true;
    return;
  }
  std::remove((staging_ + "/" + kOwnerFileName).c_str());
  remove_stale_temporaries(staging_);
  write_manifest(staging_, task_);
  for (const auto& entry : std::filesystem::directory_iterator(staging_))
    if (entry.is_regular_file()) sync_path(entry.path().string());
  sync_path(staging_);
  const auto parent_path = std::filesystem::path(target_).parent_path();
  const std::string parent = parent_path.empty() ? std::string(".") : parent_path.string();
  if (!file_exists(target_)) {
    if (std::rename(staging_.c_str(), target_.c_str()) != 0) throw WriteError(target_, std::strerror(errno));
  } else if (::renameat2(AT_FDCWD, staging_.c_str(), AT_FDCWD, target_.c_str(), RENAME_EXCHANGE) == 0) {
    std::error_code ec;
    std::filesystem::remove_all(staging_, ec);  // the old model, now at the staging path
  } else if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
    // No exchange on this file system: two renames, the old model kept
    // aside until the new one is in place (recover_swap() finishes the job
    // if a kill comes between them).
    const std::string aside = target_ + kReplacedInfix + std::to_string(::getpid());
    if (std::rename(target_.c_str(), aside.c_str()) != 0) throw WriteError(target_, std::strerror(errno));
    if (std::rename(staging_.c_str(), target_.c_str()) != 0) {
      const int err = errno;
      std::rename(aside.c_str(), target_.c_str());
      throw WriteError(target_, std::strerror(err));
    }
    std::error_code ec;
    std::filesystem::remove_all(aside, ec);
  } else {
    throw WriteError(target_, std::strerror(errno));
  }
  sync_path(parent);
  committed_ = true;
}

ModelTransaction::~ModelTransaction() { release(); }

void ModelTransaction::release() noexcept {
  if (scratch_) {
    std::error_code ec;
    std::filesystem::remove_all(staging_, ec);
    return;
  }
  if (lock_fd_ < 0) return;
  if (!committed_) {
    try {
      std::error_code ec;
      if (has_checkpoint(staging_)) {  // an interrupted run, kept for --resume
        std::filesystem::remove(staging_ + "/" + kOwnerFileName, ec);
        remove_stale_temporaries(staging_);
      } else {
        std::filesystem::remove_all(staging_, ec);
      }
    } catch (...) {
      // Left for the next run to clean up: never an exception from here.
    }
  }
  ::close(lock_fd_);
  lock_fd_ = -1;
}

}  // namespace cellstate

namespace cellstate {

QuantizeResult quantize_model_dir(const std::string& from, const std::string& to, const std::string& task,
                                  const std::vector<std::pair<std::string, const torch::nn::Module*>>& weights,
                                  bool overwrite) {
  namespace fs = std::filesystem;
  std::error_code same_error;
  if (fs::exists(to) && fs::equivalent(from, to, same_error))
    throw std::invalid_argument("--output must be another directory than --model (" + to + ")");
  auto config = read_model_config(from, task, /*verify=*/false);  // the caller loaded and verified it
  ModelTransaction transaction(to, task, ModelWriteOptions{false, overwrite});
  QuantizeResult result;
  std::set<std::string> weight_files;
  for (const auto& [file, module] : weights) {
    const std::string source = from + "/" + file;
    result.bytes_before += static_cast<int64_t>(fs::file_size(source));
    save_weights(*module, transaction.path() + "/" + file, WeightStorage::kInt8);
    result.bytes_after += static_cast<int64_t>(fs::file_size(transaction.path() + "/" + file));
    weight_files.insert(file);
  }
  for (const auto& file : manifest_files(from)) {
    if (weight_files.count(file) || file == "config.json") continue;
    atomic_write(transaction.path() + "/" + file, read_file(from + "/" + file));
  }
  auto entry = config.contains("weights") && config["weights"].is_object() ? config["weights"]
                                                                          : nlohmann::json{{"file", "weights.pt"}};
  entry["dtype"] = "int8";
  entry["quantization"] = "2-D parameters of >= 1024 values as int8 rows with a float32 scale each, symmetric "
                          "(scale = max |row| / 127); the rest float32";
  entry["quantized_from"] = {{"model", fs::absolute(from).lexically_normal().string()},
                             {"created", config.value("created", std::string())},
                             {"bytes", result.bytes_before}};
  config["weights"] = entry;
  write_model_config(transaction.path(), config);
  transaction.commit();
  return result;
}

}  // namespace cellstate
