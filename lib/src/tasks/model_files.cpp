#include "cellstate/tasks/model_files.h"

#include <algorithm>
#include <filesystem>

#include "cellstate/util/io.h"
#include "cellstate/util/sha256.h"

namespace cellstate {

namespace {

std::string program_of(const std::string& task) { return "cellstate-" + task; }

}  // namespace

void throw_config_error(const std::string& file, const std::string& message) {
  throw InputError(file, 0, "config: " + message);
}

nlohmann::json read_model_config(const std::string& dir, const std::string& task, bool verify) {
  if (!is_directory(dir)) throw InputError(dir, 0, "no such model directory");
  if (verify) verify_manifest(dir, task);
  const std::string path = dir + "/config.json";
  if (!file_exists(path))
    throw InputError(path, 0, "missing file (expected a cellstate model directory)");
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for a number like 9e999
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

bool is_checkpoint_name(const std::string& name) {
  return name.compare(0, 10, "checkpoint") == 0 && name.size() > 3 && name.compare(name.size() - 3, 3, ".pt") == 0;
}

bool is_temporary_name(const std::string& name) { return name.find(".tmp.") != std::string::npos; }

std::vector<std::string> manifest_files(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || name == kManifestName || name == kOwnerFileName || is_checkpoint_name(name) ||
        is_temporary_name(name))
      continue;
    names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

void verify_manifest(const std::string& dir, const std::string& task) {
  const std::string path = dir + "/" + kManifestName;
  const std::string fix = "if its files are as intended, write a new manifest with `" + program_of(task) +
                          " seal --model " + dir + "`, or load it with --no-verify";
  if (!file_exists(path))
    throw InputError(path, 0, "missing (a model written before cellstate 0.3, or an incomplete copy); " + fix);
  nlohmann::json manifest;
  try {
    manifest = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception&) {  // parse_error, or out_of_range for a number like 9e999
    throw InputError(path, 0, std::string("not valid JSON (damaged?); ") + fix);
  }
  if (!manifest.is_object() || !manifest.contains("files") || !manifest["files"].is_array())
    throw InputError(path, 0, "expected an object with a \"files\" list (damaged?); " + fix);
  const auto version = manifest.value("format_version", nlohmann::json());
  if (!version.is_number_integer() || version.get<int64_t>() != kModelFormatVersion)
    throw InputError(path, 0, "format version " + version.dump() + ", this cellstate reads version " +
                                  std::to_string(kModelFormatVersion));
  const auto recorded_task = manifest.value("task", nlohmann::json());
  if (!recorded_task.is_string() || recorded_task.get<std::string>() != task)
    throw InputError(path, 0, "describes a " + recorded_task.dump() + " model, expected a '" + task + "' model");
  for (const auto& f : manifest["files"]) {
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("bytes") ||
        !f["bytes"].is_number_integer() || !f.contains("sha256") || !f["sha256"].is_string())
      throw InputError(path, 0, "a \"files\" entry without name, bytes and sha256 (damaged?); " + fix);
    const auto name = f["name"].get<std::string>();
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
      throw InputError(path, 0, "a file name that is not a plain name: \"" + name + "\"");
    const std::string file = dir + "/" + name;
    if (!file_exists(file)) throw InputError(file, 0, "missing (MANIFEST.json lists it); the model is incomplete");
    const auto bytes = static_cast<int64_t>(std::filesystem::file_size(file));
    if (bytes != f["bytes"].get<int64_t>())
      throw InputError(file, 0, std::to_string(bytes) + " bytes, MANIFEST.json records " +
                                    std::to_string(f["bytes"].get<int64_t>()) +
                                    " (truncated, damaged or replaced); " + fix);
    if (sha256_file(file) != f["sha256"].get<std::string>())
      throw InputError(file, 0, "damaged or changed since the model was written (its SHA-256 is not the one "
                                "MANIFEST.json records); " + fix);
  }
}

bool has_checkpoint(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
    if (entry.is_regular_file() && is_checkpoint_name(entry.path().filename().string())) return true;
  return false;
}

}  // namespace cellstate
