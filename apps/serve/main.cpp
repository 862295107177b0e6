// cellstate-serve: the four apps' models behind one HTTP/JSON API
// (serve/service.h, serve/http.h), with dynamic batching and streaming
// generation. Listens on 127.0.0.1 unless --host says otherwise.
#include <boost/program_options.hpp>

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <thread>

#include "cellstate/cli/cli.h"
#include "cellstate/cli/options.h"
#include "cellstate/serve/http.h"
#include "cellstate/serve/service.h"
#include "cellstate/tasks/model_dir.h"
#include "cellstate/tasks/options.h"
#include "cellstate/util/runtime.h"

namespace po = boost::program_options;
namespace cs = cellstate;

namespace {

const char* kProgram = "cellstate-serve";

struct Command {
  cs::ServeOptions serve;
  cs::HttpOptions http;
  cs::RuntimeOptions runtime;
  std::string impl;
  std::string api_key_file;
  int64_t max_wait_ms = 5;
  int64_t request_timeout_ms = 30000;
  std::string config;
};

/// Watches SIGINT and SIGTERM on a thread of its own (blocked everywhere
/// else): the first stops the server, which answers what is in flight.
class SignalWatcher {
 public:
  SignalWatcher() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGUSR2);  // wakes the watcher when the server ends by itself
    // A background job of a script starts with SIGINT ignored, and an
    // ignored signal never reaches sigwait().
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    thread_ = std::thread([this] {
      int sig = 0;
      sigwait(&set_, &sig);
      if (sig == SIGUSR2) return;
      signal_ = sig;
      std::lock_guard<std::mutex> lock(mutex_);
      if (server_) {
        server_->stop();
      } else if (!serving_) {
        std::_Exit(128 + sig);  // still loading models: nothing to finish
      }
    });
  }
  ~SignalWatcher() {
    pthread_kill(thread_.native_handle(), SIGUSR2);
    thread_.join();
  }
  /// The server a signal stops from now on (nullptr: it has stopped).
  void watch(cs::HttpServer* server) {
    std::lock_guard<std::mutex> lock(mutex_);
    server_ = server;
    serving_ = true;
  }
  int signal() const { return signal_; }

 private:
  sigset_t set_{};
  std::atomic<int> signal_{0};
  std::mutex mutex_;
  cs::HttpServer* server_ = nullptr;
  bool serving_ = false;
  std::thread thread_;
};

int serve(int argc, char** argv) {
  SignalWatcher signals;  // first, so that every thread started later blocks the signals
  Command c;
  auto& s = c.serve;
  po::options_description d(
      "Usage: cellstate-serve [--sentiment DIR] [--ner DIR] [--translate DIR] [--textgen DIR] [options]\n\n"
      "Serves the models over HTTP/JSON: POST /v1/sentiment, /v1/ner, /v1/translate, /v1/generate;\n"
      "GET /v1/models, /health (README \"Serving\"). Without any model option, every shipped\n"
      "model is served; with some, only those.\n\nModels");
  cs::add_help_and_config(d, c.config);
  d.add_options()("sentiment", po::value(&s.sentiment), "serve this sentiment model")(
      "ner", po::value(&s.ner), "serve this NER model")("translate", po::value(&s.translate),
                                                         "serve this translation model")(
      "textgen", po::value(&s.textgen), "serve this text generation model")(
      "impl", po::value(&c.impl), "custom or builtin (default: as each model was trained)");
  cs::add_flag(d, "verify", &s.verify, "check each model's files against its MANIFEST.json");
  po::options_description http("HTTP"), batching("Batching and limits"), runtime("Runtime");
  http.add_options()("host", cs::defaulted(&c.http.host), "address to listen on (0.0.0.0: every interface)")(
      "port", cs::defaulted(&c.http.port), "port to listen on (0: any free port, printed on stderr)")(
      "connections", cs::defaulted(&c.http.connections), "connections served at once")(
      "api-key", po::value(&c.api_key_file),
      "file whose first line is the API key every request must send (Authorization: Bearer KEY)");
  batching.add_options()("max-batch", cs::defaulted(&s.batching.max_batch),
                         "texts run through a model together at most")(
      "max-wait-ms", cs::defaulted(&c.max_wait_ms), "how long a request waits for others to batch with")(
      "max-request-bytes", cs::defaulted(&c.http.max_request_bytes), "larger request bodies get 413")(
      "request-timeout-ms", cs::defaulted(&c.request_timeout_ms),
      "a request not answered by then gets 503 (generation: not started by then)");
  cs::add_runtime_options(runtime, c.runtime);
  d.add(http).add(batching).add(runtime);
  if (auto st = cs::parse_command_line(argc, argv, d, kProgram, [&] {
        c.runtime.validate();
        if (!c.impl.empty()) s.impl = cs::parse_implementation(c.impl);
        if (s.sentiment.empty() && s.ner.empty() && s.translate.empty() && s.textgen.empty()) {
          s.sentiment = cs::shipped_model_dir("sentiment-sst2");
          s.ner = cs::shipped_model_dir("ner-conll2003");
          s.translate = cs::shipped_model_dir("translate-multi30k-en-de");
          s.textgen = cs::shipped_model_dir("textgen-shakespeare");
        }
        // Short names of shipped models (--translate en-fr), as every app's --model takes them.
        for (auto [task, dir] : {std::pair{"sentiment", &s.sentiment}, {"ner", &s.ner}, {"translate", &s.translate},
                                 {"textgen", &s.textgen}})
          if (!dir->empty()) *dir = cs::resolve_model_dir(task, *dir, std::string("--") + task);
        s.batching.max_wait = std::chrono::milliseconds(c.max_wait_ms);
        s.request_timeout = std::chrono::milliseconds(c.request_timeout_ms);
        s.max_text_bytes = std::min<int64_t>(s.max_text_bytes, c.http.max_request_bytes);
        s.validate();
        c.http.validate();
      }))
    return *st;
  if (!c.api_key_file.empty()) c.http.api_key = cs::read_api_key(c.api_key_file);
  c.runtime.apply();
  if (!c.runtime.quiet) std::cerr << kProgram << ": loading models\n";
  cs::Service service(s);
  cs::HttpServer server(service, c.http);
  const int port = server.bind();
  if (c.http.host != "127.0.0.1" && c.http.host != "localhost" && c.http.host != "::1")
    std::cerr << kProgram << ": warning: listening on " << c.http.host << ", beyond this machine"
              << (c.http.api_key.empty() ? ", without an API key" : "") << "\n";
  // One line a script can wait for and read the port from.
  std::cerr << kProgram << ": listening on http://" << c.http.host << ":" << port << std::endl;
  signals.watch(&server);
  server.run();
  signals.watch(nullptr);
  if (!c.runtime.quiet) std::cerr << kProgram << ": stopped\n";
  return signals.signal() ? 128 + signals.signal() : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--version") {
    std::cout << kProgram << " " << cs::version() << "\n";
    return 0;
  }
  return cs::run_guarded(kProgram, [&] { return serve(argc, argv); });
}
