#pragma once
// The model directory's files, read without LibTorch (so that the fuzz
// targets in fuzz/ build them with sanitizers): config.json and the
// manifest every load verifies. The directory's layout and the writing
// side (weights, transactions) are in model_dir.h.

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace cellstate {

/// Bumped when a model directory written by this version cannot be read by
/// an older one (or the other way round).
constexpr int kModelFormatVersion = 1;

/// The manifest's name, and the file naming the PID of a trainer that holds
/// a staging directory (never part of a model).
constexpr const char* kManifestName = "MANIFEST.json";
constexpr const char* kOwnerFileName = "owner.pid";

/// Reads DIR/config.json and checks it is a model of `task` in this format
/// version; with `verify`, first checks every file against DIR/MANIFEST.json
/// (verify_manifest). Any problem is an InputError naming the file.
nlohmann::json read_model_config(const std::string& dir, const std::string& task, bool verify = true);

/// Checks DIR against DIR/MANIFEST.json: every listed file present with the
/// recorded size and SHA-256. A missing manifest, a missing, truncated or
/// changed file is an InputError naming it (loading with --no-verify skips
/// this check).
void verify_manifest(const std::string& dir, const std::string& task);

/// The regular files of DIR a manifest covers (all but the manifest itself,
/// checkpoints, temporaries and the owner file), sorted.
std::vector<std::string> manifest_files(const std::string& dir);

/// checkpoint*.pt, and NAME.tmp.PID.
bool is_checkpoint_name(const std::string& name);
bool is_temporary_name(const std::string& name);

/// Whether DIR holds a training checkpoint (checkpoint*.pt).
bool has_checkpoint(const std::string& dir);

/// InputError "FILE: config: MESSAGE".
[[noreturn]] void throw_config_error(const std::string& file, const std::string& message);

/// config[key] converted to T; a missing key or wrong type is an InputError
/// naming `file` and the key.
template <typename T>
T config_get(const nlohmann::json& config, const std::string& key, const std::string& file) {
  if (!config.contains(key)) throw_config_error(file, "missing key \"" + key + "\"");
  try {
    return config.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw_config_error(file, "key \"" + key + "\" has the wrong type (" +
                                 std::string(config.at(key).type_name()) + ")");
  }
}

/// config[key] as T when present (checked like config_get), else `fallback`.
template <typename T>
T config_optional(const nlohmann::json& config, const std::string& key, const std::string& file, T fallback) {
  return config.contains(key) ? config_get<T>(config, key, file) : fallback;
}

/// config_get<T> for a number, which must also lie in [lo, hi] (a hand-edited
/// or damaged config is refused before anything is allocated from it).
template <typename T>
T config_get_in(const nlohmann::json& config, const std::string& key, const std::string& file, T lo, T hi) {
  const T v = config_get<T>(config, key, file);
  if (!(v >= lo && v <= hi))
    throw_config_error(file, "\"" + key + "\" must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                 "], got " + std::to_string(v));
  return v;
}

}  // namespace cellstate
