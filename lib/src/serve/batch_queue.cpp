#include "cellstate/serve/batch_queue.h"

#include <algorithm>
#include <stdexcept>

namespace cellstate {

BatchQueue::BatchQueue(RunBatch run, BatchQueueOptions options) : run_(std::move(run)), options_(options) {
  if (options_.max_batch < 1)
    throw std::invalid_argument("BatchQueue: max_batch must be >= 1, got " + std::to_string(options_.max_batch));
  if (options_.max_wait.count() < 0) throw std::invalid_argument("BatchQueue: max_wait must be >= 0");
  worker_ = std::thread([this] { work(); });
}

BatchQueue::~BatchQueue() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  worker_.join();
}

std::future<std::vector<nlohmann::json>> BatchQueue::submit(std::vector<std::string> items, nlohmann::json settings,
                                                            std::shared_ptr<std::atomic<bool>> cancelled) {
  Request r;
  r.items = std::move(items);
  r.key = settings.dump();
  r.settings = std::move(settings);
  r.cancelled = std::move(cancelled);
  r.arrived = std::chrono::steady_clock::now();
  auto future = r.promise.get_future();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) throw std::runtime_error("BatchQueue: stopping, no new requests");
    queue_.push_back(std::move(r));
    ++stats_.requests;
  }
  wake_.notify_all();
  return future;
}

BatchQueueStats BatchQueue::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

std::vector<BatchQueue::Request> BatchQueue::next_batch(std::unique_lock<std::mutex>& lock) {
  wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
  if (queue_.empty()) return {};
  // Items waiting with the oldest request's settings.
  auto waiting = [&] {
    int64_t n = 0;
    for (const auto& r : queue_)
      if (r.key == queue_.front().key) n += static_cast<int64_t>(r.items.size());
    return n;
  };
  const auto deadline = queue_.front().arrived + options_.max_wait;
  while (!stopping_ && waiting() < options_.max_batch)
    if (wake_.wait_until(lock, deadline) == std::cv_status::timeout) break;
  std::vector<Request> batch;
  const std::string key = queue_.front().key;
  int64_t items = 0;
  for (auto it = queue_.begin(); it != queue_.end();) {
    const auto n = static_cast<int64_t>(it->items.size());
    if (it->key != key || (!batch.empty() && items + n > options_.max_batch)) {
      ++it;
      continue;
    }
    items += n;
    batch.push_back(std::move(*it));
    it = queue_.erase(it);
    if (items >= options_.max_batch) break;
  }
  return batch;
}

void BatchQueue::work() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    auto batch = next_batch(lock);
    if (batch.empty()) return;  // stopping, nothing left
    lock.unlock();
    run(batch);
    lock.lock();
  }
}

void BatchQueue::run(std::vector<Request>& batch) {
  // Requests whose clients gave up are dropped before any work.
  std::vector<Request*> live;
  for (auto& r : batch) {
    if (r.cancelled && r.cancelled->load()) {
      r.promise.set_exception(std::make_exception_ptr(std::runtime_error("cancelled")));
      continue;
    }
    live.push_back(&r);
  }
  if (live.empty()) return;
  std::vector<std::string> items;
  for (const auto* r : live) items.insert(items.end(), r->items.begin(), r->items.end());
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.batches;
    stats_.items += static_cast<int64_t>(items.size());
    stats_.largest_batch = std::max(stats_.largest_batch, static_cast<int64_t>(items.size()));
  }
  auto answer = [](Request& r, const std::vector<nlohmann::json>& results, size_t from) {
    if (results.size() < from + r.items.size()) {
      r.promise.set_exception(std::make_exception_ptr(std::logic_error("BatchQueue: too few results")));
      return;
    }
    r.promise.set_value(std::vector<nlohmann::json>(results.begin() + static_cast<std::ptrdiff_t>(from),
                                                    results.begin() + static_cast<std::ptrdiff_t>(from + r.items.size())));
  };
  try {
    const auto results = run_(items, live.front()->settings);
    size_t from = 0;
    for (auto* r : live) {
      answer(*r, results, from);
      from += r->items.size();
    }
    return;
  } catch (...) {
    if (live.size() == 1) {
      live.front()->promise.set_exception(std::current_exception());
      return;
    }
  }
  // One of them failed the batch: each alone, so only the bad one fails.
  for (auto* r : live) {
    try {
      answer(*r, run_(r->items, r->settings), 0);
    } catch (...) {
      r->promise.set_exception(std::current_exception());
    }
  }
}

}  // namespace cellstate
