#pragma once
// `train --nproc N`: this executable starts N copies of itself on this
// machine as the ranks of one data-parallel run (like `torchrun --standalone
// --nproc-per-node N`), and stands between them and the user:
//
//   launcher ── picks a free loopback port, sets RANK, WORLD_SIZE, LOCAL_RANK,
//   │           LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT
//   ├─ rank 0   the user's stdout/stderr as they are (its progress display)
//   └─ rank k   stdout+stderr through a pipe, each line shown as "[rank k] ..."
//
// SIGINT, SIGTERM and SIGHUP are forwarded to every rank (each in its own
// process group, so a terminal's Ctrl-C reaches them once, through here); a
// rank that dies or fails is named, and the others get `grace_s` to stop on
// their own (they notice the lost peer) before SIGTERM, then SIGKILL. The
// ranks die with the launcher (PR_SET_PDEATHSIG: SIGTERM, so they checkpoint).

#include <cstdint>
#include <string>

namespace cellstate {

struct LaunchOptions {
  int64_t nproc = 2;          // ranks to start
  std::string program;        // for messages ("cellstate-textgen")
  /// Intra-op threads each rank uses when the command line does not say
  /// (0: the idle cores divided among the ranks, at least 1).
  int threads = 0;
  double grace_s = 30;        // after a rank fails, before the others are stopped
};

/// Whether this process is a rank a launcher started (its environment says so).
bool launched_by_cellstate();

/// Runs `nproc` ranks of this executable with this process's own command
/// line (/proc/self/cmdline) and environment, plus the variables above, and waits for
/// them. Returns the run's exit status: 0 when every rank succeeded, 128+S
/// when signal S was forwarded and the ranks stopped for it, else the first
/// failing rank's status (1 when it was killed).
int launch_workers(const LaunchOptions& options);

}  // namespace cellstate
