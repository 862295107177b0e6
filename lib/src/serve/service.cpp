#include "cellstate/serve/service.h"

#include <torch/torch.h>

#include <algorithm>
#include <set>
#include <stdexcept>

#include "cellstate/cli/vocabulary.h"
#include "cellstate/data/tag_scheme.h"
#include "cellstate/tasks/ner.h"
#include "cellstate/tasks/sentiment.h"
#include "cellstate/tasks/textgen.h"
#include "cellstate/tasks/translate.h"
#include "cellstate/util/io.h"
#include "cellstate/util/text.h"

namespace cellstate {

namespace {

using nlohmann::json;

// Generation is bounded on a server whatever the command line allows.
constexpr int64_t kMaxTokensServed = 2048;
constexpr int64_t kMaxSamplesServed = 16;

json parse_body(const std::string& body) {
  if (body.empty()) throw BadRequest(400, "empty request body (expected a JSON object)");
  const size_t bad = find_invalid_utf8(body);
  if (bad != std::string::npos)
    throw BadRequest(400, "invalid UTF-8 at byte " + std::to_string(bad + 1) + " of the request body");
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    throw BadRequest(400, std::string("malformed JSON: ") + e.what());
  }
  if (!j.is_object()) throw BadRequest(400, std::string("expected a JSON object, got ") + j.type_name());
  return j;
}

void check_fields(const json& j, const std::vector<std::string>& allowed) {
  for (const auto& [key, _] : j.items())
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      throw BadRequest(400, "unknown field '" + key.substr(0, 80) + "' (expected: " + list + ")");
    }
}

/// `text`'s problems as a request field: too long, or a NUL character.
void check_text(const std::string& text, const std::string& what, int64_t max_bytes) {
  if (static_cast<int64_t>(text.size()) > max_bytes)
    throw BadRequest(413, what + " has " + std::to_string(text.size()) + " bytes; at most " +
                              std::to_string(max_bytes) + " are served");
  if (text.find('\0') != std::string::npos) throw BadRequest(400, what + " contains a NUL character");
}

std::vector<std::string> texts_of(const json& j, const ServeOptions& o) {
  if (!j.contains("texts")) throw BadRequest(400, "missing field 'texts' (an array of strings)");
  const auto& t = j.at("texts");
  if (!t.is_array()) throw BadRequest(400, std::string("'texts' must be an array of strings, got ") + t.type_name());
  if (t.empty()) throw BadRequest(400, "'texts' is empty");
  if (static_cast<int64_t>(t.size()) > o.max_texts)
    throw BadRequest(413, std::to_string(t.size()) + " texts; at most " + std::to_string(o.max_texts) +
                              " per request are served");
  std::vector<std::string> texts;
  for (size_t i = 0; i < t.size(); ++i) {
    const std::string what = "texts[" + std::to_string(i) + "]";
    if (!t[i].is_string()) throw BadRequest(400, what + " must be a string, got " + t[i].type_name());
    texts.push_back(t[i].get<std::string>());
    check_text(texts.back(), what, o.max_text_bytes);
  }
  return texts;
}

/// The command line's range for the option `field` stands for ("top_k":
/// --top-k), narrowed to [lo, hi] where given.
Range range_of(const std::string& field, std::optional<double> lo = {}, std::optional<double> hi = {}) {
  std::string option = field;
  std::replace(option.begin(), option.end(), '_', '-');
  const auto* entry = find_in_vocabulary(option);
  Range r = entry && entry->range ? *entry->range : Range{-1e300, 1e300};
  if (lo && *lo > r.min) r.min = *lo, r.min_open = false;
  if (hi && *hi < r.max) r.max = *hi, r.max_open = false;
  return r;
}

double number(const json& j, const std::string& field, double fallback, std::optional<double> lo = {},
              std::optional<double> hi = {}) {
  if (!j.contains(field)) return fallback;
  const auto& v = j.at(field);
  if (!v.is_number()) throw BadRequest(400, "'" + field + "' must be a number, got " + v.type_name());
  const double d = v.get<double>();
  const Range r = range_of(field, lo, hi);
  if (!r.contains(d)) throw BadRequest(400, "'" + field + "' must be in " + r.to_string() + ", got " + v.dump());
  return d;
}

int64_t integer(const json& j, const std::string& field, int64_t fallback, std::optional<double> lo = {},
                std::optional<double> hi = {}) {
  if (!j.contains(field)) return fallback;
  const auto& v = j.at(field);
  if (!v.is_number_integer())
    throw BadRequest(400, "'" + field + "' must be an integer, got " + (v.is_number() ? v.dump() : v.type_name()));
  const double d = v.get<double>();
  const Range r = range_of(field, lo, hi);
  if (!r.contains(d)) throw BadRequest(400, "'" + field + "' must be in " + r.to_string() + ", got " + v.dump());
  return v.get<int64_t>();
}

bool boolean(const json& j, const std::string& field, bool fallback) {
  if (!j.contains(field)) return fallback;
  if (!j.at(field).is_boolean())
    throw BadRequest(400, "'" + field + "' must be true or false, got " + j.at(field).type_name());
  return j.at(field).get<bool>();
}

std::string choice(const json& j, const std::string& field, const std::string& fallback,
                   const std::vector<std::string>& allowed) {
  if (!j.contains(field)) return fallback;
  if (!j.at(field).is_string()) throw BadRequest(400, "'" + field + "' must be a string, got " + j.at(field).type_name());
  const auto v = j.at(field).get<std::string>();
  if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    throw BadRequest(400, "'" + field + "' must be one of " + list + ", got '" + v.substr(0, 80) + "'");
  }
  return v;
}

/// config.json without its long lists (a vocabulary, characters): what a
/// client needs to know about a model.
json config_summary(const json& config) {
  if (config.is_array()) {
    if (config.size() > 32) return "(" + std::to_string(config.size()) + " entries)";
    return config;
  }
  if (!config.is_object()) return config;
  json out = json::object();
  for (const auto& [k, v] : config.items()) out[k] = config_summary(v);
  return out;
}

}  // namespace

void ServeOptions::validate() const {
  if (sentiment.empty() && ner.empty() && translate.empty() && textgen.empty())
    throw std::invalid_argument("no model to serve");
  if (batching.max_batch < 1 || batching.max_batch > 4096)
    throw std::invalid_argument("--max-batch must be in [1, 4096], got " + std::to_string(batching.max_batch));
  if (batching.max_wait.count() < 0 || batching.max_wait.count() > 10000)
    throw std::invalid_argument("--max-wait-ms must be in [0, 10000]");
  if (max_texts < 1) throw std::invalid_argument("max_texts must be >= 1");
  if (max_text_bytes < 1) throw std::invalid_argument("max_text_bytes must be >= 1");
  if (request_timeout.count() < 1) throw std::invalid_argument("--request-timeout-ms must be >= 1");
}

Service::Service(const ServeOptions& options) : options_(options) {
  options_.validate();
  const auto batch_size = options_.batching.max_batch;
  if (!options_.sentiment.empty()) {
    sentiment_ = std::make_unique<SentimentModel>(SentimentModel::load(options_.sentiment, options_.impl, options_.verify));
    dirs_["sentiment"] = options_.sentiment;
    queues_["sentiment"] = std::make_unique<BatchQueue>(
        [this, batch_size](const std::vector<std::string>& texts, const json& settings) {
          PredictOptions p;
          p.format = "jsonl";
          p.threshold = settings.at("threshold").get<double>();
          p.batch_size = batch_size;
          return sentiment_records(*sentiment_, texts, p);
        },
        options_.batching);
  }
  if (!options_.ner.empty()) {
    ner_ = std::make_unique<NerModel>(NerModel::load(options_.ner, options_.impl, options_.verify));
    dirs_["ner"] = options_.ner;
    queues_["ner"] = std::make_unique<BatchQueue>(
        [this, batch_size](const std::vector<std::string>& texts, const json& settings) {
          NerPredictOptions p;
          p.format = "jsonl";
          p.input_format = settings.at("input_format").get<std::string>();
          p.tag_scheme = settings.at("tag_scheme").get<std::string>();
          p.batch_size = batch_size;
          return ner_records(*ner_, texts, p);
        },
        options_.batching);
  }
  if (!options_.translate.empty()) {
    translate_ =
        std::make_unique<TranslationModel>(TranslationModel::load(options_.translate, options_.impl, options_.verify));
    dirs_["translate"] = options_.translate;
    queues_["translate"] = std::make_unique<BatchQueue>(
        [this, batch_size](const std::vector<std::string>& texts, const json& settings) {
          TranslateFilesOptions t;
          t.format = "jsonl";
          t.decoding.beam = settings.at("beam").get<int64_t>();
          t.decoding.nbest = settings.at("nbest").get<int64_t>();
          t.decoding.length_penalty = settings.at("length_penalty").get<double>();
          t.attention_weights = settings.at("attention").get<bool>();
          t.batch_size = batch_size;
          return translation_records(*translate_, texts, t);
        },
        options_.batching);
  }
  if (!options_.textgen.empty()) {
    textgen_ = std::make_unique<TextgenModel>(TextgenModel::load(options_.textgen, options_.impl, options_.verify));
    dirs_["textgen"] = options_.textgen;
  }
}

Service::~Service() {
  queues_.clear();  // finishes what is queued while the models still exist
}

Reply Service::batched(const std::string& task, const std::string& body, const std::vector<std::string>& fields,
                       const std::function<json(const json& request)>& settings) {
  const auto queue = queues_.find(task);
  if (queue == queues_.end()) throw BadRequest(404, "no " + task + " model is loaded on this server");
  const json request = parse_body(body);
  check_fields(request, fields);
  auto texts = texts_of(request, options_);
  const json s = settings(request);
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  auto future = queue->second->submit(std::move(texts), s, cancelled);
  if (future.wait_for(options_.request_timeout) != std::future_status::ready) {
    cancelled->store(true);
    throw BadRequest(503, "the request's time limit (" + std::to_string(options_.request_timeout.count()) +
                              " ms) passed before it was answered; the server is overloaded");
  }
  return {200, {{"results", future.get()}}};
}

Reply Service::sentiment(const std::string& body) {
  return batched("sentiment", body, {"texts", "threshold"}, [](const json& r) {
    return json{{"threshold", number(r, "threshold", 0.0)}};
  });
}

Reply Service::ner(const std::string& body) {
  return batched("ner", body, {"texts", "input_format", "tag_scheme"}, [](const json& r) {
    return json{{"input_format", choice(r, "input_format", "raw", {"raw", "tokens"})},
                {"tag_scheme", choice(r, "tag_scheme", "", {"", "bio", "iobes"})}};
  });
}

Reply Service::translate(const std::string& body) {
  return batched("translate", body, {"texts", "beam", "nbest", "length_penalty", "attention"}, [](const json& r) {
    const int64_t beam = integer(r, "beam", 5);
    const int64_t nbest = integer(r, "nbest", 1, std::nullopt, static_cast<double>(beam));
    return json{{"beam", beam},
                {"nbest", nbest},
                {"length_penalty", number(r, "length_penalty", 0.6)},
                {"attention", boolean(r, "attention", false)}};
  });
}

Service::Generation Service::parse_generation(const std::string& body) const {
  if (!textgen_) throw BadRequest(404, "no textgen model is loaded on this server");
  Generation g;
  g.request = parse_body(body);
  const json& r = g.request;
  check_fields(r, {"prompt", "max_tokens", "num_samples", "seed", "stop", "temperature", "top_k", "top_p",
                   "repetition_penalty", "max_prompt_tokens", "stream"});
  if (!r.contains("prompt")) throw BadRequest(400, "missing field 'prompt' (a string; may be empty)");
  if (!r.at("prompt").is_string())
    throw BadRequest(400, std::string("'prompt' must be a string, got ") + r.at("prompt").type_name());
  check_text(r.at("prompt").get<std::string>(), "'prompt'", options_.max_text_bytes);
  integer(r, "max_tokens", 200, std::nullopt, kMaxTokensServed);
  integer(r, "num_samples", 1, std::nullopt, kMaxSamplesServed);
  integer(r, "seed", 1, 0.0, 9.007199254740992e15);
  number(r, "temperature", 1.0);
  integer(r, "top_k", 0);
  number(r, "top_p", 1.0);
  number(r, "repetition_penalty", 1.0);
  integer(r, "max_prompt_tokens", 4096);
  if (r.contains("stop")) {
    const auto& s = r.at("stop");
    if (!s.is_array() || s.size() > 16)
      throw BadRequest(400, "'stop' must be an array of at most 16 strings");
    for (size_t i = 0; i < s.size(); ++i) {
      if (!s[i].is_string() || s[i].get<std::string>().empty())
        throw BadRequest(400, "stop[" + std::to_string(i) + "] must be a non-empty string");
      check_text(s[i].get<std::string>(), "stop[" + std::to_string(i) + "]", 1024);
    }
  }
  g.stream = boolean(r, "stream", false);
  return g;
}

Reply Service::generate(const Generation& g, const std::function<bool(const std::string&)>& on_text) {
  const json& r = g.request;
  GenerateOptions o;
  o.max_tokens = integer(r, "max_tokens", 200);
  o.max_prompt_tokens = integer(r, "max_prompt_tokens", 4096);
  o.sampling.temperature = number(r, "temperature", 1.0);
  o.sampling.top_k = integer(r, "top_k", 0);
  o.sampling.top_p = number(r, "top_p", 1.0);
  o.sampling.repetition_penalty = number(r, "repetition_penalty", 1.0);
  if (r.contains("stop")) o.stop = r.at("stop").get<std::vector<std::string>>();
  const auto samples = integer(r, "num_samples", 1);
  const auto seed = static_cast<uint64_t>(integer(r, "seed", 1));
  const std::string prompt = r.at("prompt").get<std::string>();
  std::unique_lock<std::timed_mutex> lock(generating_, std::defer_lock);
  if (!lock.try_lock_for(options_.request_timeout))
    throw BadRequest(503, "the request's time limit (" + std::to_string(options_.request_timeout.count()) +
                              " ms) passed while other generations ran; the server is overloaded");
  struct ClientGone {};
  json results = json::array();
  try {
    for (int64_t k = 0; k < samples; ++k) {
      const auto s = seed + static_cast<uint64_t>(k);
      const auto out = generate_text(*textgen_, prompt, o, s, [&](const std::string& text) {
        if (on_text && !on_text(text)) throw ClientGone{};
      });
      results.push_back(generation_json(prompt, k + 1, s, out));
    }
  } catch (const ClientGone&) {
    return {499, {{"error", "the client closed the connection"}}};
  }
  return {200, {{"results", results}}};
}

Reply Service::models() const {
  json models = json::object();
  auto add = [&](const std::string& task, const json& config) {
    json m = {{"dir", dirs_.at(task)}, {"config", config_summary(config)}};
    const auto q = queues_.find(task);
    if (q != queues_.end()) {
      const auto s = q->second->stats();
      m["batching"] = {{"requests", s.requests}, {"batches", s.batches}, {"items", s.items},
                       {"largest_batch", s.largest_batch}};
    }
    models[task] = m;
  };
  if (sentiment_) add("sentiment", sentiment_->config());
  if (ner_) add("ner", ner_->config());
  if (translate_) add("translate", translate_->config());
  if (textgen_) add("textgen", textgen_->config());
  return {200,
          {{"models", models},
           {"max_batch", options_.batching.max_batch},
           {"max_wait_ms", options_.batching.max_wait.count()},
           {"max_texts", options_.max_texts},
           {"request_timeout_ms", options_.request_timeout.count()}}};
}

Reply Service::health() const {
  json loaded = json::array();
  for (const auto& [task, _] : dirs_) loaded.push_back(task);
  const double up = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  return {200, {{"status", "ok"}, {"models", loaded}, {"uptime_s", std::round(up * 10) / 10}}};
}

Reply Service::error_reply(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const BadRequest& e) {
    return {e.status, {{"error", e.what()}}};
  } catch (const InputError& e) {
    return {400, {{"error", e.what()}}};
  } catch (const std::invalid_argument& e) {
    return {400, {{"error", e.what()}}};
  } catch (const c10::Error& e) {
    return {500, {{"error", std::string("internal error: ") + e.what_without_backtrace()}}};
  } catch (const std::exception& e) {
    return {500, {{"error", std::string("internal error: ") + e.what()}}};
  } catch (...) {
    return {500, {{"error", "internal error"}}};
  }
}

}  // namespace cellstate
