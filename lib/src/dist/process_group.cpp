#include "cellstate/dist/process_group.h"

#include <glog/logging.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <limits>

#include "cellstate/util/io.h"
#include "group_state.h"

namespace cellstate {

namespace {


/// An environment variable as an integer in [lo, hi]; `fallback` when unset.
int64_t env_integer(const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const char* text = std::getenv(name);
  if (!text) return fallback;
  const std::string s(text);
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (s.empty() || used != s.size())
    throw std::invalid_argument(std::string(name) + " must be an integer, got '" + s + "'");
  if (v < lo || v > hi)
    throw std::invalid_argument(std::string(name) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                "], got " + s);
  return v;
}

using dist_detail::first_line;


/// c10d logs each failed connection attempt through glog on stderr; the
/// rendezvous reports its failure itself, in one line, so those are quiet
/// while it runs (only glog's fatal messages pass).
class QuietGlog {
 public:
  QuietGlog() : saved_(FLAGS_minloglevel) { FLAGS_minloglevel = google::GLOG_FATAL; }
  ~QuietGlog() { FLAGS_minloglevel = saved_; }
  QuietGlog(const QuietGlog&) = delete;
  QuietGlog& operator=(const QuietGlog&) = delete;

 private:
  int saved_;
};

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

}  // namespace

DistributedOptions DistributedOptions::from_environment(double timeout_s) {
  DistributedOptions o;
  o.timeout_s = timeout_s;
  constexpr int64_t kMaxRanks = 1 << 16;
  if (!std::getenv("WORLD_SIZE")) {
    if (std::getenv("RANK")) throw std::invalid_argument("RANK is set but WORLD_SIZE is not");
    return o;
  }
  o.world_size = env_integer("WORLD_SIZE", 1, 1, kMaxRanks);
  if (o.world_size > 1 && !std::getenv("RANK")) throw std::invalid_argument("WORLD_SIZE is set but RANK is not");
  o.rank = env_integer("RANK", 0, 0, o.world_size - 1);
  o.local_rank = env_integer("LOCAL_RANK", o.rank, 0, o.world_size - 1);
  o.local_world_size = env_integer("LOCAL_WORLD_SIZE", std::getenv("LOCAL_RANK") ? 1 : o.world_size, 1, o.world_size);
  if (o.world_size > 1) {
    const char* addr = std::getenv("MASTER_ADDR");
    if (!addr || !*addr) throw std::invalid_argument("MASTER_ADDR is not set (rank 0's host name or address)");
    o.master_addr = addr;
    if (!std::getenv("MASTER_PORT")) throw std::invalid_argument("MASTER_PORT is not set (the port rank 0 listens on)");
    o.master_port = env_integer("MASTER_PORT", 0, 1, 65535);
  }
  o.validate();
  return o;
}

void DistributedOptions::validate() const {
  if (world_size < 1) throw std::invalid_argument("WORLD_SIZE must be >= 1, got " + std::to_string(world_size));
  if (rank < 0 || rank >= world_size)
    throw std::invalid_argument("RANK must be in [0, " + std::to_string(world_size - 1) + "], got " + std::to_string(rank));
  if (local_rank < 0 || local_rank >= local_world_size)
    throw std::invalid_argument("LOCAL_RANK must be in [0, LOCAL_WORLD_SIZE - 1 = " +
                                std::to_string(local_world_size - 1) + "], got " + std::to_string(local_rank));
  if (master_port < 1 || master_port > 65535)
    throw std::invalid_argument("MASTER_PORT must be in [1, 65535], got " + std::to_string(master_port));
  if (!(timeout_s > 0 && timeout_s <= 86400))
    throw std::invalid_argument("--dist-timeout must be in (0, 86400] seconds, got " + std::to_string(timeout_s));
}

ShardRange shard_range(int64_t n, int64_t rank, int64_t shards) {
  TORCH_CHECK(shards >= 1 && rank >= 0 && rank < shards && n >= 0, "shard_range: expected 0 <= rank < shards, got rank ",
              rank, " of ", shards);
  const int64_t base = n / shards, extra = n % shards;
  ShardRange r;
  r.begin = rank * base + std::min(rank, extra);
  r.end = r.begin + base + (rank < extra ? 1 : 0);
  return r;
}

namespace dist_detail {

std::string first_line(const std::exception& e) {
  std::string what;
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) what = c->what_without_backtrace();
  else what = e.what();
  what = what.substr(0, what.find('\n'));
  if (what.size() > 300) what = what.substr(0, 300) + "...";
  return what;
}

}  // namespace dist_detail

ProcessGroup::ProcessGroup(const DistributedOptions& options) : options_(options) {
  options_.validate();
  if (!options_.distributed()) return;
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(options_.timeout_s * 1000));
  const std::string where = options_.master_addr + ":" + std::to_string(options_.master_port);
  auto state = std::make_shared<State>();
  const QuietGlog quiet;
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(options_.master_port);
    so.isServer = options_.rank == 0;
    so.numWorkers = static_cast<size_t>(options_.world_size);
    so.waitWorkers = true;
    so.timeout = timeout;
    state->store = c10::make_intrusive<c10d::TCPStore>(options_.master_addr, so);
  } catch (const std::exception& e) {
    throw DistributedError(name() + ": cannot meet the other ranks at " + where + " (MASTER_ADDR:MASTER_PORT) within " +
                           std::to_string(static_cast<int64_t>(options_.timeout_s)) + " s: " + first_line(e));
  }
  try {
    auto go = c10d::ProcessGroupGloo::Options::create(timeout);
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"))
      go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (is_loopback(options_.master_addr))
      go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      go->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    go->threads = 2;
    state->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(state->store, static_cast<int>(options_.rank),
                                                             static_cast<int>(options_.world_size), go);
  } catch (const std::exception& e) {
    throw DistributedError(name() + ": cannot connect to the other ranks (rendezvous at " + where + "): " +
                           first_line(e));
  }
  state_ = std::move(state);
}

std::string ProcessGroup::name() const {
  return "rank " + std::to_string(options_.rank) + " of " + std::to_string(options_.world_size);
}

namespace {

/// Waits for `work`, turning a failure into a DistributedError.
void wait_for(const ProcessGroup& group, const char* what, const std::function<c10::intrusive_ptr<c10d::Work>()>& start) {
  try {
    start()->wait();
  } catch (const std::exception& e) {
    throw DistributedError(group.name() + ": " + what +
                           " failed (another rank stopped, the network failed, or --dist-timeout passed): " +
                           first_line(e));
  }
}

}  // namespace

void ProcessGroup::all_reduce_sum(std::vector<torch::Tensor>& tensors) const {
  if (!state_) return;
  for (auto& t : tensors) {
    TORCH_CHECK(t.is_contiguous(), "all_reduce_sum: expected contiguous tensors");
    std::vector<torch::Tensor> one{t};
    wait_for(*this, "the all-reduce", [&] { return state_->gloo->allreduce(one); });
  }
}

void ProcessGroup::broadcast(torch::Tensor& tensor, int64_t root) const {
  if (!state_) return;
  TORCH_CHECK(tensor.is_contiguous(), "broadcast: expected a contiguous tensor");
  std::vector<torch::Tensor> one{tensor};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  wait_for(*this, "the broadcast", [&] { return state_->gloo->broadcast(one, o); });
}

std::vector<torch::Tensor> ProcessGroup::all_gather(const torch::Tensor& tensor) const {
  if (!state_) return {tensor};
  auto input = tensor.contiguous();
  std::vector<std::vector<torch::Tensor>> outputs(1);
  for (int64_t r = 0; r < size(); ++r) outputs[0].push_back(torch::empty_like(input));
  std::vector<torch::Tensor> inputs{input};
  wait_for(*this, "the all-gather", [&] { return state_->gloo->allgather(outputs, inputs); });
  return outputs[0];
}

std::string ProcessGroup::broadcast_bytes(const std::string& bytes) const {
  if (!state_) return bytes;
  const std::string key = "cellstate/bytes/" + std::to_string(state_->sequence++);
  std::string out = bytes;
  try {
    if (main()) {
      state_->store->set(key, std::vector<uint8_t>(bytes.begin(), bytes.end()));
    } else {
      const auto v = state_->store->get(key);
      out.assign(v.begin(), v.end());
    }
  } catch (const std::exception& e) {
    throw DistributedError(name() + ": receiving rank 0's data failed (another rank stopped, the network failed, or "
                           "--dist-timeout passed): " + first_line(e));
  }
  barrier();
  if (main()) {
    try {
      state_->store->deleteKey(key);
    } catch (const std::exception&) {
      // only memory on the store
    }
  }
  return out;
}

bool ProcessGroup::broadcast_flag(bool value) const {
  if (!state_) return value;
  auto t = torch::tensor({static_cast<int64_t>(value)}, torch::kInt64);
  broadcast(t);
  return t.item<int64_t>() != 0;
}

void ProcessGroup::barrier() const {
  if (!state_) return;
  wait_for(*this, "the barrier", [&] { return state_->gloo->barrier(); });
}

void share_file(const ProcessGroup& group, const std::string& path) {
  if (!group.distributed()) return;
  const std::string bytes = group.broadcast_bytes(group.main() ? read_file(path) : std::string());
  if (!group.main()) atomic_write(path, bytes);
}

torch::Tensor shard_rows(const torch::Tensor& full, int64_t dim, const ProcessGroup& group) {
  const auto r = shard_range(full.size(dim), group.rank(), group.size());
  return full.narrow(dim, r.begin, r.size());
}

torch::Tensor gather_rows(const torch::Tensor& part, int64_t dim, int64_t n, const ProcessGroup& group) {
  if (!group.distributed()) return part;
  const auto mine = shard_range(n, group.rank(), group.size());
  TORCH_CHECK(part.size(dim) == mine.size(), "gather_rows: expected ", mine.size(), " rows along dimension ", dim,
              ", got ", part.size(dim));
  const int64_t most = shard_range(n, 0, group.size()).size();
  auto sizes = part.sizes().vec();
  sizes[static_cast<size_t>(dim)] = most;
  auto padded = torch::zeros(sizes, part.options());
  padded.narrow(dim, 0, mine.size()).copy_(part);
  const auto parts = group.all_gather(padded);
  std::vector<torch::Tensor> pieces;
  for (int64_t r = 0; r < group.size(); ++r)
    pieces.push_back(parts[static_cast<size_t>(r)].narrow(dim, 0, shard_range(n, r, group.size()).size()));
  return torch::cat(pieces, dim);
}

}  // namespace cellstate
