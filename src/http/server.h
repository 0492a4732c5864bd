// The HTTP/1.1 server (Boost.Beast) that runs on the single event loop: async accept/read/write, keep-alive,
// per-connection read timeouts, header and body limits, optional bearer-token auth, and a router of exact
// (method, path) routes. Boost stays inside server.cc.
//
// Threading: handlers run on the loop thread. A handler may answer later (after posting work elsewhere) by
// calling its responder from the loop thread exactly once; the connection waits for it.
// Errors answered by the server itself, each with a JSON body {"error": "..."}: 400 unparsable request,
// 401 missing/wrong token (every route except GET /healthz when a token is configured; compared in constant
// time), 404 unknown path, 405 wrong method, 413 body or header over the limit, 408 read timeout (connection
// closed).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"

namespace deltasync::io {
class event_loop;
}

namespace deltasync::http {

struct request {
  std::string method;  // "GET", "POST", "DELETE", ...
  std::string path;    // target without the query string
  std::string query;   // after '?', possibly empty
  std::string body;
  std::string content_type;
  std::string remote;  // peer address, for logs
};

struct response {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
};

// {"error": message, ...extra} as a response.
response json_error(unsigned status, const std::string& message, const std::string& extra_json_fields = "");

using responder = std::function<void(response)>;
using handler = std::function<void(const request&, responder)>;

class router {
 public:
  void add(std::string method, std::string path, handler h);
  struct route {
    std::string method, path;
    handler h;
  };
  const std::vector<route>& routes() const noexcept { return routes_; }

 private:
  std::vector<route> routes_;
};

struct server_options {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0: an ephemeral port (see http_server::port())
  uint64_t max_header_bytes = 16 << 10;
  uint64_t max_body_bytes = 16 << 20;
  uint32_t read_timeout_ms = 30'000;   // a client that sends nothing for this long is disconnected
  uint32_t max_connections = 256;
  std::string bearer_token;            // empty: no auth
};

class http_server {
 public:
  // Binds and starts accepting on the loop. Errors: the address cannot be bound (names host:port).
  static result<std::unique_ptr<http_server>> start(io::event_loop& loop, server_options options, router routes);
  ~http_server();  // stops accepting and closes connections (call from any thread except the loop's)
  uint16_t port() const noexcept;

  struct impl;

 private:
  explicit http_server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace deltasync::http
