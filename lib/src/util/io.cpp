#include "cellstate/util/io.h"

#include "cellstate/util/text.h"


#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

namespace cellstate {

namespace {

std::string format_error(const std::string& file, int64_t line, const std::string& message) {
  if (line > 0) return file + ":" + std::to_string(line) + ": " + message;
  return file + ": " + message;
}

}  // namespace

InputError::InputError(std::string file, int64_t line, const std::string& message)
    : std::runtime_error(format_error(file, line, message)), file_(std::move(file)), line_(line) {}

namespace {

/// Standard input read as it arrives: read(2) returns what is there, so a
/// line typed in a terminal or written by another program is seen at once
/// (zlib's gzread would wait until its buffer is full or the input ends).
/// Gzip input (recognised by its magic bytes) is inflated as it comes.
class StdinSource {
 public:
  explicit StdinSource(int fd) : fd_(fd) {}
  ~StdinSource() {
    if (inflating_) inflateEnd(&z_);
    if (fd_ >= 0) ::close(fd_);
  }
  StdinSource(const StdinSource&) = delete;
  StdinSource& operator=(const StdinSource&) = delete;

  /// Up to `n` bytes into `out`: the count, 0 at the end of the input.
  /// Throws std::runtime_error (the reason) on a read or gzip error.
  size_t read(char* out, size_t n) {
    if (!started_) start();
    if (!inflating_) {
      if (raw_pos_ < raw_.size()) {
        const size_t k = std::min(n, raw_.size() - raw_pos_);
        std::memcpy(out, raw_.data() + raw_pos_, k);
        raw_pos_ += k;
        return k;
      }
      return raw_eof_ ? 0 : read_fd(out, n);
    }
    for (;;) {
      if (z_.avail_in == 0 && !raw_eof_) {
        raw_.resize(1 << 16);
        raw_.resize(read_fd(raw_.data(), raw_.size()));
        raw_pos_ = raw_.size();
        z_.next_in = reinterpret_cast<Bytef*>(raw_.data());
        z_.avail_in = static_cast<uInt>(raw_.size());
      }
      if (z_.avail_in == 0 && raw_eof_) {
        if (!member_ended_) throw std::runtime_error("truncated gzip data");
        return 0;
      }
      if (member_ended_) {  // another gzip member follows (as gzip -c a b does)
        inflateReset(&z_);
        member_ended_ = false;
      }
      z_.next_out = reinterpret_cast<Bytef*>(out);
      z_.avail_out = static_cast<uInt>(n);
      const int ret = inflate(&z_, Z_NO_FLUSH);
      if (ret == Z_STREAM_END) member_ended_ = true;
      else if (ret != Z_OK && ret != Z_BUF_ERROR) throw std::runtime_error(z_.msg ? z_.msg : "corrupt gzip data");
      const size_t produced = n - z_.avail_out;
      if (produced > 0) return produced;
    }
  }

  /// Whether read() would return without waiting for more input.
  bool ready() const {
    if (!started_ || raw_eof_) return true;
    if (inflating_ ? z_.avail_in > 0 : raw_pos_ < raw_.size()) return true;
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0;
  }

 private:
  /// Reads what is there (waiting for at least one byte); sets raw_eof_ at the end.
  size_t read_fd(char* out, size_t n) {
    for (;;) {
      const ssize_t got = ::read(fd_, out, n);
      if (got > 0) return static_cast<size_t>(got);
      if (got == 0) {
        raw_eof_ = true;
        return 0;
      }
      if (errno != EINTR) throw std::runtime_error(std::strerror(errno));
    }
  }

  /// Reads the first bytes and decides: gzip or plain.
  void start() {
    started_ = true;
    char head[2];
    size_t have = 0;
    while (have < 2 && !raw_eof_) have += read_fd(head + have, 2 - have);
    raw_.assign(head, have);
    raw_pos_ = 0;
    if (have == 2 && static_cast<unsigned char>(head[0]) == 0x1f && static_cast<unsigned char>(head[1]) == 0x8b) {
      if (inflateInit2(&z_, 15 + 16) != Z_OK) throw std::runtime_error("cannot start gzip decompression");
      inflating_ = true;
      z_.next_in = reinterpret_cast<Bytef*>(raw_.data());
      z_.avail_in = static_cast<uInt>(raw_.size());
      raw_pos_ = raw_.size();
    }
  }

  int fd_;
  std::string raw_;  // bytes read from fd_ and not yet handed on (plain) or inflated (gzip)
  size_t raw_pos_ = 0;
  bool raw_eof_ = false;
  bool started_ = false;
  bool inflating_ = false;
  bool member_ended_ = false;
  z_stream z_{};
};

}  // namespace

struct LineReader::Impl {
  gzFile file = nullptr;                // a named file (plain or gzip)
  std::unique_ptr<StdinSource> stdin_;  // or standard input
  std::string buffer;  // bytes read but not yet returned
  size_t pos = 0;
  bool eof = false;
};

LineReader::LineReader(const std::string& path, size_t max_line_bytes, LongLines long_lines)
    : impl_(std::make_unique<Impl>()), path_(path == "-" ? "<stdin>" : path),
      max_line_bytes_(max_line_bytes), long_lines_(long_lines) {
  if (path == "-") {
    const int fd = dup(STDIN_FILENO);
    if (fd < 0) throw InputError(path_, 0, std::string("cannot open: ") + std::strerror(errno));
    impl_->stdin_ = std::make_unique<StdinSource>(fd);
    return;
  }
  if (is_directory(path)) throw InputError(path_, 0, "is a directory, expected a text file");
  impl_->file = gzopen(path.c_str(), "rb");
  if (impl_->file == nullptr)
    throw InputError(path_, 0, std::string("cannot open: ") + std::strerror(errno));
  gzbuffer(impl_->file, 1 << 17);
}

LineReader::~LineReader() {
  if (impl_ && impl_->file) gzclose(impl_->file);
}

bool LineReader::ready() const {
  const auto& im = *impl_;
  if (im.eof || !im.stdin_ || im.buffer.find('\n', im.pos) != std::string::npos) return true;
  return im.stdin_->ready();
}

bool LineReader::next(std::string& line) {
  auto& im = *impl_;
  line.clear();
  truncated_from_ = 0;
  const bool truncate = long_lines_ == LongLines::kTruncate;
  // Bytes of this line skipped (truncating): counted, not kept. One byte
  // more than the cap is kept, so that a "\r" before the "\n" can still be
  // told apart from a line that is too long.
  int64_t skipped = 0;
  const size_t keep = max_line_bytes_ + 1;
  auto take = [&](size_t from, size_t n) {
    const size_t room = line.size() < keep ? keep - line.size() : 0;
    line.append(im.buffer, from, std::min(n, room));
    skipped += static_cast<int64_t>(n - std::min(n, room));
  };
  for (;;) {
    const size_t nl = im.buffer.find('\n', im.pos);
    if (nl != std::string::npos) {
      if (truncate) {
        take(im.pos, nl - im.pos);
      } else {
        line.append(im.buffer, im.pos, nl - im.pos);
      }
      im.pos = nl + 1;
      break;
    }
    if (truncate) {
      take(im.pos, im.buffer.size() - im.pos);
    } else {
      line.append(im.buffer, im.pos, std::string::npos);
    }
    im.buffer.clear();
    im.pos = 0;
    if (!truncate && line.size() > max_line_bytes_) {
      ++line_;
      throw error("line longer than " + std::to_string(max_line_bytes_) +
                  " bytes (expected a text file with lines)");
    }
    if (im.eof) {
      if (line.empty()) return false;
      break;
    }
    im.buffer.resize(1 << 16);
    size_t got = 0;
    if (im.stdin_) {
      try {
        got = im.stdin_->read(im.buffer.data(), im.buffer.size());
      } catch (const std::runtime_error& e) {
        ++line_;
        throw error(std::string("read error (") + e.what() + ")");
      }
    } else {
      const int n = gzread(im.file, im.buffer.data(), static_cast<unsigned>(im.buffer.size()));
      if (n < 0) {
        int code = 0;
        const char* msg = gzerror(im.file, &code);
        ++line_;
        throw error(std::string("read error (") + (msg ? msg : "unknown") +
                    "; corrupt or truncated gzip data?)");
      }
      got = static_cast<size_t>(n);
    }
    im.buffer.resize(got);
    if (got == 0) im.eof = true;
  }
  ++line_;
  if (skipped == 0 && !line.empty() && line.back() == '\r') line.pop_back();
  if (line_ == 1 && line.compare(0, 3, "\xEF\xBB\xBF") == 0) line.erase(0, 3);
  if (truncate && line.size() > max_line_bytes_) {
    truncated_from_ = static_cast<int64_t>(line.size()) + skipped;
    size_t cut = max_line_bytes_;  // back to the start of a character
    while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80 && max_line_bytes_ - cut < 3) --cut;
    line.resize(cut);
  }
  if (line.size() > max_line_bytes_)
    throw error("line longer than " + std::to_string(max_line_bytes_) +
                " bytes (expected a text file with lines)");
  if (line.find('\0') != std::string::npos)
    throw error("NUL byte in line (expected UTF-8 text, got binary data?)");
  if (line.find('\r') != std::string::npos)
    throw error("a carriage return inside the line (a file with CR-only line endings? convert it with "
                "tr '\\r' '\\n'; cellstate reads LF or CRLF)");
  const size_t bad = find_invalid_utf8(line);
  if (bad != std::string_view::npos)
    throw error("invalid UTF-8 at byte " + std::to_string(bad + 1) +
                " of the line (expected UTF-8 text)");
  return true;
}

std::string read_file(const std::string& path) {
  if (is_directory(path)) throw InputError(path, 0, "is a directory, expected a file");
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw InputError(path, 0, std::string("cannot open: ") + std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const int got = gzread(f, buf, sizeof buf);
    if (got < 0) {
      gzclose(f);
      throw InputError(path, 0, "read error (corrupt or truncated gzip data?)");
    }
    if (got == 0) break;
    out.append(buf, static_cast<size_t>(got));
  }
  gzclose(f);
  return out;
}

std::string read_text_file(const std::string& path) {
  LineReader reader(path);
  std::string out, line;
  while (reader.next(line)) {
    out += line;
    out += '\n';
  }
  return out;
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

WriteError::WriteError(const std::string& path, const std::string& reason)
    : std::runtime_error([&] {
        const auto p = std::filesystem::path(path);
        const std::string dir = p.parent_path().empty() ? std::string(".") : p.parent_path().string();
        return dir + ": cannot write " + p.filename().string() + ": " + reason;
      }()),
      path_(path) {}

namespace {

constexpr const char* kTempInfix = ".tmp.";

std::string temp_name_for(const std::string& path) { return path + kTempInfix + std::to_string(::getpid()); }

/// Writes all of `bytes` to `fd`, retrying short writes and EINTR; false
/// (errno set) on failure.
bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string parent_of(const std::string& path) {
  const auto parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

/// The PID a temporary's name ends with, or 0 when it is not one.
int64_t temporary_pid(const std::string& name) {
  const size_t at = name.rfind(kTempInfix);
  if (at == std::string::npos || at == 0) return 0;
  const std::string digits = name.substr(at + std::strlen(kTempInfix));
  if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) return 0;
  return std::stoll(digits);
}

}  // namespace

bool process_alive(int64_t pid) {
  if (pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

int remove_stale_temporaries(const std::string& dir, const std::string& of_file) {
  const std::string prefix = of_file.empty() ? std::string() : of_file + kTempInfix;
  int removed = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const int64_t pid = temporary_pid(name);
    if (pid == 0 || pid == ::getpid() || process_alive(pid)) continue;
    std::error_code rm;
    if (std::filesystem::remove_all(entry.path(), rm) > 0) ++removed;
  }
  return removed;
}

void sync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw WriteError(path, std::strerror(errno));
  if (::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
    const int err = errno;
    ::close(fd);
    throw WriteError(path, std::strerror(err));
  }
  ::close(fd);
}

void atomic_write_with(const std::string& path,
                       const std::function<void(const std::string&)>& write) {
  const std::string dir = parent_of(path);
  remove_stale_temporaries(dir, std::filesystem::path(path).filename().string());
  const std::string tmp = temp_name_for(path);
  try {
    write(tmp);
    sync_path(tmp);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) throw WriteError(path, std::strerror(errno));
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  sync_path(dir);
}

void atomic_write(const std::string& path, std::string_view bytes) {
  atomic_write_with(path, [&](const std::string& tmp) {
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw WriteError(path, std::strerror(errno));
    if (!write_all(fd, bytes)) {
      const int err = errno;
      ::close(fd);
      throw WriteError(path, std::strerror(err));
    }
    if (::close(fd) != 0) throw WriteError(path, std::strerror(errno));
  });
}

void append_to_file(const std::string& path, std::string_view text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw WriteError(path, std::strerror(errno));
  struct stat st {};
  const off_t before = ::fstat(fd, &st) == 0 ? st.st_size : -1;
  if (!write_all(fd, text)) {
    const int err = errno;
    if (before >= 0 && ::ftruncate(fd, before) != 0) {
      // The partial line stays; the error below is what matters.
    }
    ::close(fd);
    throw WriteError(path, std::strerror(err));
  }
  if (::close(fd) != 0) throw WriteError(path, std::strerror(errno));
}

TempDir::TempDir(const std::string& prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") + "/" + prefix + ".XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr)
    throw std::runtime_error("cannot create a temporary directory " + templ + ": " +
                             std::strerror(errno));
  path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace cellstate
