// Data-parallel communication (dist/process_group.h, dist/gradient_exchange.h):
// two ranks in two threads of this process, over loopback.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <future>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cellstate/dist/gradient_exchange.h"
#include "cellstate/dist/process_group.h"

namespace cs = cellstate;

namespace {

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

cs::DistributedOptions rank_options(int64_t rank, int64_t world, int port, double timeout_s = 20) {
  cs::DistributedOptions o;
  o.rank = rank;
  o.world_size = world;
  o.local_rank = rank;
  o.local_world_size = world;
  o.master_addr = "127.0.0.1";
  o.master_port = port;
  o.timeout_s = timeout_s;
  return o;
}

/// Runs `body(group)` as rank 0 and rank 1 of a fresh group, in two threads.
template <class F>
void with_two_ranks(F body) {
  const int port = free_port();
  auto rank1 = std::async(std::launch::async, [&] {
    cs::ProcessGroup g(rank_options(1, 2, port));
    body(g);
  });
  cs::ProcessGroup g(rank_options(0, 2, port));
  body(g);
  rank1.get();
}

/// Sets environment variables for one test and restores them after.
class Environment {
 public:
  void set(const std::string& name, const std::string& value) {
    remember(name);
    ::setenv(name.c_str(), value.c_str(), 1);
  }
  /// WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
  void set_run(const std::array<std::string, 6>& values) {
    const char* names[] = {"WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"};
    for (size_t i = 0; i < values.size(); ++i) set(names[i], values[i]);
  }
  void unset(const std::string& name) {
    remember(name);
    ::unsetenv(name.c_str());
  }
  ~Environment() {
    for (const auto& [name, value] : saved_) {
      if (value) ::setenv(name.c_str(), value->c_str(), 1);
      else ::unsetenv(name.c_str());
    }
  }

 private:
  void remember(const std::string& name) {
    for (const auto& s : saved_)
      if (s.first == name) return;
    const char* v = std::getenv(name.c_str());
    saved_.emplace_back(name, v ? std::optional<std::string>(v) : std::nullopt);
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

}  // namespace

TEST(ShardRange, SplitsInOrderWithSizesDifferingByAtMostOne) {
  for (int64_t n : {0, 1, 5, 32, 33}) {
    for (int64_t shards : {1, 2, 3, 7}) {
      int64_t next = 0;
      for (int64_t r = 0; r < shards; ++r) {
        const auto s = cs::shard_range(n, r, shards);
        EXPECT_EQ(s.begin, next) << n << " " << shards << " " << r;
        EXPECT_GE(s.size(), n / shards);
        EXPECT_LE(s.size(), n / shards + 1);
        next = s.end;
      }
      EXPECT_EQ(next, n);
    }
  }
  EXPECT_EQ(cs::shard_range(33, 0, 2).size(), 17);
  EXPECT_EQ(cs::shard_range(1, 1, 2).size(), 0);
  EXPECT_THROW(cs::shard_range(4, 2, 2), c10::Error);
}

TEST(DistributedOptions, ReadsTorchrunsVariables) {
  Environment env;
  env.unset("WORLD_SIZE");
  env.unset("RANK");
  EXPECT_FALSE(cs::DistributedOptions::from_environment(60).distributed());
  env.set_run({"4", "3", "1", "2", "10.0.0.1", "29400"});
  const auto o = cs::DistributedOptions::from_environment(60);
  EXPECT_EQ(o.rank, 3);
  EXPECT_EQ(o.world_size, 4);
  EXPECT_EQ(o.local_rank, 1);
  EXPECT_EQ(o.local_world_size, 2);
  EXPECT_EQ(o.master_addr, "10.0.0.1");
  EXPECT_EQ(o.master_port, 29400);
  EXPECT_EQ(o.timeout_s, 60);
}

TEST(DistributedOptions, NamesTheVariableAtFault) {
  Environment env;
  env.set_run({"2", "0", "0", "2", "127.0.0.1", "29400"});
  auto message = [] {
    try {
      cs::DistributedOptions::from_environment(60);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(message(), "");
  env.set("RANK", "2");
  EXPECT_NE(message().find("RANK must be in [0, 1], got 2"), std::string::npos) << message();
  env.set("RANK", "one");
  EXPECT_NE(message().find("RANK must be an integer, got 'one'"), std::string::npos) << message();
  env.set("RANK", "1");
  env.set("MASTER_PORT", "70000");
  EXPECT_NE(message().find("MASTER_PORT must be in [1, 65535], got 70000"), std::string::npos) << message();
  env.unset("MASTER_PORT");
  EXPECT_NE(message().find("MASTER_PORT is not set"), std::string::npos) << message();
  env.set("MASTER_PORT", "29400");
  env.unset("MASTER_ADDR");
  EXPECT_NE(message().find("MASTER_ADDR is not set"), std::string::npos) << message();
  env.set("MASTER_ADDR", "127.0.0.1");
  env.unset("WORLD_SIZE");
  EXPECT_NE(message().find("RANK is set but WORLD_SIZE is not"), std::string::npos) << message();
}

TEST(ProcessGroup, OneProcessIsAGroupOfOne) {
  cs::ProcessGroup g;
  EXPECT_FALSE(g.distributed());
  EXPECT_TRUE(g.main());
  std::vector<torch::Tensor> t{torch::ones({3})};
  g.all_reduce_sum(t);
  EXPECT_TRUE(t[0].equal(torch::ones({3})));
  EXPECT_EQ(g.broadcast_bytes("abc"), "abc");
  EXPECT_EQ(g.all_gather(torch::ones({2})).size(), 1u);
  g.barrier();
}

TEST(ProcessGroup, CollectivesOverLoopback) {
  with_two_ranks([](const cs::ProcessGroup& g) {
    const double r = static_cast<double>(g.rank());
    std::vector<torch::Tensor> sums{torch::full({5}, r + 1, torch::kFloat32), torch::full({2}, 10 * r, torch::kFloat64)};
    g.all_reduce_sum(sums);
    EXPECT_TRUE(sums[0].equal(torch::full({5}, 3.0f)));
    EXPECT_TRUE(sums[1].equal(torch::full({2}, 10.0, torch::kFloat64)));
    auto b = torch::full({4}, r + 7);
    g.broadcast(b);
    EXPECT_TRUE(b.equal(torch::full({4}, 7.0f)));
    const auto all = g.all_gather(torch::full({2, 3}, r, torch::kInt64));
    ASSERT_EQ(all.size(), 2u);
    EXPECT_TRUE(all[1].equal(torch::full({2, 3}, 1, torch::kInt64)));
    EXPECT_EQ(g.broadcast_bytes(g.main() ? std::string("rank 0's file\0bytes", 19) : ""),
              std::string("rank 0's file\0bytes", 19));
    EXPECT_TRUE(g.broadcast_flag(g.main()));
    // Rows of a [layers, batch, hidden] state: 5 streams split 3 + 2, put back.
    const auto full = torch::arange(2 * 5 * 3, torch::kFloat32).reshape({2, 5, 3});
    const auto part = cs::shard_rows(full, 1, g);
    EXPECT_EQ(part.size(1), g.main() ? 3 : 2);
    EXPECT_TRUE(cs::gather_rows(part.contiguous(), 1, 5, g).equal(full));
    g.barrier();
  });
}

/// Both exchanges (one flat all-reduce after the backward pass; c10d's
/// Reducer with buckets so small that every parameter is one) sum the
/// gradients and the scalars, and leave a parameter no rank reached undefined.
class GradientExchangeKinds : public ::testing::TestWithParam<double> {};

TEST_P(GradientExchangeKinds, SumGradientsAndScalarsAndKeepUnreachedParametersUndefined) {
  const double bucket_mb = GetParam();
  with_two_ranks([bucket_mb](const cs::ProcessGroup& g) {
    auto a = torch::zeros({2, 3}, torch::requires_grad());
    auto b = torch::zeros({4}, torch::requires_grad());
    auto c = torch::zeros({1}, torch::requires_grad());  // no rank reaches it
    cs::GradientExchangeOptions o;
    o.bucket_mb = bucket_mb;
    cs::GradientExchange exchange(g, {a, b, c}, o);
    for (int step = 1; step <= 3; ++step) {  // the Reducer's state carries over steps
      for (auto* p : {&a, &b})
        if (p->grad().defined()) p->mutable_grad().zero_();
      // Rank 0 reaches a and b, rank 1 only a.
      auto loss = (a * (g.rank() + 1.0) * step).sum();
      if (g.main()) loss = loss + (b * torch::arange(4, torch::kFloat32)).sum();
      std::vector<double> scalars = {0.25 * static_cast<double>(g.rank() + 1), 3};
      exchange.backward(loss, scalars);
      EXPECT_TRUE(a.grad().allclose(torch::full({2, 3}, 3.0f * static_cast<float>(step)))) << a.grad();
      ASSERT_TRUE(b.grad().defined());  // defined on rank 1 too: rank 0 gave one
      EXPECT_TRUE(b.grad().allclose(torch::arange(4, torch::kFloat32))) << b.grad();
      EXPECT_FALSE(c.grad().defined());
      EXPECT_DOUBLE_EQ(scalars[0], 0.75);
      EXPECT_DOUBLE_EQ(scalars[1], 6);
      EXPECT_EQ(exchange.calls(), step);
    }
    // A rank whose shard is empty has nothing to back-propagate: zeros.
    a.mutable_grad().zero_();
    b.mutable_grad().zero_();
    std::vector<double> scalars = {1, 1};
    exchange.backward(g.main() ? (a * 2).sum() : torch::Tensor(), scalars);
    EXPECT_TRUE(a.grad().allclose(torch::full({2, 3}, 2.0f))) << a.grad();
    EXPECT_TRUE(b.grad().allclose(torch::zeros({4}))) << b.grad();
    EXPECT_DOUBLE_EQ(scalars[0], 2);
  });
}

INSTANTIATE_TEST_SUITE_P(FlatAndReducer, GradientExchangeKinds, ::testing::Values(0.0, 1e-6),
                         [](const ::testing::TestParamInfo<double>& info) {
                           return info.param == 0 ? std::string("Flat") : std::string("Reducer");
                         });

/// Rank 0 of a group whose rank 1 met it and then left (its connections closed).
cs::ProcessGroup group_whose_other_rank_left() {
  const int port = free_port();
  auto rank1 = std::async(std::launch::async, [&] {
    cs::ProcessGroup g(rank_options(1, 2, port, 10));
    g.barrier();
    // The group (and its connections) goes away with this scope.
  });
  cs::ProcessGroup g(rank_options(0, 2, port, 10));
  g.barrier();
  rank1.get();
  return g;
}

TEST(GradientExchange, AnotherRankGoneDuringTheOverlappedBackwardIsAnError) {
  const cs::ProcessGroup g = group_whose_other_rank_left();
  auto a = torch::ones({3}, torch::requires_grad());
  cs::GradientExchangeOptions o;
  o.bucket_mb = 25;
  cs::GradientExchange exchange(g, {a}, o);
  std::vector<double> scalars = {1};
  try {
    exchange.backward(a.sum(), scalars);
    FAIL() << "an exchange without the other rank succeeded";
  } catch (const cs::DistributedError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 0 of 2: the gradient exchange failed"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
  }
}

TEST(ProcessGroup, NoRankAtTheAddressIsAnErrorWithinTheTimeout) {
  const int port = free_port();  // nobody listens there
  const auto started = std::chrono::steady_clock::now();
  try {
    cs::ProcessGroup g(rank_options(1, 2, port, 2));
    FAIL() << "joined a group nobody hosts";
  } catch (const cs::DistributedError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("rank 1 of 2: cannot meet the other ranks at 127.0.0.1:" + std::to_string(port)),
              std::string::npos)
        << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(), 30);
}

TEST(ProcessGroup, ARankThatLeavesFailsTheOthersCollectiveWithAnError) {
  const cs::ProcessGroup g = group_whose_other_rank_left();
  const auto started = std::chrono::steady_clock::now();
  std::vector<torch::Tensor> t{torch::ones({8})};
  try {
    g.all_reduce_sum(t);
    FAIL() << "an all-reduce without the other rank succeeded";
  } catch (const cs::DistributedError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 0 of 2: the all-reduce failed"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(), 30);
}
