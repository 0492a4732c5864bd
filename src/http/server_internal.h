// Internal to src/http: the server's listener (the acceptor and the registry of open sessions) and its session
// (one connection: read a request, authenticate and route it, wait for the handler, write the answer).
// server.cc defines the listener and the public http_server; server_session.cc defines the session. Not a
// public header: nothing outside src/http/server*.cc includes it.
//
// Threading: both live on the loop thread; only session::answer may be called from another thread (it posts
// itself to the loop).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "http/server.h"

namespace deltasync::http::server_detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;

// The read buffer holds the header block plus at most one read's worth of body.
constexpr uint64_t k_read_chunk_bytes = 64 << 10;

class session;

// Owns the acceptor and the registry of open sessions. Shared by the sessions, so that completions that
// arrive after http_server is gone still find valid state (they see `stopped` and do nothing).
class listener : public std::enable_shared_from_this<listener> {
 public:
  listener(asio::io_context& ctx, server_options options, router routes)
      : ctx_(ctx), options_(std::move(options)), routes_(std::move(routes)), acceptor_(ctx), backoff_(ctx) {}

  status open();
  void start_accept();
  void stop_accepting();  // closes the acceptor only; open sessions go on
  void shutdown();
  void set_bearer_token(std::string token) { options_.bearer_token = std::move(token); }

  uint16_t port() const noexcept { return port_; }
  asio::io_context& ctx() noexcept { return ctx_; }
  const server_options& options() const noexcept { return options_; }
  const router& routes() const noexcept { return routes_; }
  void forget(uint64_t id) { sessions_.erase(id); }
  // True for GET /healthz and the reserved routes: what a connection on a reserved slot may ask for.
  bool reserved_route(std::string_view method, std::string_view path) const;
  bool stopped() const noexcept { return stopped_; }

 private:
  void on_accept(beast::error_code ec, tcp::socket socket);
  // Closes the connection idle longest; false when none is idle.
  bool shed_idle();

  asio::io_context& ctx_;
  server_options options_;
  router routes_;
  tcp::acceptor acceptor_;
  asio::steady_timer backoff_;
  uint16_t port_ = 0;
  bool stopped_ = false;
  uint64_t next_id_ = 1;
  uint64_t shed_ = 0;     // idle connections closed to make room, for the log
  steady::time_point last_limit_log_{};
  std::unordered_map<uint64_t, std::weak_ptr<session>> sessions_;
};

// One connection. Strictly one request at a time: read header, (100-continue), read body, dispatch, wait
// for the handler, write, then read the next request or close.
class session : public std::enable_shared_from_this<session> {
 public:
  session(std::shared_ptr<listener> owner, tcp::socket socket, uint64_t id, std::string remote)
      : owner_(std::move(owner)),
        stream_(std::move(socket)),
        buffer_(static_cast<size_t>(owner_->options().max_header_bytes + k_read_chunk_bytes)),
        id_(id),
        remote_(std::move(remote)) {}

  void start() { start_read_header(); }
  void close();
  // Waiting for a request and not one byte of it received: what the connection limit sheds first.
  // (The parser may already have consumed a partial header from the buffer: got_some() says so.)
  bool idle() const noexcept {
    return !closed_ && waiting_header_ && buffer_.size() == 0 && !(parser_ && parser_->got_some());
  }
  steady::time_point idle_since() const noexcept { return idle_since_; }
  // This connection sits on a reserved slot: it is served one request of a reserved route, then closed.
  void set_reserved() noexcept { reserved_ = true; }
  // The handler's answer for request `seq` (any thread; moved to the loop thread).
  void answer(uint64_t seq, response r);

 private:
  void start_read_header();
  void on_read_header(beast::error_code ec, size_t bytes);
  void start_continue();
  void on_continue(beast::error_code ec, size_t bytes);
  void start_read_body();
  void on_read_body(beast::error_code ec, size_t bytes);
  void on_read_error(beast::error_code ec);
  void dispatch();
  void start_write(response r, bool close_after);
  void on_write(beast::error_code ec, size_t bytes);
  void start_linger();
  void on_linger(beast::error_code ec, size_t bytes);

  std::shared_ptr<listener> owner_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bhttp::response<bhttp::string_body> res_;  // the response in flight; lives until on_write
  uint64_t id_;
  std::string remote_;
  bool closed_ = false;
  bool awaiting_handler_ = false;
  bool keep_alive_ = false;
  bool close_after_write_ = false;
  bool waiting_header_ = false;
  bool reserved_ = false;
  steady::time_point idle_since_{};
  uint64_t seq_ = 0;  // the request being served; a responder for an older one is stale
  std::string log_method_ = "-", log_target_ = "-";
  steady::time_point request_start_{};
  uint64_t lingered_bytes_ = 0;
  std::array<char, 16 << 10> drain_{};
};

}  // namespace deltasync::http::server_detail
