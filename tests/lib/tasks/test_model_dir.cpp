// The model directory (tasks/model_dir.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "cellstate/data/batching.h"
#include "cellstate/nn/rnn.h"
#include "cellstate/tasks/model_dir.h"
#include "cellstate/util/io.h"
#include "test_util.h"
#include "tiny_model.h"

namespace cs = cellstate;
using cellstate::testing::exception_of;
using cellstate::testing::Tiny;

TEST(ModelDir, ConfigRoundTripAndChecks) {
  cs::TempDir dir;
  auto config = cs::new_model_config("sentiment");
  config["hidden"] = 64;
  cs::write_model_config(dir.file("m"), config);
  const auto back = cs::read_model_config(dir.file("m"), "sentiment");
  EXPECT_EQ(back["hidden"], 64);
  EXPECT_EQ(back["format_version"], cs::kModelFormatVersion);
  EXPECT_NE(exception_of([&] { cs::read_model_config(dir.file("m"), "ner"); })
                .find("config.json: a 'sentiment' model, expected a 'ner' model"),
            std::string::npos);
  config["format_version"] = 99;
  cs::write_model_config(dir.file("m"), config);
  EXPECT_NE(exception_of([&] { cs::read_model_config(dir.file("m"), "sentiment"); })
                .find("model format version 99, this cellstate reads version 1"),
            std::string::npos);
  cs::atomic_write(dir.file("m/config.json"), "{ not json");
  EXPECT_NE(exception_of([&] { cs::read_model_config(dir.file("m"), "sentiment"); }).find("not valid JSON"),
            std::string::npos);
  EXPECT_NE(exception_of([&] { cs::read_model_config(dir.file("nothing"), "sentiment"); })
                .find("no such model directory"),
            std::string::npos);
  std::filesystem::create_directories(dir.file("empty"));
  EXPECT_NE(exception_of([&] { cs::read_model_config(dir.file("empty"), "sentiment"); })
                .find("empty/config.json: missing file"),
            std::string::npos);
  EXPECT_NE(exception_of([&] { cs::config_get<int>(back, "layers", "c.json"); })
                .find("c.json: config: missing key \"layers\""),
            std::string::npos);
}

TEST(ModelDir, WeightsRoundTripHalfAndMismatch) {
  cs::TempDir dir;
  Tiny a(cs::Implementation::kCustom, 1), b(cs::Implementation::kCustom, 2);
  cs::save_weights(*a, dir.file("w.pt"));
  cs::load_weights(*b, dir.file("w.pt"));
  for (const auto& p : a->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), b->named_parameters()[p.key()]));
  cs::save_weights(*a, dir.file("h.pt"), /*half=*/true);
  EXPECT_LT(std::filesystem::file_size(dir.file("h.pt")), std::filesystem::file_size(dir.file("w.pt")));
  Tiny c(cs::Implementation::kCustom, 3);
  cs::load_weights(*c, dir.file("h.pt"));
  EXPECT_EQ(c->out->weight.dtype(), torch::kFloat32);
  EXPECT_LT((c->out->weight - a->out->weight).abs().max().item<double>(), 1e-3);

  // A model of another size: the error names the tensor and both shapes.
  auto other = cs::make_recurrent(cs::RecurrentOptions(8, 16));
  torch::nn::Module holder;
  holder.register_module("rnn", other);
  cs::save_weights(holder, dir.file("o.pt"));
  auto small = cs::make_recurrent(cs::RecurrentOptions(8, 12));
  torch::nn::Module holder2;
  holder2.register_module("rnn", small);
  EXPECT_NE(exception_of([&] { cs::load_weights(holder2, dir.file("o.pt")); })
                .find("tensor 'rnn.weight_ih_l0' has shape [64, 8], the config expects [48, 8]"),
            std::string::npos);
  EXPECT_NE(exception_of([&] { cs::load_weights(*a, dir.file("o.pt")); }).find("no tensor 'embed.weight'"),
            std::string::npos);
  EXPECT_NE(exception_of([&] { cs::load_weights(*a, dir.file("missing.pt")); }).find("missing weights file"),
            std::string::npos);
  cs::atomic_write(dir.file("junk.pt"), "junk");
  EXPECT_NE(exception_of([&] { cs::load_weights(*a, dir.file("junk.pt")); }).find("not a readable weights file"),
            std::string::npos);
}

TEST(ModelDir, CustomWeightsLoadIntoBuiltinWithSamePredictions) {
  cs::TempDir dir;
  Tiny custom(cs::Implementation::kCustom, 4), builtin(cs::Implementation::kBuiltin, 5);
  cs::save_weights(*custom, dir.file("w.pt"));
  cs::load_weights(*builtin, dir.file("w.pt"));
  custom->eval();
  builtin->eval();
  torch::NoGradGuard g;
  auto batch = cs::pad_batch({{1, 2, 3, 4}, {5, 6}, {7, 8, 9}});
  auto x = custom->forward(batch.ids, batch.lengths), y = builtin->forward(batch.ids, batch.lengths);
  EXPECT_LT((x - y).abs().max().item<double>(), 1e-5);
}
