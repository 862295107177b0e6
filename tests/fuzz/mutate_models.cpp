// A mutation fuzzer for loading model directories, which needs LibTorch
// (so it is not a libFuzzer target; see fuzz/). Each run damages one file of
// one of the given model directories -- bytes flipped, cut, inserted or
// repeated, or a config.json value replaced by one of another type or an
// absurd one -- then
//   1. loads it verified: it must be refused with an InputError (exit 2),
//      since a file no longer matches MANIFEST.json;
//   2. loads it with --no-verify and uses it (a short prediction): the
//      outcome must be a result or an exception with a message (an app
//      prints one line), never a crash, a hang or an abort.
// SIGINT or SIGTERM ends the loop after the current run, with the summary.
// A crash ends the process after printing the run, the seed, the damaged
// file and where a copy of the damaged directory was left; `--only RUN` with
// the same seed and directories repeats just that run, and `--keep DIR`
// leaves a copy of each damaged directory there.
//
// A run after which the process's peak memory exceeds --max-rss-mb (default
// 2048) is a failure too: a damaged file must not make a load allocate
// without bound.
//
//   cellstate_mutate_models [--runs N] [--seed S] [--only RUN] [--keep DIR] [--max-rss-mb MB] DIR...
#include <torch/torch.h>

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "cellstate/tasks/model_dir.h"
#include "cellstate/tasks/ner.h"
#include "cellstate/tasks/sentiment.h"
#include "cellstate/tasks/textgen.h"
#include "cellstate/tasks/translate.h"
#include "cellstate/util/io.h"

namespace cs = cellstate;

namespace {

/// What the current run is doing, written before each load so that a crash
/// handler can print it (a fixed buffer: the handler may only write(2)).
char g_current[1024] = "";
/// Set by SIGINT/SIGTERM: stop after the current run and print the summary.
volatile std::sig_atomic_t g_stop = 0;

extern "C" void request_stop(int) { g_stop = 1; }

extern "C" void report_crash(int sig) {
  const char head[] = "\ncellstate_mutate_models: CRASH (signal) in ";
  (void)!write(2, head, sizeof head - 1);
  (void)!write(2, g_current, strnlen(g_current, sizeof g_current));
  (void)!write(2, "\n", 1);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

struct Model {
  std::string dir, task;
  std::map<std::string, std::string> files;  // name -> pristine bytes
};

Model read_model(const std::string& dir) {
  Model m;
  m.dir = dir;
  m.task = nlohmann::json::parse(cs::read_file(dir + "/config.json")).at("task").get<std::string>();
  for (const auto& name : cs::manifest_files(dir)) m.files[name] = cs::read_file(dir + "/" + name);
  return m;
}

/// `bytes` damaged one way, chosen by `rng`.
std::string mutate(std::string bytes, bool json, std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  if (json && rng() % 2 == 0) {
    try {
      auto j = nlohmann::json::parse(bytes);
      std::vector<nlohmann::json*> leaves;
      std::function<void(nlohmann::json&)> walk = [&](nlohmann::json& v) {
        if (v.is_structured()) {
          for (auto& c : v) walk(c);
        } else {
          leaves.push_back(&v);
        }
      };
      walk(j);
      if (!leaves.empty()) {
        static const nlohmann::json kValues[] = {-1, 0, 1, 1e12, -1e300, "x", true, nullptr, nlohmann::json::array(),
                                                 nlohmann::json::object(), 2147483648LL, 0.5};
        *leaves[pick(leaves.size())] = kValues[pick(std::size(kValues))];
        return j.dump();
      }
    } catch (const nlohmann::json::exception&) {
    }
  }
  switch (rng() % 4) {
    case 0:  // flip bytes
      for (int k = 0, n = 1 + static_cast<int>(rng() % 8); k < n && !bytes.empty(); ++k)
        bytes[pick(bytes.size())] ^= static_cast<char>(1 + rng() % 255);
      break;
    case 1:  // cut
      bytes.resize(pick(bytes.size() + 1));
      break;
    case 2:  // insert random bytes
      bytes.insert(pick(bytes.size() + 1), std::string(1 + rng() % 16, static_cast<char>(rng())));
      break;
    default: {  // repeat a chunk
      const size_t at = pick(bytes.size() + 1), n = std::min<size_t>(bytes.size() - at, 1 + rng() % 64);
      bytes.insert(at, bytes.substr(at, n));
    }
  }
  return bytes;
}

/// Loads `dir` as `task` and uses it once.
void load_and_use(const std::string& dir, const std::string& task, bool verify) {
  if (task == "sentiment") {
    auto m = cs::SentimentModel::load(dir, std::nullopt, verify);
    m.probabilities({"a fine film", ""}, 8);
  } else if (task == "ner") {
    auto m = cs::NerModel::load(dir, std::nullopt, verify);
    m.tag({{"John", "lives", "in", "Paris"}}, true, 8);
  } else if (task == "textgen") {
    auto m = cs::TextgenModel::load(dir, std::nullopt, verify);
    cs::GenerateOptions o;
    o.max_tokens = 5;
    cs::generate_text(m, "The", o, 1);
  } else if (task == "translate") {
    auto m = cs::TranslationModel::load(dir, std::nullopt, verify);
    cs::DecodingOptions o;
    o.beam = 2;
    m.translate({"a dog runs ."}, o, 8);
  } else {
    throw std::invalid_argument("unknown task " + task);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int64_t runs = 1000;
  uint64_t seed = 1;
  int64_t only = -1;
  std::string keep;
  int64_t max_rss_mb = 2048;
  std::vector<std::string> dirs;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) runs = std::atoll(argv[++i]);
    else if (a == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--only" && i + 1 < argc) only = std::atoll(argv[++i]);
    else if (a == "--keep" && i + 1 < argc) keep = argv[++i];
    else if (a == "--max-rss-mb" && i + 1 < argc) max_rss_mb = std::atoll(argv[++i]);
    else dirs.push_back(a);
  }
  if (dirs.empty()) {
    std::cerr << "usage: cellstate_mutate_models [--runs N] [--seed S] [--only RUN] [--keep DIR] [--max-rss-mb MB] DIR...\n";
    return 2;
  }
  torch::set_num_threads(1);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) std::signal(sig, report_crash);
  for (int sig : {SIGINT, SIGTERM}) std::signal(sig, request_stop);
  if (only >= 0) runs = only + 1;
  std::vector<Model> models;
  for (const auto& d : dirs) models.push_back(read_model(d));
  const cs::TempDir scratch("cellstate-mutate");
  std::mt19937_64 rng(seed);
  std::map<std::string, int64_t> outcomes;
  std::map<std::string, std::string> examples;  // the first message of each kind of exit 1
  const auto start = std::chrono::steady_clock::now();
  int64_t done = 0;
  for (int64_t run = 0; run < runs; ++run) {
    const Model& m = models[static_cast<size_t>(rng() % models.size())];
    auto it = m.files.begin();
    std::advance(it, static_cast<std::ptrdiff_t>(rng() % m.files.size()));
    const std::string damaged = mutate(it->second, it->first.size() > 5 && it->first.substr(it->first.size() - 5) == ".json", rng);
    if (damaged == it->second || (only >= 0 && run != only)) continue;
    const std::string dir = scratch.file(m.task);
    // A working copy of each model, made once; each run damages one file of
    // it and puts the file back afterwards (loads never write).
    if (!std::filesystem::exists(dir)) std::filesystem::copy(m.dir, dir);
    const std::string damaged_path = dir + "/" + it->first;
    cs::atomic_write(damaged_path, damaged);
    if (!keep.empty())
      std::filesystem::copy(dir, keep + "/run" + std::to_string(run) + "-" + m.task,
                            std::filesystem::copy_options::recursive | std::filesystem::copy_options::overwrite_existing);
    std::snprintf(g_current, sizeof g_current, "run %lld (seed %llu): %s damaged in %s (a copy of %s)",
                  static_cast<long long>(run), static_cast<unsigned long long>(seed), it->first.c_str(), dir.c_str(),
                  m.dir.c_str());
    // 1. Verified: refused, naming the file.
    try {
      load_and_use(dir, m.task, true);
      std::cerr << "run " << run << " (seed " << seed << "): a damaged " << it->first << " of " << m.dir
                << " was loaded although it no longer matches MANIFEST.json\n";
      return 1;
    } catch (const cs::InputError&) {
    }
    // 2. Unverified: a result or a message, never a crash.
    std::string outcome = "loaded and used", message;
    try {
      load_and_use(dir, m.task, false);
    } catch (const cs::InputError& e) {
      outcome = "refused (bad input, exit 2)";
    } catch (const c10::Error& e) {
      outcome = "refused by LibTorch (exit 1)";
      message = e.what_without_backtrace();
    } catch (const std::exception& e) {
      outcome = "refused (exit 1)";
      message = e.what();
    }
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    if (usage.ru_maxrss / 1024 > max_rss_mb) {
      std::cerr << "run " << run << " (seed " << seed << "): loading a damaged " << it->first << " of " << m.dir
                << " took the process to " << usage.ru_maxrss / 1024 << " MB (more than --max-rss-mb " << max_rss_mb
                << ")\n";
      return 1;
    }
    const std::string key = it->first + ": " + outcome;
    if (++outcomes[key] == 1 && !message.empty()) examples[key] = message.substr(0, message.find('\n')).substr(0, 160) + " (run " + std::to_string(run) + ")";
    cs::atomic_write(damaged_path, it->second);  // the next run starts from the pristine model
    ++done;
    if (done % 50000 == 0)
      std::cerr << "cellstate_mutate_models: " << done << " runs (seed " << seed << ")\n";
    if (g_stop) break;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << done << " mutated loads in " << seconds << " s (seed " << seed << "), every damaged file refused when "
            << "verified; unverified outcomes:\n";
  for (const auto& [what, n] : outcomes)
    std::cout << "  " << n << "  " << what << (examples.count(what) ? ", e.g. " + examples[what] : "") << "\n";
  return 0;
}
