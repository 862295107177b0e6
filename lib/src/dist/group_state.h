#pragma once
// ProcessGroup's c10d objects, shared by the dist/ sources (and by no one
// else: c10d's headers stay out of the library's interface).

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdint>
#include <exception>
#include <string>

#include "cellstate/dist/process_group.h"

namespace cellstate {

struct ProcessGroup::State {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
  int64_t sequence = 0;  // broadcast_bytes calls, for unique keys
};

namespace dist_detail {

/// The first line of an exception's message, without LibTorch's backtrace
/// (at most 300 characters).
std::string first_line(const std::exception& e);

}  // namespace dist_detail

}  // namespace cellstate
