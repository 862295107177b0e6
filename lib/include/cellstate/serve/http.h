#pragma once
// The service (serve/service.h) over HTTP/1.1, on cpp-httplib: JSON in, JSON
// out, generation streamed as server-sent events, an optional API key, and a
// clean stop that lets requests in flight finish.
//
// Routes: POST /v1/sentiment, /v1/ner, /v1/translate, /v1/generate;
// GET /v1/models, /health. Every error reply is JSON {"error": "..."}: 401
// without the API key (its body is not read, and the connection is closed),
// 404 for an unknown path, 405 for a wrong method, 413 for a body over
// max_request_bytes, and the service's own 4xx/5xx.

#include <cstdint>
#include <memory>
#include <string>

namespace cellstate {

class Service;

struct HttpOptions {
  std::string host = "127.0.0.1";               // loopback unless told otherwise
  int64_t port = 8080;                          // 0: any free port (bind() says which)
  int64_t connections = 64;                     // connections served at once (one thread each)
  int64_t max_request_bytes = int64_t{1} << 20; // larger bodies get 413 unread
  std::string api_key;                          // non-empty: "Authorization: Bearer KEY" required
  int64_t idle_timeout_s = 5;                   // a connection silent this long is closed

  /// Throws std::invalid_argument naming the option.
  void validate() const;
};

class HttpServer {
 public:
  HttpServer(Service& service, HttpOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Binds the listening socket; returns the port. Throws std::runtime_error
  /// naming host and port when it cannot (in use, no such address).
  int bind();
  /// Serves until stop() is called; requests in flight are finished first.
  void run();
  /// Stops accepting connections and makes run() return once the requests
  /// in flight are answered. Safe from any thread.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Reads an API key file: its first line, surrounding whitespace removed; an
/// InputError when missing, empty or shorter than 16 characters.
std::string read_api_key(const std::string& path);

}  // namespace cellstate
