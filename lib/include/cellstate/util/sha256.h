#pragma once
// SHA-256 (FIPS 180-4), for the checksums of model directories' manifests.
//
//   Sha256 h;  h.update(bytes);  h.update(more);  h.hex()  ->  64 hex digits
//
// Streaming, so a file is hashed in blocks without being read whole.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace cellstate {

class Sha256 {
 public:
  Sha256();
  /// Appends `bytes` to the message.
  void update(std::string_view bytes);
  /// The digest of everything appended, as 64 lower-case hex digits. Ends the
  /// message: update() after hex() is a logic error.
  std::string hex();

 private:
  void compress(const unsigned char* block);

  std::array<uint32_t, 8> state_;
  std::array<unsigned char, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes appended
  bool finished_ = false;
};

/// The SHA-256 of `bytes`, hex.
std::string sha256_hex(std::string_view bytes);

/// The SHA-256 of the file at `path` (read as stored, not decompressed), hex.
/// A missing or unreadable file is an InputError naming it.
std::string sha256_file(const std::string& path);

}  // namespace cellstate
