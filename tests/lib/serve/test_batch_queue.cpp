// Dynamic batching (serve/batch_queue.h): concurrent requests share a batch,
// each gets exactly its own results, settings keep batches apart, a bad
// request fails alone, and a cancelled one is never run.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "cellstate/serve/batch_queue.h"

namespace cs = cellstate;
using nlohmann::json;

namespace {

/// A "model" that answers each item with itself and the settings, and
/// records the batches it was given.
struct Recorder {
  std::mutex mutex;
  std::vector<std::vector<std::string>> batches;
  cs::BatchQueue::RunBatch run() {
    return [this](const std::vector<std::string>& items, const json& settings) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        batches.push_back(items);
      }
      std::vector<json> out;
      for (const auto& item : items) {
        if (item == "bad") throw std::invalid_argument("a bad item");
        out.push_back({{"item", item}, {"settings", settings}});
      }
      return out;
    };
  }
};

}  // namespace

TEST(BatchQueue, ConcurrentRequestsShareABatchAndGetTheirOwnResults) {
  Recorder r;
  cs::BatchQueue q(r.run(), {64, std::chrono::milliseconds(200)});
  std::vector<std::future<std::vector<json>>> futures;
  for (int i = 0; i < 8; ++i)
    futures.push_back(q.submit({"a" + std::to_string(i), "b" + std::to_string(i)}, {{"beam", 1}}));
  for (int i = 0; i < 8; ++i) {
    const auto results = futures[static_cast<size_t>(i)].get();
    ASSERT_EQ(results.size(), 2u);
    EXPECT_EQ(results[0]["item"], "a" + std::to_string(i));
    EXPECT_EQ(results[1]["item"], "b" + std::to_string(i));
  }
  EXPECT_LT(r.batches.size(), 8u) << "the requests were not batched";
  const auto s = q.stats();
  EXPECT_EQ(s.requests, 8);
  EXPECT_EQ(s.items, 16);
  EXPECT_GT(s.largest_batch, 2);
}

TEST(BatchQueue, MaxBatchBoundsABatchAndALargeRequestRunsWhole) {
  Recorder r;
  cs::BatchQueue q(r.run(), {4, std::chrono::milliseconds(100)});
  auto big = q.submit({"1", "2", "3", "4", "5", "6"}, {});
  std::vector<std::future<std::vector<json>>> small;
  for (int i = 0; i < 6; ++i) small.push_back(q.submit({"s" + std::to_string(i)}, {}));
  EXPECT_EQ(big.get().size(), 6u);
  for (auto& f : small) EXPECT_EQ(f.get().size(), 1u);
  for (const auto& b : r.batches)
    if (b.size() != 6) EXPECT_LE(b.size(), 4u);
}

TEST(BatchQueue, DifferentSettingsNeverShareABatch) {
  Recorder r;
  cs::BatchQueue q(r.run(), {64, std::chrono::milliseconds(100)});
  auto a = q.submit({"x"}, {{"beam", 1}});
  auto b = q.submit({"y"}, {{"beam", 5}});
  auto c = q.submit({"z"}, {{"beam", 1}});
  EXPECT_EQ(a.get()[0]["settings"]["beam"], 1);
  EXPECT_EQ(b.get()[0]["settings"]["beam"], 5);
  EXPECT_EQ(c.get()[0]["settings"]["beam"], 1);
  for (const auto& batch : r.batches)
    for (const auto& item : batch)
      if (item == "y") EXPECT_EQ(batch.size(), 1u);
}

TEST(BatchQueue, ABadRequestFailsAloneAndACancelledOneIsNotRun) {
  Recorder r;
  cs::BatchQueue q(r.run(), {64, std::chrono::milliseconds(100)});
  auto good1 = q.submit({"g1"}, {});
  auto bad = q.submit({"ok", "bad"}, {});
  auto cancelled_flag = std::make_shared<std::atomic<bool>>(true);
  auto cancelled = q.submit({"never"}, {}, cancelled_flag);
  auto good2 = q.submit({"g2"}, {});
  EXPECT_EQ(good1.get()[0]["item"], "g1");
  EXPECT_EQ(good2.get()[0]["item"], "g2");
  EXPECT_THROW(bad.get(), std::invalid_argument);
  EXPECT_THROW(cancelled.get(), std::runtime_error);
  for (const auto& batch : r.batches)
    for (const auto& item : batch) EXPECT_NE(item, "never");
}

TEST(BatchQueue, DestructionAnswersWhatIsQueued) {
  Recorder r;
  std::future<std::vector<json>> f;
  {
    cs::BatchQueue q(r.run(), {64, std::chrono::milliseconds(1000)});
    f = q.submit({"last"}, {});
  }
  EXPECT_EQ(f.get()[0]["item"], "last");
}
