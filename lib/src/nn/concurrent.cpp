// The only file compiled with OpenMP (-fopenmp): its parallel region shares
// LibTorch's OpenMP runtime (libgomp) and thread count.

#include "cellstate/nn/concurrent.h"

#include "cellstate/nn/gemm.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <exception>

namespace cellstate {

bool can_run_concurrently(int64_t tasks) {
  return tasks > 1 && at::get_num_threads() > 1 && !omp_in_parallel();
}

void run_concurrently(int64_t tasks, const std::function<void(int64_t)>& task) {
  if (!can_run_concurrently(tasks)) {
    for (int64_t i = 0; i < tasks; ++i) task(i);
    return;
  }
  const at::ThreadLocalState caller;  // grad mode, autocast, dispatch keys
  const MatmulPrecision precision = matmul_precision();
  const int threads = static_cast<int>(std::min<int64_t>(tasks, at::get_num_threads()));
  std::atomic_flag failed = ATOMIC_FLAG_INIT;
  std::exception_ptr error;
#pragma omp parallel num_threads(threads)
  {
    // This thread's share runs serially: nested parallel loops (ATen's and
    // oneDNN's) see one thread, and oneDNN builds its primitives for one.
    // LibTorch first sets a thread's count when the thread first asks for
    // it: asked here, before it is lowered.
    at::get_num_threads();
    omp_set_num_threads(1);
    try {
      at::ThreadLocalStateGuard state(caller);
      MatmulPrecisionGuard products(precision);
      for (int64_t i = omp_get_thread_num(); i < tasks; i += omp_get_num_threads()) task(i);
    } catch (...) {
      if (!failed.test_and_set()) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace cellstate
