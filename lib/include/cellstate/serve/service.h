#pragma once
// The four models as a JSON service, apart from HTTP (serve/http.h binds it
// to a socket): each call takes a request body and returns a status and a
// JSON body, the same records each app's JSONL output has.
//
//   POST /v1/sentiment  {"texts": [...], "top_k"?, "threshold"?}
//                       -> {"results": [{"text", "label", "probability", "probabilities"} | {"empty": true}]}
//   POST /v1/ner        {"texts": [...], "input_format"?: "raw"|"tokens", "tag_scheme"?}
//                       -> {"results": [{"text", "entities": [...], "sentences": [...]}]}
//   POST /v1/translate  {"texts": [...], "beam"?, "nbest"?, "length_penalty"?, "attention"?}
//                       -> {"results": [{"source", "translation", "sentences": [{..., "nbest": [...]}]}]}
//   POST /v1/generate   {"prompt", "max_tokens"?, "num_samples"?, "seed"?, "stop"?, "temperature"?,
//                        "top_k"?, "top_p"?, "repetition_penalty"?, "max_prompt_tokens"?, "stream"?}
//                       -> {"results": [{"prompt", "sample", "seed", "text", "tokens", ...}]}
//   GET  /v1/models, GET /health
//
// A bad request is a 4xx whose body is {"error": "what was wrong"}: 400 for
// malformed JSON, a missing or unknown field, a wrong type, a value out of
// its range (the command line's range for the option of that name), invalid
// UTF-8; 404 for a model that is not loaded; 413 for too many texts; 503 when
// the request's time limit passed before its batch ran.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "cellstate/nn/rnn.h"
#include "cellstate/serve/batch_queue.h"

namespace cellstate {

class SentimentModel;
class NerModel;
class TranslationModel;
class TextgenModel;

struct ServeOptions {
  // Model directories; empty: that model is not served.
  std::string sentiment;
  std::string ner;
  std::string translate;
  std::string textgen;
  std::optional<Implementation> impl;         // as trained when unset
  bool verify = true;                         // check each model's MANIFEST.json on load
  BatchQueueOptions batching;                 // --max-batch, --max-wait-ms
  int64_t max_texts = 256;                    // texts per request at most (413 beyond)
  int64_t max_text_bytes = int64_t{1} << 20;  // bytes per text or prompt at most (413 beyond)
  std::chrono::milliseconds request_timeout{30000};  // a request still queued after this gets 503

  /// Throws std::invalid_argument naming the option.
  void validate() const;
};

/// A reply: an HTTP status and a JSON body.
struct Reply {
  int status = 200;
  nlohmann::json body;
};

/// A request that cannot be served as sent: its status and message.
class BadRequest : public std::runtime_error {
 public:
  BadRequest(int status, const std::string& message) : std::runtime_error(message), status(status) {}
  int status;
};

class Service {
 public:
  /// Loads the models the options name (an InputError for a bad model).
  explicit Service(const ServeOptions& options);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  Reply sentiment(const std::string& body);
  Reply ner(const std::string& body);
  Reply translate(const std::string& body);

  /// A parsed and checked generation request.
  struct Generation {
    nlohmann::json request;  // the fields as sent
    bool stream = false;
  };
  /// Checks a /v1/generate body (throws BadRequest).
  Generation parse_generation(const std::string& body) const;
  /// Runs a checked generation request; `on_text` (when given) receives
  /// each piece of text as it is generated, and may return false to stop
  /// (the client went away). One generation runs at a time.
  Reply generate(const Generation& request, const std::function<bool(const std::string&)>& on_text = {});

  Reply models() const;
  Reply health() const;

  /// The reply for a BadRequest, an InputError (400) or any other exception (500).
  static Reply error_reply(const std::exception_ptr& error);

 private:
  Reply batched(const std::string& task, const std::string& body, const std::vector<std::string>& fields,
                const std::function<nlohmann::json(const nlohmann::json& request)>& settings);

  ServeOptions options_;
  std::unique_ptr<SentimentModel> sentiment_;
  std::unique_ptr<NerModel> ner_;
  std::unique_ptr<TranslationModel> translate_;
  std::unique_ptr<TextgenModel> textgen_;
  std::map<std::string, std::string> dirs_;                   // task -> model directory
  std::map<std::string, std::unique_ptr<BatchQueue>> queues_;  // task -> its batching queue
  std::timed_mutex generating_;                                // one generation at a time
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace cellstate
