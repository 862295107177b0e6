#include "cellstate/serve/http.h"

#include <httplib.h>

#include <stdexcept>

#include "cellstate/serve/service.h"
#include "cellstate/util/io.h"

namespace cellstate {

namespace {

using nlohmann::json;

void send(httplib::Response& res, const Reply& reply) {
  res.status = reply.status;
  res.set_content(reply.body.dump() + "\n", "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message) {
  send(res, {status, {{"error", message}}});
}

/// Compares without an early exit, so the time taken does not tell how much
/// of a guessed key was right.
bool same_key(const std::string& given, const std::string& expected) {
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i)
    diff |= static_cast<unsigned char>((i < given.size() ? given[i] : '\0') ^ expected[i]);
  return diff == 0;
}

/// One server-sent event.
std::string event(const std::string& name, const json& data) {
  return (name.empty() ? "" : "event: " + name + "\n") + "data: " + data.dump() + "\n\n";
}

}  // namespace

void HttpOptions::validate() const {
  if (host.empty()) throw std::invalid_argument("--host must not be empty");
  if (port < 0 || port > 65535) throw std::invalid_argument("--port must be in [0, 65535], got " + std::to_string(port));
  if (connections < 1 || connections > 4096)
    throw std::invalid_argument("--connections must be in [1, 4096], got " + std::to_string(connections));
  if (max_request_bytes < 64) throw std::invalid_argument("--max-request-bytes must be >= 64");
  if (idle_timeout_s < 1) throw std::invalid_argument("idle_timeout_s must be >= 1");
}

struct HttpServer::Impl {
  Impl(Service& s, HttpOptions o) : service(s), options(std::move(o)) {}
  Service& service;
  HttpOptions options;
  httplib::Server server;
  int port = -1;
};

HttpServer::HttpServer(Service& service, HttpOptions options)
    : impl_(std::make_unique<Impl>(service, std::move(options))) {
  impl_->options.validate();
  auto& svr = impl_->server;
  const auto& o = impl_->options;
  const auto connections = static_cast<size_t>(o.connections);
  svr.new_task_queue = [connections] { return new httplib::ThreadPool(connections); };
  // Without TCP_NODELAY a reply written in two pieces (headers, body) waits
  // for the client's delayed ACK: 40 ms added to every request.
  svr.set_tcp_nodelay(true);
  svr.set_payload_max_length(static_cast<size_t>(o.max_request_bytes));
  svr.set_keep_alive_max_count(1000000);
  svr.set_keep_alive_timeout(o.idle_timeout_s);
  svr.set_read_timeout(o.idle_timeout_s, 0);
  svr.set_write_timeout(o.idle_timeout_s, 0);

  // The API key is checked before anything else, the body unread: a client
  // without it learns nothing and costs nothing.
  const std::string expected = o.api_key.empty() ? std::string() : "Bearer " + o.api_key;
  auto authorised = [expected](const httplib::Request& req) {
    return expected.empty() || same_key(req.get_header_value("Authorization"), expected);
  };
  svr.set_pre_routing_handler([authorised](const httplib::Request& req, httplib::Response& res) {
    if (authorised(req)) return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, 401, req.has_header("Authorization") ? "wrong API key" : "missing API key (Authorization: Bearer KEY)");
    res.set_header("WWW-Authenticate", "Bearer");
    res.set_header("Connection", "close");
    return httplib::Server::HandlerResponse::Handled;
  });
  const auto max_bytes = o.max_request_bytes;
  svr.set_error_handler(httplib::Server::HandlerWithResponse([max_bytes](const httplib::Request& req,
                                                                         httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (res.status == 413)
      send_error(res, 413, "request body over " + std::to_string(max_bytes) + " bytes (--max-request-bytes)");
    else if (res.status == 404)
      send_error(res, 404, "no such endpoint: " + req.method + " " + req.path.substr(0, 200));
    else
      send_error(res, res.status, "HTTP " + std::to_string(res.status));
    return httplib::Server::HandlerResponse::Handled;
  }));
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr error) {
    send(res, Service::error_reply(error));
  });

  Service* s = &service;
  auto post = [&svr](const std::string& path, std::function<Reply(const std::string&)> call) {
    svr.Post(path, [call](const httplib::Request& req, httplib::Response& res) {
      try {
        send(res, call(req.body));
      } catch (...) {
        send(res, Service::error_reply(std::current_exception()));
      }
    });
    svr.Get(path, [path](const httplib::Request&, httplib::Response& res) {
      send_error(res, 405, path + " takes POST with a JSON body");
      res.set_header("Allow", "POST");
    });
  };
  post("/v1/sentiment", [s](const std::string& body) { return s->sentiment(body); });
  post("/v1/ner", [s](const std::string& body) { return s->ner(body); });
  post("/v1/translate", [s](const std::string& body) { return s->translate(body); });

  svr.Post("/v1/generate", [s](const httplib::Request& req, httplib::Response& res) {
    Service::Generation g;
    try {
      g = s->parse_generation(req.body);
      if (!g.stream) {
        send(res, s->generate(g));
        return;
      }
    } catch (...) {
      send(res, Service::error_reply(std::current_exception()));
      return;
    }
    // Server-sent events: {"text": PIECE} as each piece is generated, then
    // "event: done" with the records (or "event: error").
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider("text/event-stream", [s, g](size_t, httplib::DataSink& sink) {
      auto write = [&sink](const std::string& text) { return sink.is_writable() && sink.write(text.data(), text.size()); };
      Reply reply;
      try {
        reply = s->generate(g, [&](const std::string& piece) { return write(event("", {{"text", piece}})); });
      } catch (...) {
        reply = Service::error_reply(std::current_exception());
      }
      if (reply.status == 200) {
        write(event("done", reply.body));
      } else if (reply.status != 499) {
        write(event("error", reply.body));
      }
      sink.done();
      return true;
    });
  });
  svr.Get("/v1/generate", [](const httplib::Request&, httplib::Response& res) {
    send_error(res, 405, "/v1/generate takes POST with a JSON body");
    res.set_header("Allow", "POST");
  });
  svr.Get("/v1/models", [s](const httplib::Request&, httplib::Response& res) { send(res, s->models()); });
  svr.Get("/health", [s](const httplib::Request&, httplib::Response& res) { send(res, s->health()); });
}

HttpServer::~HttpServer() { stop(); }

int HttpServer::bind() {
  const auto& o = impl_->options;
  if (o.port == 0) {
    impl_->port = impl_->server.bind_to_any_port(o.host);
  } else if (impl_->server.bind_to_port(o.host, static_cast<int>(o.port))) {
    impl_->port = static_cast<int>(o.port);
  }
  if (impl_->port <= 0)
    throw std::runtime_error("cannot listen on " + o.host + ":" + std::to_string(o.port) +
                             " (address in use, or not an address of this machine)");
  return impl_->port;
}

void HttpServer::run() {
  if (impl_->port <= 0) bind();
  impl_->server.listen_after_bind();
}

void HttpServer::stop() {
  if (impl_->server.is_running()) impl_->server.stop();
}

std::string read_api_key(const std::string& path) {
  std::string text = read_file(path);
  text = text.substr(0, text.find('\n'));
  const auto first = text.find_first_not_of(" \t\r");
  const auto last = text.find_last_not_of(" \t\r");
  text = first == std::string::npos ? "" : text.substr(first, last - first + 1);
  if (text.size() < 16)
    throw InputError(path, 1, "an API key of at least 16 characters expected on the first line, got " +
                                  std::to_string(text.size()));
  return text;
}

}  // namespace cellstate
