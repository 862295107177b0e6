#include "cellstate/dist/launcher.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <stdexcept>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cellstate/util/interrupt.h"
#include "cellstate/util/runtime.h"

extern char** environ;

namespace cellstate {

namespace {

constexpr const char* kLaunchedVariable = "CELLSTATE_LAUNCHED";
using Clock = std::chrono::steady_clock;

/// A TCP port on 127.0.0.1 that nothing listens on now (rank 0 binds it a
/// moment later; torchrun --standalone does the same).
int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("cannot create a socket: ") + std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const int e = errno;
    ::close(fd);
    throw std::runtime_error(std::string("cannot find a free port on 127.0.0.1: ") + std::strerror(e));
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

/// The self-pipe the signal handler writes the signal number to.
int g_signal_pipe = -1;  // written only by the handler; set before it is installed

void on_signal(int signal) {
  const unsigned char s = static_cast<unsigned char>(signal);
  const int saved = errno;
  [[maybe_unused]] const ssize_t n = ::write(g_signal_pipe, &s, 1);
  errno = saved;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int s = WTERMSIG(status);
    const char* name = ::strsignal(s);
    return "was killed by signal " + std::to_string(s) + (name ? std::string(" (") + name + ")" : std::string());
  }
  return "ended with status " + std::to_string(status);
}

/// This process's arguments as it was started (argv[0] included).
std::vector<std::string> own_command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  std::string arg;
  while (std::getline(in, arg, '\0')) args.push_back(arg);
  if (args.empty()) throw std::runtime_error("cannot read /proc/self/cmdline to start the ranks");
  return args;
}

struct Worker {
  int64_t rank = 0;
  pid_t pid = -1;
  int output = -1;     // read end of its stdout+stderr pipe (ranks > 0)
  std::string pending;  // a partial line
  bool running = true;
  int status = 0;
};

/// The environment of rank `rank`: the launcher's, with the run's variables set.
std::vector<std::string> worker_environment(int64_t rank, int64_t nproc, int port, int threads) {
  const std::map<std::string, std::string> set = {
      {"RANK", std::to_string(rank)},           {"LOCAL_RANK", std::to_string(rank)},
      {"WORLD_SIZE", std::to_string(nproc)},     {"LOCAL_WORLD_SIZE", std::to_string(nproc)},
      {"MASTER_ADDR", "127.0.0.1"},              {"MASTER_PORT", std::to_string(port)},
      {kLaunchedVariable, "1"}};
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string entry(*e);
    const std::string key = entry.substr(0, entry.find('='));
    if (set.count(key) || (threads > 0 && key == "OMP_NUM_THREADS")) continue;
    env.push_back(entry);
  }
  for (const auto& [k, v] : set) env.push_back(k + "=" + v);
  if (threads > 0) env.push_back("OMP_NUM_THREADS=" + std::to_string(threads));
  return env;
}

class Launcher {
 public:
  explicit Launcher(const LaunchOptions& options) : args_(own_command_line()), options_(options) {
    for (auto& a : args_) argv_.push_back(a.data());
    argv_.push_back(nullptr);
  }

  int run() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
      throw std::runtime_error(std::string("cannot create a pipe: ") + std::strerror(errno));
    signal_read_ = fds[0];
    g_signal_pipe = fds[1];
    install_handlers();
    const int port = free_loopback_port();
    int threads = options_.threads;
    if (threads <= 0 && !std::getenv("OMP_NUM_THREADS"))
      threads = std::max(1, idle_cores() / static_cast<int>(options_.nproc));
    for (int64_t r = 0; r < options_.nproc; ++r) start(r, port, threads);
    loop();
    restore_handlers();
    ::close(signal_read_);
    ::close(g_signal_pipe);
    g_signal_pipe = -1;
    return exit_status();
  }

 private:
  void install_handlers() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (int s : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(s, &sa, &saved_[s]);
  }
  void restore_handlers() {
    for (auto& [s, sa] : saved_) ::sigaction(s, &sa, nullptr);
  }

  void start(int64_t rank, int port, int threads) {
    int out[2] = {-1, -1};
    if (rank > 0 && ::pipe2(out, O_CLOEXEC) != 0)
      throw std::runtime_error(std::string("cannot create a pipe: ") + std::strerror(errno));
    const auto env = worker_environment(rank, options_.nproc, port, threads);
    std::vector<char*> envp;
    for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("cannot start a rank: ") + std::strerror(errno));
    if (pid == 0) {  // the rank: only async-signal-safe calls until exec
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(1);
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      for (int s : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(s, &dfl, nullptr);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      if (rank > 0) {
        ::dup2(out[1], 1);
        ::dup2(out[1], 2);
      }
      ::execve("/proc/self/exe", argv_.data(), envp.data());
      const char msg[] = "cellstate: cannot start a rank (execve /proc/self/exe failed)\n";
      [[maybe_unused]] const ssize_t n = ::write(2, msg, sizeof msg - 1);
      ::_exit(127);
    }
    Worker w;
    w.rank = rank;
    w.pid = pid;
    if (rank > 0) {
      ::close(out[1]);
      w.output = out[0];
      ::fcntl(w.output, F_SETFL, ::fcntl(w.output, F_GETFL) | O_NONBLOCK);
    }
    workers_.push_back(std::move(w));
  }

  void loop() {
    for (;;) {
      reap();
      const bool any_running = std::any_of(workers_.begin(), workers_.end(), [](const Worker& w) { return w.running; });
      const bool any_output = std::any_of(workers_.begin(), workers_.end(), [](const Worker& w) { return w.output >= 0; });
      if (!any_running && !any_output) break;
      std::vector<pollfd> fds{{signal_read_, POLLIN, 0}};
      for (const auto& w : workers_)
        if (w.output >= 0) fds.push_back({w.output, POLLIN, 0});
      ::poll(fds.data(), fds.size(), 100);
      drain_signals();
      for (auto& w : workers_) read_output(w);
      enforce_deadlines();
    }
  }

  void drain_signals() {
    unsigned char s;
    while (::read(signal_read_, &s, 1) == 1) {
      if (!forwarded_) forwarded_ = s;
      for (const auto& w : workers_)
        if (w.running) ::kill(w.pid, s);
    }
  }

  void read_output(Worker& w) {
    if (w.output < 0) return;
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(w.output, buf, sizeof buf);
      if (n > 0) {
        w.pending.append(buf, static_cast<size_t>(n));
        size_t nl;
        while ((nl = w.pending.find('\n')) != std::string::npos) {
          std::cerr << "[rank " << w.rank << "] " << w.pending.substr(0, nl) << "\n";
          w.pending.erase(0, nl + 1);
        }
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
      if (!w.pending.empty()) std::cerr << "[rank " << w.rank << "] " << w.pending << "\n";
      w.pending.clear();
      ::close(w.output);
      w.output = -1;
      return;
    }
  }

  /// Collects the ranks that ended. Of those that failed in one pass, the
  /// first named is one killed by a signal (the cause, when the others
  /// failed because they lost it), else the lowest rank.
  void reap() {
    std::vector<Worker*> failed;
    for (auto& w : workers_) {
      if (!w.running) continue;
      int status = 0;
      const pid_t p = ::waitpid(w.pid, &status, WNOHANG);
      if (p != w.pid) continue;
      w.running = false;
      w.status = status;
      const bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      const bool stopped_by_forwarded = forwarded_ && ((WIFEXITED(status) && WEXITSTATUS(status) == 128 + forwarded_) ||
                                                       (WIFSIGNALED(status) && WTERMSIG(status) == forwarded_));
      if (clean) continue;
      if (!ended_) {  // the others' grace period starts with the first rank that ends badly
        ended_ = true;
        failed_at_ = Clock::now();
      }
      if (stopped_by_forwarded || forwarded_ || stopping_) continue;
      failed.push_back(&w);
    }
    if (failed.empty() || first_failure_ >= 0) return;
    const auto cause = std::find_if(failed.begin(), failed.end(), [](const Worker* w) { return WIFSIGNALED(w->status); });
    const Worker& w = **(cause != failed.end() ? cause : failed.begin());
    first_failure_ = w.rank;
    std::cerr << options_.program << ": rank " << w.rank << " (pid " << w.pid << ") " << describe(w.status)
              << "; the other ranks stop" << "\n";
  }

  /// After a failure: the others get grace_s to stop by themselves, then SIGTERM, then 10 s later SIGKILL.
  void enforce_deadlines() {
    if (!ended_) return;
    const double waited = std::chrono::duration<double>(Clock::now() - failed_at_).count();
    if (!stopping_ && waited >= options_.grace_s) {
      stopping_ = true;
      for (const auto& w : workers_)
        if (w.running) {
          std::cerr << options_.program << ": rank " << w.rank << " still running " << static_cast<int>(waited)
                    << " s after another rank ended: sending SIGTERM\n";
          ::kill(w.pid, SIGTERM);
        }
    }
    if (stopping_ && waited >= options_.grace_s + 10)
      for (const auto& w : workers_)
        if (w.running) ::kill(w.pid, SIGKILL);
  }

  int exit_status() const {
    if (first_failure_ >= 0) {
      const int s = workers_[static_cast<size_t>(first_failure_)].status;
      return WIFEXITED(s) && WEXITSTATUS(s) != 0 ? WEXITSTATUS(s) : 1;
    }
    if (forwarded_) {
      const bool all_clean = std::all_of(workers_.begin(), workers_.end(), [](const Worker& w) {
        return WIFEXITED(w.status) && WEXITSTATUS(w.status) == 0;
      });
      return all_clean ? 0 : 128 + forwarded_;
    }
    for (const auto& w : workers_)
      if (!(WIFEXITED(w.status) && WEXITSTATUS(w.status) == 0))
        return WIFEXITED(w.status) ? WEXITSTATUS(w.status) : 1;
    return 0;
  }

  std::vector<std::string> args_;
  std::vector<char*> argv_;
  LaunchOptions options_;
  std::vector<Worker> workers_;
  std::map<int, struct sigaction> saved_;
  int signal_read_ = -1;
  int forwarded_ = 0;  // the first signal forwarded to the ranks
  int64_t first_failure_ = -1;
  bool ended_ = false;  // a rank ended badly (failed or stopped by a signal)
  Clock::time_point failed_at_;
  bool stopping_ = false;
};

}  // namespace

bool launched_by_cellstate() { return std::getenv(kLaunchedVariable) != nullptr; }

int launch_workers(const LaunchOptions& options) {
  if (options.nproc < 1) throw std::invalid_argument("--nproc must be >= 1, got " + std::to_string(options.nproc));
  return Launcher(options).run();
}

}  // namespace cellstate
