// cellstate_compare_weights A B [TOLERANCE [PREFIX]]: compares two weight
// files tensor by tensor (the same names, shapes, and values within
// TOLERANCE, default 1e-5, absolute; with PREFIX, only the tensors whose
// names start with it, which must exist). A file is a weights.pt (save_weights) or a
// checkpoint (its "model" part). Prints the largest difference; exit 0 when
// they match, 1 when not, 2 on a bad argument or unreadable file.
#include <torch/serialize.h>
#include <torch/torch.h>

#include <cstdlib>
#include <iostream>
#include <map>
#include <string>

namespace {

/// Every tensor under `archive`, its submodules' by dotted names.
void collect(torch::serialize::InputArchive& archive, const std::string& prefix,
             std::map<std::string, torch::Tensor>& out) {
  for (const auto& key : archive.keys()) {
    torch::Tensor t;
    torch::serialize::InputArchive child;
    if (archive.try_read(key, t) || archive.try_read(key, t, true)) out[prefix + key] = t.to(torch::kFloat64);
    else if (archive.try_read(key, child)) collect(child, prefix + key + ".", out);
  }
}

std::map<std::string, torch::Tensor> read_tensors(const std::string& path) {
  torch::serialize::InputArchive root;
  root.load_from(path);
  torch::serialize::InputArchive model;
  const bool checkpoint = root.try_read("model", model);
  auto& archive = checkpoint ? model : root;
  std::map<std::string, torch::Tensor> out;
  collect(archive, "", out);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 5) {
    std::cerr << "usage: cellstate_compare_weights A B [TOLERANCE [PREFIX]]\n";
    return 2;
  }
  const double tolerance = argc >= 4 ? std::atof(argv[3]) : 1e-5;
  const std::string prefix = argc == 5 ? argv[4] : "";
  std::map<std::string, torch::Tensor> a, b;
  try {
    a = read_tensors(argv[1]);
    b = read_tensors(argv[2]);
  } catch (const std::exception& e) {
    std::cerr << "cellstate_compare_weights: " << std::string(e.what()).substr(0, 200) << "\n";
    return 2;
  }
  if (!prefix.empty()) {
    auto keep = [&](std::map<std::string, torch::Tensor>& m) {
      for (auto it = m.begin(); it != m.end();) it = it->first.compare(0, prefix.size(), prefix) == 0 ? std::next(it) : m.erase(it);
    };
    keep(a);
    keep(b);
  }
  if (a.empty()) {
    std::cerr << "cellstate_compare_weights: " << argv[1] << " holds no tensors" << (prefix.empty() ? "" : " named " + prefix + "*") << "\n";
    return 2;
  }
  double worst = 0;
  std::string worst_name;
  for (const auto& [name, t] : a) {
    const auto it = b.find(name);
    if (it == b.end() || !it->second.sizes().equals(t.sizes())) {
      std::cout << name << ": missing or of another shape in " << argv[2] << "\n";
      return 1;
    }
    const double d = t.numel() ? (t - it->second).abs().max().item<double>() : 0.0;
    if (d > worst || worst_name.empty()) worst = d, worst_name = name;
  }
  if (a.size() != b.size()) {
    std::cout << argv[2] << " holds " << b.size() << " tensors, " << argv[1] << " " << a.size() << "\n";
    return 1;
  }
  std::cout << a.size() << " tensors; largest difference " << worst << " (" << worst_name << "), tolerance "
            << tolerance << "\n";
  return worst <= tolerance ? 0 : 1;
}
