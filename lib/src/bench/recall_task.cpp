#include "cellstate/bench/recall_task.h"

namespace cellstate {

double train_recall_task(const RecallTaskOptions& o) {
  TORCH_CHECK(o.steps > 0 && o.classes > 1 && o.distractors > 0 && o.hidden > 0 && o.batch > 0 &&
                  o.iterations > 0,
              "recall task: sizes and iterations must be positive (classes at least 2)");
  torch::manual_seed(o.seed);
  auto gen = at::detail::createCPUGenerator(o.seed + 1);
  const int64_t vocab = o.classes + o.distractors;
  auto sample = [&] {
    auto tokens = torch::randint(o.classes, vocab, {o.steps, o.batch}, gen, torch::kLong);
    tokens[0] = torch::randint(o.classes, {o.batch}, gen, torch::kLong);
    return std::make_pair(torch::one_hot(tokens, vocab).to(torch::kFloat), tokens[0]);
  };
  auto rnn = make_recurrent(
      RecurrentOptions(vocab, o.hidden).kind(o.kind).impl(o.impl).forget_bias(o.forget_bias));
  torch::nn::Linear head(o.hidden, o.classes);
  auto params = rnn->parameters();
  for (auto& p : head->parameters()) params.push_back(p);
  torch::optim::Adam opt(params, torch::optim::AdamOptions(o.lr));
  for (int it = 1; it <= o.iterations; ++it) {
    auto [x, y] = sample();
    auto loss = torch::cross_entropy_loss(head(rnn->forward(x).state.h[0]), y);
    opt.zero_grad();
    loss.backward();
    torch::nn::utils::clip_grad_norm_(params, 1.0);
    opt.step();
    if (o.progress && it % 100 == 0) o.progress(it, loss.item<double>());
  }
  torch::NoGradGuard no_grad;
  double correct = 0;
  const int batches = static_cast<int>((512 + o.batch - 1) / o.batch);
  for (int k = 0; k < batches; ++k) {
    auto [x, y] = sample();
    correct += head(rnn->forward(x).state.h[0]).argmax(1).eq(y).sum().item<double>();
  }
  return correct / static_cast<double>(batches * o.batch);
}

}  // namespace cellstate
