#include "cellstate/util/io.h"

#include "cellstate/util/text.h"


#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fcntl.h>
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

struct LineReader::Impl {
  gzFile file = nullptr;
  std::string buffer;  // bytes read but not yet returned
  size_t pos = 0;
  bool eof = false;
};

LineReader::LineReader(const std::string& path, size_t max_line_bytes)
    : impl_(std::make_unique<Impl>()), path_(path == "-" ? "<stdin>" : path),
      max_line_bytes_(max_line_bytes) {
  if (path == "-") {
    const int fd = dup(STDIN_FILENO);
    impl_->file = fd >= 0 ? gzdopen(fd, "rb") : nullptr;
  } else {
    if (is_directory(path)) throw InputError(path_, 0, "is a directory, expected a text file");
    impl_->file = gzopen(path.c_str(), "rb");
  }
  if (impl_->file == nullptr)
    throw InputError(path_, 0, std::string("cannot open: ") + std::strerror(errno));
  gzbuffer(impl_->file, 1 << 17);
}

LineReader::~LineReader() {
  if (impl_ && impl_->file) gzclose(impl_->file);
}

bool LineReader::next(std::string& line) {
  auto& im = *impl_;
  line.clear();
  for (;;) {
    const size_t nl = im.buffer.find('\n', im.pos);
    if (nl != std::string::npos) {
      line.append(im.buffer, im.pos, nl - im.pos);
      im.pos = nl + 1;
      break;
    }
    line.append(im.buffer, im.pos, std::string::npos);
    im.buffer.clear();
    im.pos = 0;
    if (line.size() > max_line_bytes_) {
      ++line_;
      throw error("line longer than " + std::to_string(max_line_bytes_) +
                  " bytes (expected a text file with lines)");
    }
    if (im.eof) {
      if (line.empty()) return false;
      break;
    }
    im.buffer.resize(1 << 16);
    const int got = gzread(im.file, im.buffer.data(), static_cast<unsigned>(im.buffer.size()));
    if (got < 0) {
      int code = 0;
      const char* msg = gzerror(im.file, &code);
      ++line_;
      throw error(std::string("read error (") + (msg ? msg : "unknown") +
                  "; corrupt or truncated gzip data?)");
    }
    im.buffer.resize(static_cast<size_t>(got));
    if (got == 0) im.eof = true;
  }
  ++line_;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line_ == 1 && line.compare(0, 3, "\xEF\xBB\xBF") == 0) line.erase(0, 3);
  if (line.size() > max_line_bytes_)
    throw error("line longer than " + std::to_string(max_line_bytes_) +
                " bytes (expected a text file with lines)");
  if (line.find('\0') != std::string::npos)
    throw error("NUL byte in line (expected UTF-8 text, got binary data?)");
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

namespace {

std::string temp_name_for(const std::string& path) {
  return path + ".tmp." + std::to_string(::getpid());
}

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

void atomic_write_with(const std::string& path,
                       const std::function<void(const std::string&)>& write) {
  const std::string tmp = temp_name_for(path);
  try {
    write(tmp);
    fsync_path(tmp);
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": cannot write: " + reason);
  }
  const auto parent = std::filesystem::path(path).parent_path();
  fsync_path(parent.empty() ? std::string(".") : parent.string());
}

void atomic_write(const std::string& path, std::string_view bytes) {
  atomic_write_with(path, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) throw std::runtime_error(path + ": cannot write: " + std::strerror(errno));
  });
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
