#pragma once
// Dynamic batching for a served model: requests from many connections wait
// in one queue, and a single worker thread runs them through the model
// together -- up to `max_batch` items, or whatever has arrived `max_wait`
// after the oldest waiting request -- then hands each request its own
// results. Only requests with the same settings (decoding options, ...) share
// a batch, and the models batch with masked padding, so a request's results
// never depend on what it was batched with.
//
//   BatchQueue q(run, {32, std::chrono::milliseconds(5)});
//   auto results = q.submit({"a fine film", "dull"}, settings).get();

#include <chrono>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace cellstate {

struct BatchQueueOptions {
  int64_t max_batch = 32;                      // items per batch at most (a larger request runs alone)
  std::chrono::milliseconds max_wait{5};       // how long the oldest request waits for others
};

/// What a batch queue has done, for /v1/models and the tests.
struct BatchQueueStats {
  int64_t requests = 0;
  int64_t batches = 0;
  int64_t items = 0;
  int64_t largest_batch = 0;  // items
};

class BatchQueue {
 public:
  /// Runs `items` (the concatenated items of one batch) with `settings`;
  /// returns one result per item, in order. Called on the worker thread only.
  using RunBatch =
      std::function<std::vector<nlohmann::json>(const std::vector<std::string>& items, const nlohmann::json& settings)>;

  BatchQueue(RunBatch run, BatchQueueOptions options);
  /// Finishes every request already submitted, then stops the worker.
  ~BatchQueue();
  BatchQueue(const BatchQueue&) = delete;
  BatchQueue& operator=(const BatchQueue&) = delete;

  /// Queues one request's `items`; the future gets their results in order,
  /// or the exception running them threw (a batch that throws is re-run one
  /// request at a time, so one bad request fails alone). `cancelled`, when
  /// set before the request's batch starts, drops it (a client that gave up).
  std::future<std::vector<nlohmann::json>> submit(std::vector<std::string> items, nlohmann::json settings,
                                                  std::shared_ptr<std::atomic<bool>> cancelled = nullptr);

  BatchQueueStats stats() const;

 private:
  struct Request {
    std::vector<std::string> items;
    nlohmann::json settings;
    std::string key;  // settings.dump(): requests with equal keys may share a batch
    std::promise<std::vector<nlohmann::json>> promise;
    std::shared_ptr<std::atomic<bool>> cancelled;
    std::chrono::steady_clock::time_point arrived;
  };

  void work();
  /// Takes the next batch off the queue (the lock held), waiting as the
  /// options say; empty when stopping with nothing left.
  std::vector<Request> next_batch(std::unique_lock<std::mutex>& lock);
  void run(std::vector<Request>& batch);

  RunBatch run_;
  BatchQueueOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Request> queue_;
  bool stopping_ = false;
  BatchQueueStats stats_;
  std::thread worker_;  // last: started once everything else exists
};

}  // namespace cellstate
