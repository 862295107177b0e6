// The shared option groups on the command line (cli/options.h, cli/cli.h).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>

#include "cellstate/cli/cli.h"
#include "cellstate/cli/options.h"
#include "cellstate/util/io.h"
#include "test_util.h"

namespace cs = cellstate;
namespace po = boost::program_options;
using cellstate::testing::exception_of;

TEST(Options, ConfigFileAndCommandLineWins) {
  cs::ModelOptions model;
  cs::TrainingOptions training;
  cs::RuntimeOptions runtime;
  std::string config;
  po::options_description desc("test");
  desc.add_options()("help", "help")("config", po::value(&config), "json");
  cs::add_model_options(desc, model);
  cs::add_training_options(desc, training);
  cs::add_runtime_options(desc, runtime);
  cs::TempDir dir;
  std::ofstream(dir.file("c.json")) << R"({"hidden": 99, "lr": 0.5, "bidirectional": true,
                                          "quiet": true, "model": "from-config"})";
  const std::string cfg = "--config=" + dir.file("c.json");
  const char* argv[] = {"prog", cfg.c_str(), "--lr", "0.25", "--layers", "3"};
  auto status = cs::parse_command_line(6, const_cast<char**>(argv), desc, "prog",
                                       [&] { model.validate(); training.validate(); });
  EXPECT_FALSE(status.has_value());
  EXPECT_EQ(model.hidden, 99);
  EXPECT_EQ(model.layers, 3);
  EXPECT_TRUE(model.bidirectional);
  EXPECT_EQ(model.dir, "from-config");
  EXPECT_DOUBLE_EQ(training.lr, 0.25);  // the command line wins
  EXPECT_TRUE(runtime.quiet);
  EXPECT_NE(exception_of([&] { cs::config_to_arguments(R"({"hiden": 3})", "c.json", desc); })
                .find("c.json: unknown option \"hiden\""),
            std::string::npos);
  EXPECT_THROW(cs::parse_optimizer("adagrad"), std::invalid_argument);
  model.dropout = 1.5;
  EXPECT_THROW(model.validate(), std::invalid_argument);
}

TEST(Options, BadUsageExitsTwo) {
  cs::TrainingOptions training;
  po::options_description desc("test");
  desc.add_options()("help", "help");
  cs::add_training_options(desc, training);
  const char* argv[] = {"prog", "--epochs", "zero"};
  EXPECT_EQ(cs::parse_command_line(3, const_cast<char**>(argv), desc, "prog"), std::optional<int>(2));
  const char* argv2[] = {"prog", "--epochs", "0"};
  EXPECT_EQ(cs::parse_command_line(3, const_cast<char**>(argv2), desc, "prog", [&] { training.validate(); }),
            std::optional<int>(2));
  EXPECT_EQ(cs::run_guarded("p", [] () -> int { throw cs::InputError("f", 3, "bad"); }), 2);
  EXPECT_EQ(cs::run_guarded("p", [] () -> int { throw std::runtime_error("boom"); }), 1);
}
