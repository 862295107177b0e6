#include "cellstate/tasks/model_dir.h"

#include "cellstate/util/io.h"
#include "cellstate/util/runtime.h"

#include <torch/serialize.h>
#include <torch/torch.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <climits>
#include <cstdlib>
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

}  // namespace

void throw_config_error(const std::string& file, const std::string& message) {
  throw InputError(file, 0, "config: " + message);
}

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

nlohmann::json read_model_config(const std::string& dir, const std::string& task) {
  if (!is_directory(dir)) throw InputError(dir, 0, "no such model directory");
  const std::string path = dir + "/config.json";
  if (!file_exists(path))
    throw InputError(path, 0, "missing file (expected a cellstate model directory)");
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::parse_error& e) {
    throw InputError(path, 0, std::string("not valid JSON (") + e.what() + ")");
  }
  if (!config.is_object()) throw InputError(path, 0, "expected a JSON object");
  const int version = config_get<int>(config, "format_version", path);
  if (version != kModelFormatVersion)
    throw InputError(path, 0, "model format version " + std::to_string(version) +
                                  ", this cellstate reads version " +
                                  std::to_string(kModelFormatVersion));
  const auto got = config_get<std::string>(config, "task", path);
  if (got != task)
    throw InputError(path, 0, "a '" + got + "' model, expected a '" + task + "' model");
  return config;
}

void save_weights(const torch::nn::Module& module, const std::string& path, bool half) {
  torch::serialize::OutputArchive archive;
  torch::NoGradGuard no_grad;
  auto store = [&](const std::string& name, const torch::Tensor& t, bool is_buffer) {
    auto value = t.detach();
    if (half && value.is_floating_point()) value = value.to(torch::kHalf);
    archive.write(name, value.contiguous(), is_buffer);
  };
  for (const auto& p : module.named_parameters(true)) store(p.key(), p.value(), false);
  for (const auto& b : module.named_buffers(true)) store(b.key(), b.value(), true);
  atomic_write_with(path, [&](const std::string& tmp) { archive.save_to(tmp); });
}

void load_weights(torch::nn::Module& module, const std::string& path) {
  if (!file_exists(path)) throw InputError(path, 0, "missing weights file");
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    throw InputError(path, 0, "not a readable weights file (" +
                                  std::string(e.what_without_backtrace()).substr(0, 200) + ")");
  }
  std::set<std::string> expected;
  torch::NoGradGuard no_grad;
  auto fill = [&](const std::string& name, torch::Tensor& target, bool is_buffer) {
    expected.insert(name);
    torch::Tensor value;
    if (!archive.try_read(name, value, is_buffer))
      throw InputError(path, 0, "no tensor '" + name + "' (the weights do not fit the config)");
    if (value.sizes() != target.sizes())
      throw InputError(path, 0, "tensor '" + name + "' has shape " + shape_string(value.sizes()) +
                                    ", the config expects " + shape_string(target.sizes()));
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
                                const TokenizerTrainOptions& options, const std::string& name) {
  const std::string path = dir + "/" + name;
  if (resume && file_exists(path)) return Tokenizer::load(path);
  auto tokenizer = Tokenizer::train_on(texts, options);
  tokenizer.save(path);
  return tokenizer;
}

Implementation model_implementation(const nlohmann::json& config, const std::string& file,
                                    std::optional<Implementation> chosen) {
  if (chosen) return *chosen;
  const auto model = config_get<nlohmann::json>(config, "model", file);
  try {
    return parse_implementation(model.value("trained_impl", std::string("custom")));
  } catch (const std::invalid_argument& e) {
    throw_config_error(file, e.what());
  }
}

std::string shipped_model_dir(const std::string& name) {
  auto is_dir = [](const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  };
  if (const char* env = std::getenv("CELLSTATE_MODELS")) return std::string(env) + "/" + name;
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    std::string exe(buf, static_cast<size_t>(n));
    const std::string dir = exe.substr(0, exe.rfind('/'));
    for (const std::string& candidate : {dir + "/../../models/" + name, dir + "/../share/cellstate/models/" + name})
      if (is_dir(candidate)) {
        char resolved[PATH_MAX];
        return ::realpath(candidate.c_str(), resolved) ? std::string(resolved) : candidate;
      }
  }
#ifdef CELLSTATE_SOURCE_DIR
  return std::string(CELLSTATE_SOURCE_DIR) + "/models/" + name;
#else
  return "models/" + name;
#endif
}

}  // namespace cellstate
