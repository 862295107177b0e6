// A test-only LD_PRELOAD library that makes the disk "full": write(2) and
// pwrite(2) to a file whose path starts with $FAIL_WRITES_UNDER fail with
// ENOSPC once this process has written $FAIL_WRITES_AFTER bytes (default 0)
// to such files. Used where the tests cannot mount a small tmpfs.
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>

namespace {

std::atomic<long long> written{0};

bool under_prefix(int fd) {
  const char* prefix = getenv("FAIL_WRITES_UNDER");
  if (prefix == nullptr || *prefix == '\0') return false;
  char link[64], path[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return false;
  path[n] = '\0';
  return strncmp(path, prefix, strlen(prefix)) == 0;
}

/// Whether `n` more bytes to `fd` must fail.
bool full(int fd, size_t n) {
  if (!under_prefix(fd)) return false;
  const char* after = getenv("FAIL_WRITES_AFTER");
  const long long budget = after ? atoll(after) : 0;
  if (written.load() + static_cast<long long>(n) > budget) return true;
  written += static_cast<long long>(n);
  return false;
}

}  // namespace

extern "C" ssize_t write(int fd, const void* buf, size_t n) {
  using Fn = ssize_t (*)(int, const void*, size_t);
  static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "write"));
  if (full(fd, n)) {
    errno = ENOSPC;
    return -1;
  }
  return real(fd, buf, n);
}

extern "C" ssize_t pwrite64(int fd, const void* buf, size_t n, off_t offset) {
  using Fn = ssize_t (*)(int, const void*, size_t, off_t);
  static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pwrite64"));
  if (full(fd, n)) {
    errno = ENOSPC;
    return -1;
  }
  return real(fd, buf, n, offset);
}
