// Fuzz target: reading a model directory's config.json and MANIFEST.json
// (tasks/model_files.h), verified and not, and typed config fields. The
// input is split at the first two "\n--\n" into config.json, MANIFEST.json
// and a weights.pt; whatever they hold, reading must end in an InputError
// naming the file, or succeed, and a verified read must only succeed when
// every listed file matches.
#include "cellstate/tasks/model_files.h"
#include "cellstate/util/io.h"
#include "cellstate/util/sha256.h"
#include "common.h"

namespace cs = cellstate;
using cellstate::fuzz::require;
using cellstate::fuzz::scratch;

namespace {

std::string part(const std::string& s, size_t& at) {
  const size_t end = s.find("\n--\n", at);
  std::string out = s.substr(at, end == std::string::npos ? std::string::npos : end - at);
  at = end == std::string::npos ? s.size() : end + 4;
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  size_t at = 0;
  const std::string config = part(s, at), manifest = part(s, at), weights = part(s, at);
  const std::string dir = scratch().dir() + "/m";
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir);
  scratch().write("m/config.json", config);
  scratch().write("m/MANIFEST.json", manifest);
  scratch().write("m/weights.pt", weights);
  for (const bool verify : {false, true}) {
    try {
      const auto c = cs::read_model_config(dir, "sentiment", verify);
      if (verify) {
        // Every file it lists must be as recorded.
        const auto m = nlohmann::json::parse(manifest);
        for (const auto& f : m.at("files")) {
          const auto path = dir + "/" + f.at("name").get<std::string>();
          require(cs::sha256_file(path) == f.at("sha256").get<std::string>(), "a verified file differs");
        }
      }
      const std::string file = dir + "/config.json";
      for (const auto& [key, value] : c.items()) {
        (void)value;
        try {
          cs::config_get<int64_t>(c, key, file);
        } catch (const cs::InputError&) {
        }
        try {
          cs::config_get<std::vector<std::string>>(c, key, file);
        } catch (const cs::InputError&) {
        }
        try {
          cs::config_get<double>(c, key, file);
        } catch (const cs::InputError&) {
        }
        try {
          cs::config_get<bool>(c, key, file);
        } catch (const cs::InputError&) {
        }
      }
    } catch (const cs::InputError&) {
    }
  }
  return 0;
}
