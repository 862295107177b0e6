#pragma once
// Debian's libtorch-dev 1.13 ships c10d/reducer.hpp but not this header,
// which reducer.hpp includes (pytorch/pytorch#88006; distributed autograd,
// an RPC feature cellstate does not use, is left out of the package). The
// Reducer's declaration needs only these two names of it, declared here as
// upstream 1.13 declares them (reducer.hpp static_asserts that GradCallback
// is its own type). The directory is searched after the system's
// (-idirafter), so a package that ships the real header wins; and only
// gradient_exchange.cpp sees it.

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>

namespace torch {
namespace distributed {
namespace autograd {

class DistAutogradContext {
 public:
  using GradCallback = std::function<bool(at::Tensor&)>;
};
using ContextPtr = std::shared_ptr<DistAutogradContext>;

}  // namespace autograd
}  // namespace distributed
}  // namespace torch
