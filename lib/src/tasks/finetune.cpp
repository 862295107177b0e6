#include "cellstate/tasks/finetune.h"

#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <map>
#include <sstream>

#include "cellstate/tasks/model_dir.h"
#include "cellstate/tasks/model_files.h"
#include "cellstate/util/io.h"
#include "cellstate/util/sha256.h"
#include "cellstate/util/text.h"

namespace cellstate {

InitSource::InitSource(const std::string& task, const std::string& value)
    : dir_(resolve_model_dir(task, value, "--init-from")) {
  if (!is_directory(dir_)) throw InputError(dir_, 0, "--init-from: no such model directory");
  config_ = read_model_config(dir_, task, true);
}

std::string InitSource::description() const { return "the model --init-from " + dir_ + " starts from"; }

nlohmann::json InitSource::record() const {
  nlohmann::json r = {{"dir", dir_}, {"task", config_.value("task", std::string())}};
  const std::string weights = config_.contains("weights") && config_["weights"].is_object()
                                  ? config_["weights"].value("file", std::string("weights.pt"))
                                  : std::string("weights.pt");
  if (file_exists(dir_ + "/" + weights)) r["weights_sha256"] = sha256_file(dir_ + "/" + weights);
  if (config_.contains("results")) r["results"] = config_["results"];
  if (config_.contains("init_from")) r["init_from"] = config_["init_from"];  // a chain of fine-tunings
  return r;
}

std::string InitSource::copy_file(const std::string& name, const std::string& dir, const ProcessGroup& group) const {
  const std::string to = dir + "/" + name;
  if (group.main()) atomic_write(to, read_file(model_file(dir_, name)));
  if (group.distributed()) share_file(group, to);
  return to;
}

InheritedOptions common_inherited_options(const InitSource& source, bool rnn_option, bool bidirectional_option) {
  const auto& c = source.config();
  const std::string file = source.config_file();
  const auto m = config_get<nlohmann::json>(c, "model", file);
  InheritedOptions o;
  o.source = source.description();
  if (rnn_option) o.fixed["rnn"] = config_get<std::string>(m, "rnn", file);
  o.fixed["layers"] = config_get<int64_t>(m, "layers", file);
  o.fixed["hidden"] = config_get<int64_t>(m, "hidden", file);
  o.fixed["embed"] = config_get<int64_t>(m, "embed", file);
  if (bidirectional_option) o.fixed["bidirectional"] = config_get<bool>(m, "bidirectional", file);
  o.defaults["dropout"] = config_get<double>(m, "dropout", file);
  if (m.contains("trained_impl")) o.defaults["impl"] = config_get<std::string>(m, "trained_impl", file);
  const auto t = config_get<nlohmann::json>(c, "training", file);
  // Fine-tuning moves the weights less than training from scratch: half the
  // source's learning rate (chosen on dev among 1/10, 3/10, 1/2 and 1: README
  // "Fine-tuning") and fewer epochs; the model before the first step is
  // evaluated like the others, so a run that only makes it worse keeps it.
  o.defaults["lr"] = config_get<double>(t, "lr", file) / 2;
  o.defaults["epochs"] = 10;
  for (const char* key : {"optimizer", "batch_size", "clip", "weight_decay", "momentum"})
    if (t.contains(key)) {
      std::string option = key;
      std::replace(option.begin(), option.end(), '_', '-');
      o.defaults[option] = t[key];
    }
  if (c.contains("weights") && c["weights"].is_object())
    o.defaults["half"] = c["weights"].value("dtype", std::string("float32")) == "float16";
  return o;
}

void inherit_tokenizer_options(const InitSource& source, InheritedOptions& options) {
  const auto file = source.config_file();
  const auto tok = config_get<nlohmann::json>(source.config(), "tokenizer", file);
  options.fixed["vocab-size"] = config_get<int64_t>(tok, "vocab_size", file);
  options.fixed["spm-type"] = config_get<std::string>(tok, "type", file);
  options.fixed["spm-normalization"] = config_get<std::string>(tok, "normalization", file);
}

std::vector<int64_t> label_mapping(const std::vector<std::string>& source, const std::vector<std::string>& target) {
  std::map<std::string, int64_t> index;
  for (size_t i = 0; i < source.size(); ++i) index[source[i]] = static_cast<int64_t>(i);
  std::vector<int64_t> out;
  for (const auto& name : target) {
    const auto it = index.find(name);
    out.push_back(it == index.end() ? -1 : it->second);
  }
  return out;
}

namespace {

std::string shape_text(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

}  // namespace

void copy_weights(const torch::nn::Module& source, torch::nn::Module& target,
                  const std::vector<LabelledTensor>& labelled, const std::vector<int64_t>& mapping,
                  const std::string& source_file) {
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> from;
  for (const auto& p : source.named_parameters()) from[p.key()] = p.value();
  for (const auto& b : source.named_buffers()) from[b.key()] = b.value();
  auto copy_one = [&](const std::string& name, torch::Tensor to) {
    if (!to.defined()) return;
    const auto it = from.find(name);
    if (it == from.end())
      throw InputError(source_file, 0, "the source model has no tensor " + name + " (a different architecture)");
    const auto& src = it->second;
    const auto label = std::find_if(labelled.begin(), labelled.end(),
                                    [&](const LabelledTensor& l) { return l.name == name; });
    if (label == labelled.end()) {
      if (!src.sizes().equals(to.sizes()))
        throw InputError(source_file, 0, "tensor " + name + " has shape " + shape_text(src) + ", the new model's " +
                                             shape_text(to) + " (a different architecture)");
      to.copy_(src);
      return;
    }
    // The other dimensions must agree; along the label ones, the shared labels' entries move.
    bool fits = src.dim() == to.dim();
    for (int64_t d = 0; fits && d < to.dim(); ++d)
      fits = std::find(label->dims.begin(), label->dims.end(), d) != label->dims.end() || src.size(d) == to.size(d);
    if (!fits)
      throw InputError(source_file, 0, "tensor " + name + " has shape " + shape_text(src) + ", the new model's " +
                                           shape_text(to) + " (a different architecture)");
    TORCH_CHECK(label->dims.size() == 1 || label->dims.size() == 2, "copy_weights: ", name,
                ": expected 1 or 2 label dimensions, got ", label->dims.size());
    std::vector<int64_t> kept, from_index;
    for (size_t i = 0; i < mapping.size(); ++i)
      if (mapping[i] >= 0) {
        kept.push_back(static_cast<int64_t>(i));
        from_index.push_back(mapping[i]);
      }
    if (kept.empty()) return;
    for (const auto d : label->dims)
      TORCH_CHECK(to.size(d) == static_cast<int64_t>(mapping.size()), "copy_weights: ", name, " dimension ", d,
                  " expected ", mapping.size(), " labels, got shape ", to.sizes());
    const auto rows = torch::tensor(kept, torch::kInt64), source_rows = torch::tensor(from_index, torch::kInt64);
    auto value = src.to(to.scalar_type());
    for (const auto d : label->dims) value = value.index_select(d, source_rows);
    if (label->dims.size() == 1) {
      to.index_copy_(label->dims[0], rows, value);
    } else {
      auto part = to.index_select(label->dims[0], rows);
      part.index_copy_(label->dims[1], rows, value);
      to.index_copy_(label->dims[0], rows, part);
    }
  };
  for (auto& p : target.named_parameters()) copy_one(p.key(), p.value());
  for (auto& b : target.named_buffers()) copy_one(b.key(), b.value());
}

void start_from(const InitSource& source, torch::nn::Module& from, const std::string& file, torch::nn::Module& to,
                const std::vector<LabelledTensor>& labelled, const std::vector<int64_t>& mapping) {
  load_weights(from, model_file(source.dir(), file), true);  // read_model_config verified the manifest
  copy_weights(from, to, labelled, mapping, source.config_file());
}

namespace {

std::string strip(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

/// Parameter names of the recurrent stack `prefix` in layer < `layers`.
bool in_lower_layers(const std::string& name, const std::string& prefix, int64_t layers) {
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  for (int64_t l = 0; l < layers; ++l) {
    const std::string tag = "_l" + std::to_string(l);
    const size_t at = name.rfind(tag);
    if (at == std::string::npos) continue;
    const std::string rest = name.substr(at + tag.size());
    if (rest.empty() || rest == "_reverse") return true;
  }
  return false;
}

std::string top_level_names(const torch::nn::Module& module) {
  std::vector<std::string> names;
  for (const auto& p : module.named_parameters()) {
    const std::string top = p.key().substr(0, p.key().find('.'));
    if (std::find(names.begin(), names.end(), top) == names.end()) names.push_back(top);
  }
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

std::string apply_freeze(torch::nn::Module& module, const std::string& spec, const FreezeGroups& groups) {
  if (spec.empty()) return "";
  auto params = module.named_parameters();
  std::vector<char> frozen(params.size(), 0);
  size_t start = 0;
  while (start <= spec.size()) {
    size_t end = spec.find(',', start);
    if (end == std::string::npos) end = spec.size();
    const std::string item = strip(spec.substr(start, end - start));
    start = end + 1;
    if (item.empty()) throw std::invalid_argument("--freeze: an empty item in '" + spec + "'");
    std::function<bool(const std::string&)> match;
    if (item == "embeddings") {
      match = [&](const std::string& name) {
        return std::any_of(groups.embeddings.begin(), groups.embeddings.end(),
                           [&](const std::string& p) { return name.compare(0, p.size(), p) == 0; });
      };
    } else if (item.compare(0, 7, "layers=") == 0) {
      int64_t k = 0;
      try {
        size_t used = 0;
        k = std::stoll(item.substr(7), &used);
        if (used != item.size() - 7) throw std::invalid_argument("");
      } catch (const std::exception&) {
        throw std::invalid_argument("--freeze: '" + item + "' expected layers=K with K a whole number");
      }
      if (k < 1 || k > groups.recurrent_layers)
        throw std::invalid_argument("--freeze " + item + ": the model's encoder has " +
                                    std::to_string(groups.recurrent_layers) + " recurrent layer(s), expected K in [1, " +
                                    std::to_string(groups.recurrent_layers) + "]");
      match = [&, k](const std::string& name) { return in_lower_layers(name, groups.recurrent_prefix, k); };
    } else {
      match = [&](const std::string& name) { return name.compare(0, item.size(), item) == 0; };
    }
    bool any = false;
    for (size_t i = 0; i < params.size(); ++i)
      if (match(params[i].key())) frozen[i] = any = true;
    if (!any)
      throw std::invalid_argument("--freeze " + item + ": no parameter of the model matches (expected embeddings, "
                                  "layers=K or a prefix of a parameter name; the model has " +
                                  top_level_names(module) + ")");
  }
  int64_t tensors = 0, numel = 0, total = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    total += params[i].value().numel();
    if (!frozen[i]) continue;
    params[i].value().set_requires_grad(false);
    ++tensors;
    numel += params[i].value().numel();
  }
  return "--freeze " + spec + ": " + std::to_string(tensors) + " tensors, " + std::to_string(numel) + " of " +
         std::to_string(total) + " parameters fixed";
}

std::string coverage_message(int64_t unknown, int64_t total, const std::string& what, const InitSource& source) {
  const double pct = total > 0 ? 100.0 * static_cast<double>(unknown) / static_cast<double>(total) : 0.0;
  return std::to_string(unknown) + " of " + std::to_string(total) + " " + what + " (" + format_fixed(pct, 2) +
         "%) are unknown to the vocabulary of " + source.dir() + (unknown > 0 ? " (they read as <unk>)" : "");
}

}  // namespace cellstate
