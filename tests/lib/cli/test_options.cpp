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

namespace {

/// parse_command_line over `args` (after a program name), with stderr captured.
std::optional<int> parse(const std::vector<std::string>& args, const po::options_description& desc,
                         const cs::CommandSpec& spec, std::string* err = nullptr) {
  std::vector<const char*> argv{"prog"};
  for (const auto& a : args) argv.push_back(a.c_str());
  ::testing::internal::CaptureStderr();
  auto status = cs::parse_command_line(static_cast<int>(argv.size()), const_cast<char**>(argv.data()), desc, "prog",
                                       {}, spec);
  const std::string captured = ::testing::internal::GetCapturedStderr();
  if (err != nullptr) *err = captured;
  return status;
}

}  // namespace

TEST(Options, FlagsAreXAndNoX) {
  bool tie = true, half = false;
  std::string config;
  po::options_description desc("test");
  cs::add_help_and_config(desc, config);
  cs::add_flag(desc, "tie", &tie, "tie");
  cs::add_flag(desc, "half", &half, "half");
  EXPECT_FALSE(parse({"--no-tie", "--half"}, desc, {}).has_value());
  EXPECT_FALSE(tie);
  EXPECT_TRUE(half);

  // The old spelling --x=false still works, with a warning naming --no-x.
  tie = true;
  std::string err;
  EXPECT_FALSE(parse({"--tie=false"}, desc, {}, &err).has_value());
  EXPECT_FALSE(tie);
  EXPECT_NE(err.find("--tie=false is deprecated: write --no-tie"), std::string::npos) << err;
  EXPECT_EQ(parse({"--tie=maybe"}, desc, {}, &err), std::optional<int>(2));
  EXPECT_NE(err.find("--tie takes no value"), std::string::npos) << err;

  // Both at once is a contradiction, not "the last one wins".
  EXPECT_EQ(parse({"--tie", "--no-tie"}, desc, {}, &err), std::optional<int>(2));
  EXPECT_NE(err.find("--tie and --no-tie contradict each other"), std::string::npos) << err;

  // A config file's false is --no-x.
  cs::TempDir dir;
  std::ofstream(dir.file("c.json")) << R"({"tie": false, "half": true})";
  tie = true;
  half = false;
  EXPECT_FALSE(parse({"--config", dir.file("c.json")}, desc, {}).has_value());
  EXPECT_FALSE(tie);
  EXPECT_TRUE(half);
}

TEST(Options, RenamedSpellingsAndPositionalFiles) {
  std::string format = "tsv", config;
  int64_t top_k = 0;
  bool sample = false;
  std::vector<std::string> files;
  po::options_description desc("test");
  cs::add_help_and_config(desc, config);
  desc.add_options()("input-format", po::value(&format), "format")("top-k", po::value(&top_k), "k");
  cs::add_flag(desc, "sample", &sample, "sample");
  const cs::CommandSpec spec{&files, {{"format", "input-format"}, {"sample-topk", "top-k", {"--sample"}}, {"inputs", "files"}}};
  std::string err;
  EXPECT_FALSE(parse({"a.txt", "--format=sst", "--sample-topk", "5", "--inputs", "b.txt", "c.txt"}, desc, spec, &err)
                   .has_value());
  EXPECT_EQ(format, "sst");
  EXPECT_EQ(top_k, 5);
  EXPECT_TRUE(sample);
  EXPECT_EQ(files, (std::vector<std::string>{"a.txt", "b.txt", "c.txt"}));
  EXPECT_NE(err.find("--format is deprecated: write --input-format"), std::string::npos) << err;
  EXPECT_NE(err.find("--sample-topk is deprecated: write --top-k --sample"), std::string::npos) << err;

  // A renamed key in a config file is read under its new name, with the warning.
  cs::TempDir dir;
  std::ofstream(dir.file("c.json")) << R"({"format": "dir"})";
  format = "tsv";
  files.clear();
  EXPECT_FALSE(parse({"--config", dir.file("c.json")}, desc, spec, &err).has_value());
  EXPECT_EQ(format, "dir");
  EXPECT_NE(err.find("--format is deprecated"), std::string::npos) << err;

  // "--" ends the options: what follows is a file even if it looks like one.
  files.clear();
  EXPECT_FALSE(parse({"--", "--format"}, desc, spec).has_value());
  EXPECT_EQ(files, (std::vector<std::string>{"--format"}));
}

TEST(Options, CommandLineFlagWinsOverConfigFile) {
  bool tie = false;
  std::string config;
  po::options_description desc("test");
  cs::add_help_and_config(desc, config);
  cs::add_flag(desc, "tie", &tie, "tie");
  cs::TempDir dir;
  std::ofstream(dir.file("c.json")) << R"({"tie": false})";
  EXPECT_FALSE(parse({"--config", dir.file("c.json"), "--tie"}, desc, {}).has_value());
  EXPECT_TRUE(tie);
  std::ofstream(dir.file("d.json")) << R"({"tie": true})";
  EXPECT_FALSE(parse({"--config", dir.file("d.json"), "--no-tie"}, desc, {}).has_value());
  EXPECT_FALSE(tie);
}

TEST(Options, InheritedOptionsFillDefaultsAndRefuseMisfits) {
  cs::ModelOptions model;
  cs::TrainingOptions training;
  po::options_description desc("test");
  desc.add_options()("help", "help");
  cs::add_model_options(desc, model);
  cs::add_training_options(desc, training);
  cs::CommandSpec spec;
  spec.inherit_option = "init-from";
  std::string asked;
  spec.inherit = [&](const std::string& value) {
    asked = value;
    cs::InheritedOptions o;
    o.fixed = {{"hidden", 64}, {"bidirectional", true}};
    o.defaults = {{"lr", 0.0001}, {"epochs", 10}};
    o.source = "the model --init-from " + value + " starts from";
    return o;
  };
  auto parse = [&](std::vector<const char*> args) {
    model = {};
    training = {};
    args.insert(args.begin(), "prog");
    return cs::parse_command_line(static_cast<int>(args.size()), const_cast<char**>(args.data()), desc, "prog", {},
                                  spec);
  };
  // Not fine-tuning: nothing inherited.
  EXPECT_FALSE(parse({"--hidden", "32"}).has_value());
  EXPECT_EQ(model.hidden, 32);
  EXPECT_TRUE(asked.empty());
  // Fine-tuning: fixed values and defaults taken, a given default wins.
  EXPECT_FALSE(parse({"--init-from", "src", "--epochs", "3"}).has_value());
  EXPECT_EQ(asked, "src");
  EXPECT_EQ(model.hidden, 64);
  EXPECT_TRUE(model.bidirectional);
  EXPECT_DOUBLE_EQ(training.lr, 0.0001);
  EXPECT_EQ(training.epochs, 3);
  // A fixed value given alike is fine; given differently it is bad usage.
  EXPECT_FALSE(parse({"--init-from", "src", "--hidden", "64", "--bidirectional"}).has_value());
  EXPECT_EQ(parse({"--init-from", "src", "--hidden", "65"}), std::optional<int>(2));
  EXPECT_EQ(parse({"--init-from", "src", "--no-bidirectional"}), std::optional<int>(2));
}
