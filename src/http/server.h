// The HTTP/1.1 server (Boost.Beast) that runs on the single event loop: async accept/read/write, keep-alive,
// per-connection read timeouts, header and body limits, optional bearer-token auth, and a router of exact
// (method, path) routes. Boost stays inside server.cc, server_session.cc and their internal server_internal.h.
//
// Threading: handlers run on the loop thread. A handler may answer later (after posting work elsewhere) by
// calling its responder exactly once, from the loop thread (a call from another thread is posted to the
// loop); the connection reads nothing more until then. A second call is ignored (logged). A response for a
// connection that died meanwhile, or for a server already destroyed, is dropped quietly. A responder that is
// destroyed without being called answers 500. A handler that throws answers 500; no exception leaves the
// server.
//
// Errors answered by the server itself, each with a JSON body {"error": "..."}: 400 unparsable request,
// 401 missing/wrong token (every route except GET /healthz when a token is configured; compared in constant
// time; checked before routing so unknown paths are not revealed), 404 unknown path, 405 known path with
// another method (the allowed ones are named in the message), 413 body or header block over the limit, 500 handler failure.
// After a 400 or 413 the connection is closed (the rest of the request is drained briefly so that the
// client can read the answer). A client that sends nothing for read_timeout_ms (idle between requests, or
// stalled inside one) is disconnected without an answer. "Expect: 100-continue" is honoured.
//
// Connection limit: at most max_connections connections are open. When a new one arrives at the limit, the
// connection idle longest (waiting for a request, not one byte of it received) is closed to make room, so
// idle keep-alive connections can never lock clients out. With none idle, the new connection takes one of
// reserved_connections extra slots, which serve only GET /healthz and the routes named in reserved_routes
// (others answer 503 naming max-connections) and close after one answer; beyond those it is closed at accept.
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
  unsigned retry_after_s = 0;  // non-zero: a Retry-After header (a 503 that will clear by itself)
};

// {"error": message, ...extra} as a response; `extra_json_fields` is raw JSON members such as
// "\"current_version\": 3" (no leading comma).
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
  uint32_t read_timeout_ms = 30'000;   // bounds reading a request's header block, then its body
  uint32_t max_connections = 256;      // open connections, idle ones included (serve --max-connections)
  uint32_t reserved_connections = 4;   // extra slots past the limit, for /healthz and reserved_routes only
  std::vector<std::string> reserved_routes;  // paths also served on a reserved slot (the receiver: its sync routes)
  std::string bearer_token;            // empty: no auth
  uint32_t write_timeout_ms = 30'000;  // bounds writing one response
};

class http_server {
 public:
  // Binds and starts accepting on the loop. Errors: the address cannot be bound (names host:port).
  static result<std::unique_ptr<http_server>> start(io::event_loop& loop, server_options options, router routes);
  // Stops accepting and closes every connection; waits on the loop for that (from the loop thread it runs
  // inline). Handlers still working may call their responders afterwards: those answers are dropped.
  ~http_server();
  uint16_t port() const noexcept;
  // Closes the listening socket: no new connection is accepted; open connections (and requests in flight)
  // go on until the server is destroyed. For a graceful stop. Any thread (waits on the loop).
  void stop_accepting();
  // Replaces the bearer token (empty: no auth) for every request authenticated from now on, on open
  // connections too; for a token file reloaded on SIGHUP. Any thread (waits on the loop).
  void set_bearer_token(std::string token);

  struct impl;

 private:
  explicit http_server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace deltasync::http
