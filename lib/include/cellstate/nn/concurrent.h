#pragma once
// Independent pieces of work run at once, one thread each.
//
// A bidirectional layer's two directions share nothing until their outputs
// are concatenated. Run one after the other, each direction's per-step
// products are too small to split well over two threads (a 64 x 256 times
// 256 x 1024 product a step); run at once, each on its own core, they need
// no synchronisation at all until the end.

#include <cstdint>
#include <functional>

namespace cellstate {

/// Whether run_concurrently would give `tasks` tasks threads of their own:
/// this process may use more than one thread and the caller is not already
/// inside a parallel region.
bool can_run_concurrently(int64_t tasks);

/// Runs task(0) … task(tasks-1), at once on OpenMP's threads when
/// can_run_concurrently(tasks) (each thread takes tasks i, i + threads, …),
/// else one after another on this thread. Each task runs with one thread
/// (LibTorch's and oneDNN's parallel loops inside it are serial) and with
/// this thread's autograd, autocast and product-precision settings. The
/// first exception a task throws is rethrown here once all have finished.
void run_concurrently(int64_t tasks, const std::function<void(int64_t)>& task);

}  // namespace cellstate
