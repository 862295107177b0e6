#pragma once
// What the fuzz targets share: inputs that the code under test reads from
// files go through a scratch directory (one per process, removed at exit),
// and an invariant that fails aborts with a message (libFuzzer then saves
// the input that broke it).

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

namespace cellstate::fuzz {

class Scratch {
 public:
  Scratch() {
    std::string templ = (std::filesystem::temp_directory_path() / "cellstate-fuzz.XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) std::abort();
    dir_ = templ;
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  /// Writes `bytes` to DIR/NAME and returns the path.
  std::string write(const std::string& name, const std::string& bytes) const {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return path;
  }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

inline const Scratch& scratch() {
  static const Scratch s;
  return s;
}

/// Aborts with `what` when `ok` is false: a broken invariant is a finding.
inline void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant broken: %s\n", what);
    std::abort();
  }
}

}  // namespace cellstate::fuzz
