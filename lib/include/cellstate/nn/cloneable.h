#pragma once
// torch::nn::Cloneable for modules that reach torch::nn::Module through a
// base class of their own (torch's Cloneable<D> derives from Module
// directly): the recurrent layers share RecurrentModuleImpl, the cells
// CellBaseImpl. clone() gives a module of the same type and options whose
// parameters and buffers are copies (no shared storage), and such a module
// can be a submodule of a model that torch::nn::Cloneable clones.

#include <torch/nn/module.h>

#include <memory>
#include <string>

namespace cellstate {

template <typename Derived, typename Base>
class CloneableFrom : public Base {
 public:
  using Base::Base;

  /// A new Derived built from this module's `options` (so reset() registers
  /// and initialises everything), then every parameter and buffer, of this
  /// module and its submodules, copied into it by name.
  std::shared_ptr<torch::nn::Module> clone(
      const c10::optional<torch::Device>& device = c10::nullopt) const override {
    torch::NoGradGuard no_grad;
    auto copy = std::make_shared<Derived>(static_cast<const Derived&>(*this).options);
    copy_tensors(this->named_parameters(), copy->named_parameters(), device, "parameter");
    copy_tensors(this->named_buffers(), copy->named_buffers(), device, "buffer");
    return copy;
  }

 private:
  static void copy_tensors(const torch::OrderedDict<std::string, torch::Tensor>& from,
                           torch::OrderedDict<std::string, torch::Tensor> to,
                           const c10::optional<torch::Device>& device, const char* what) {
    TORCH_CHECK(from.size() == to.size(), "clone: the copy has ", to.size(), " ", what, "s, expected ", from.size());
    for (const auto& item : from) {
      auto* target = to.find(item.key());
      TORCH_CHECK(target != nullptr, "clone: the copy has no ", what, " ", item.key());
      const auto& t = item.value();
      if (!t.defined()) continue;
      target->set_data(device && t.device() != *device ? t.to(*device) : t.detach().clone());
    }
  }

  // A submodule of a torch::nn::Cloneable model is cloned through this.
  void clone_(torch::nn::Module& other, const c10::optional<torch::Device>& device) override {
    auto clone = std::dynamic_pointer_cast<Derived>(other.clone(device));
    TORCH_CHECK(clone != nullptr, "clone_: expected a ", this->name(), " to clone from");
    static_cast<Derived&>(*this) = *clone;
  }
};

}  // namespace cellstate
