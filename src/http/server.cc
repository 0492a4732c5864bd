// The HTTP/1.1 server on the event loop: a listener that accepts, and one session per connection that
// reads a request, authenticates and routes it, waits for the handler's answer, writes it, and loops
// (keep-alive) or closes.
#include "http/server.h"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <limits>
#include <optional>
#include <string_view>
#include <unordered_map>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "base/check.h"
#include "base/log.h"
#include "io/asio_context.h"
#include "io/event_loop.h"

namespace deltasync::http {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;

// After an answer that closes the connection (400, 413), the unread rest of the request is drained for at
// most this long and this many bytes before the socket is closed: closing with unread input makes the
// kernel send a RST, which can destroy the answer before the client reads it.
constexpr std::chrono::milliseconds k_linger_timeout{2000};
constexpr uint64_t k_linger_max_bytes = 64ull << 20;
// When accept fails (EMFILE, ENFILE), wait before retrying instead of spinning on the loop.
constexpr std::chrono::milliseconds k_accept_backoff{100};
// The read buffer holds the header block plus at most one read's worth of body.
constexpr uint64_t k_read_chunk_bytes = 64 << 10;

constexpr std::string_view k_continue = "HTTP/1.1 100 Continue\r\n\r\n";

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

// Constant time in the configured token's length: every byte is compared whatever the first mismatch, so
// the answer's timing does not reveal how much of a guess was right.
bool bearer_matches(std::string_view header, const std::string& token) {
  constexpr std::string_view scheme = "Bearer ";
  if (header.size() < scheme.size() || !beast::iequals(header.substr(0, scheme.size()), scheme)) return false;
  const std::string_view given = header.substr(scheme.size());
  unsigned diff = given.size() == token.size() ? 0u : 1u;
  for (size_t i = 0; i < token.size(); ++i) {
    const auto g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0u;
    diff |= g ^ static_cast<unsigned char>(token[i]);
  }
  return diff == 0;
}

double ms_since(steady::time_point t) {
  return std::chrono::duration<double, std::milli>(steady::now() - t).count();
}

class session;

// Owns the acceptor and the registry of open sessions. Shared by the sessions, so that completions that
// arrive after http_server is gone still find valid state (they see `stopped` and do nothing).
class listener : public std::enable_shared_from_this<listener> {
 public:
  listener(asio::io_context& ctx, server_options options, router routes)
      : ctx_(ctx), options_(std::move(options)), routes_(std::move(routes)), acceptor_(ctx), backoff_(ctx) {}

  status open();
  void start_accept();
  void shutdown();

  uint16_t port() const noexcept { return port_; }
  asio::io_context& ctx() noexcept { return ctx_; }
  const server_options& options() const noexcept { return options_; }
  const router& routes() const noexcept { return routes_; }
  void forget(uint64_t id) { sessions_.erase(id); }
  bool stopped() const noexcept { return stopped_; }

 private:
  void on_accept(beast::error_code ec, tcp::socket socket);

  asio::io_context& ctx_;
  server_options options_;
  router routes_;
  tcp::acceptor acceptor_;
  asio::steady_timer backoff_;
  uint16_t port_ = 0;
  bool stopped_ = false;
  uint64_t next_id_ = 1;
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
  uint64_t seq_ = 0;  // the request being served; a responder for an older one is stale
  std::string log_method_ = "-", log_target_ = "-";
  steady::time_point request_start_{};
  uint64_t lingered_bytes_ = 0;
  std::array<char, 16 << 10> drain_{};
};

// What a responder shares with its copies: answered once, then inert. It holds the session strongly: while a
// handler works, nothing else keeps the connection alive (no operation is pending on it). Destroyed
// unanswered, it answers 500 so that a handler bug cannot leave a client waiting forever.
struct pending_answer {
  std::shared_ptr<session> target;
  uint64_t seq = 0;
  std::atomic<bool> answered{false};

  pending_answer(std::shared_ptr<session> t, uint64_t s) : target(std::move(t)), seq(s) {}
  pending_answer(const pending_answer&) = delete;
  pending_answer& operator=(const pending_answer&) = delete;
  ~pending_answer() {
    if (answered.load()) return;
    DS_LOG(warn, "http", "a handler dropped its responder without answering; answering 500");
    target->answer(seq, json_error(500, "the handler did not answer"));
  }
  void deliver(response r) {
    if (answered.exchange(true)) {
      DS_LOG(warn, "http", "a responder was called twice; the second answer is ignored");
      return;
    }
    target->answer(seq, std::move(r));
  }
};

status listener::open() {
  const std::string where = options_.host + ":" + std::to_string(options_.port);
  beast::error_code ec;
  tcp::endpoint ep;
  const auto addr = asio::ip::make_address(options_.host, ec);
  if (!ec) {
    ep = tcp::endpoint(addr, options_.port);
  } else {
    // A host name: resolved synchronously, once, at start-up.
    tcp::resolver resolver(ctx_);
    const auto results = resolver.resolve(options_.host, std::to_string(options_.port), ec);
    if (ec || results.empty())
      return error(ec ? std::error_code(ec) : make_error_code(errc::not_found),
                   "http server: cannot resolve " + where + ": " + (ec ? ec.message() : "no address"));
    ep = results.begin()->endpoint();
  }
  if (acceptor_.open(ep.protocol(), ec); ec) return error(ec, "http server: socket for " + where + ": " + ec.message());
  // SO_REUSEADDR lets a restarted receiver bind while old connections sit in TIME_WAIT.
  if (acceptor_.set_option(asio::socket_base::reuse_address(true), ec); ec)
    return error(ec, "http server: SO_REUSEADDR on " + where + ": " + ec.message());
  if (acceptor_.bind(ep, ec); ec) return error(ec, "http server: cannot bind " + where + ": " + ec.message());
  if (acceptor_.listen(asio::socket_base::max_listen_connections, ec); ec)
    return error(ec, "http server: cannot listen on " + where + ": " + ec.message());
  port_ = acceptor_.local_endpoint(ec).port();
  if (ec) return error(ec, "http server: local address of " + where + ": " + ec.message());
  return {};
}

void listener::start_accept() {
  if (stopped_) return;
  acceptor_.async_accept(ctx_, beast::bind_front_handler(&listener::on_accept, shared_from_this()));
}

void listener::on_accept(beast::error_code ec, tcp::socket socket) {
  if (stopped_) return;
  if (ec) {
    DS_LOG(warn, "http", "accept failed: %s; retrying in %lld ms", ec.message().c_str(),
           static_cast<long long>(k_accept_backoff.count()));
    backoff_.expires_after(k_accept_backoff);
    backoff_.async_wait([self = shared_from_this()](beast::error_code wait_ec) {
      if (!wait_ec) self->start_accept();
    });
    return;
  }
  beast::error_code peer_ec;
  const auto peer = socket.remote_endpoint(peer_ec);
  std::string remote = peer_ec ? std::string("?") : peer.address().to_string() + ":" + std::to_string(peer.port());
  if (sessions_.size() >= options_.max_connections) {
    DS_LOG(warn, "http", "refusing connection from %s: %zu connections open (max_connections)", remote.c_str(),
           sessions_.size());
    socket.close(peer_ec);
  } else {
    const uint64_t id = next_id_++;
    auto s = std::make_shared<session>(shared_from_this(), std::move(socket), id, std::move(remote));
    sessions_.emplace(id, s);
    s->start();
  }
  start_accept();
}

void listener::shutdown() {
  stopped_ = true;
  beast::error_code ec;
  acceptor_.close(ec);
  backoff_.cancel();
  auto open = std::move(sessions_);  // close() calls forget(): iterate a copy
  sessions_.clear();
  for (auto& [id, weak] : open)
    if (auto s = weak.lock()) s->close();
}

void session::close() {
  if (closed_) return;
  closed_ = true;
  owner_->forget(id_);
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
  stream_.close();
}

void session::start_read_header() {
  if (closed_) return;
  const auto& o = owner_->options();
  parser_.emplace();
  parser_->header_limit(static_cast<uint32_t>(std::min<uint64_t>(o.max_header_bytes, std::numeric_limits<uint32_t>::max())));
  parser_->body_limit(o.max_body_bytes);
  log_method_ = "-";
  log_target_ = "-";
  stream_.expires_after(std::chrono::milliseconds(o.read_timeout_ms));
  bhttp::async_read_header(stream_, buffer_, *parser_,
                           beast::bind_front_handler(&session::on_read_header, shared_from_this()));
}

void session::on_read_header(beast::error_code ec, size_t) {
  if (closed_) return;
  if (ec) return on_read_error(ec);
  request_start_ = steady::now();
  const auto& req = parser_->get();
  log_method_ = std::string(req.method_string());
  log_target_ = std::string(req.target());
  if (parser_->is_done()) return dispatch();
  // Clients such as curl wait (about a second) for this before sending a large body.
  if (beast::iequals(req[bhttp::field::expect], "100-continue")) return start_continue();
  start_read_body();
}

void session::start_continue() {
  stream_.expires_after(std::chrono::milliseconds(owner_->options().write_timeout_ms));
  asio::async_write(stream_, asio::buffer(k_continue.data(), k_continue.size()),
                    beast::bind_front_handler(&session::on_continue, shared_from_this()));
}

void session::on_continue(beast::error_code ec, size_t) {
  if (closed_) return;
  if (ec) return on_read_error(ec);
  start_read_body();
}

void session::start_read_body() {
  stream_.expires_after(std::chrono::milliseconds(owner_->options().read_timeout_ms));
  bhttp::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&session::on_read_body, shared_from_this()));
}

void session::on_read_body(beast::error_code ec, size_t) {
  if (closed_) return;
  if (ec) return on_read_error(ec);
  dispatch();
}

void session::on_read_error(beast::error_code ec) {
  if (ec == bhttp::error::end_of_stream || ec == asio::error::operation_aborted) return close();
  if (ec == beast::error::timeout) {
    DS_LOG(debug, "http", "%s: closing connection after %u ms without a complete request", remote_.c_str(),
           owner_->options().read_timeout_ms);
    return close();
  }
  if (ec == bhttp::error::body_limit) {
    DS_LOG(warn, "http", "%s: %s %s: body over %llu bytes", remote_.c_str(), log_method_.c_str(), log_target_.c_str(),
           static_cast<unsigned long long>(owner_->options().max_body_bytes));
    return start_write(json_error(413, "request body exceeds " + std::to_string(owner_->options().max_body_bytes) +
                                           " bytes (max-body-bytes)"),
                       true);
  }
  if (ec == bhttp::error::header_limit) {
    DS_LOG(warn, "http", "%s: header block over %llu bytes", remote_.c_str(),
           static_cast<unsigned long long>(owner_->options().max_header_bytes));
    return start_write(json_error(413, "request header block exceeds " +
                                           std::to_string(owner_->options().max_header_bytes) + " bytes (max-header-bytes)"),
                       true);
  }
  if (ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category()) {  // a parse error
    DS_LOG(warn, "http", "%s: unparsable request: %s", remote_.c_str(), ec.message().c_str());
    return start_write(json_error(400, "unparsable HTTP request: " + ec.message()), true);
  }
  // Reset, broken pipe and the like: nobody left to answer.
  DS_LOG(debug, "http", "%s: connection error: %s", remote_.c_str(), ec.message().c_str());
  close();
}

void session::dispatch() {
  auto& msg = parser_->get();
  keep_alive_ = msg.keep_alive();
  request req;
  req.method = std::string(msg.method_string());
  const std::string_view target = msg.target();
  const auto q = target.find('?');
  req.path = std::string(target.substr(0, q));
  if (q != std::string_view::npos) req.query = std::string(target.substr(q + 1));
  req.content_type = std::string(msg[bhttp::field::content_type]);
  req.body = std::move(msg.body());
  req.remote = remote_;

  const auto& o = owner_->options();
  const bool exempt = req.method == "GET" && req.path == "/healthz";
  if (!o.bearer_token.empty() && !exempt && !bearer_matches(msg[bhttp::field::authorization], o.bearer_token)) {
    DS_LOG(warn, "http", "%s: %s %s: missing or wrong bearer token", remote_.c_str(), req.method.c_str(),
           req.path.c_str());
    return start_write(json_error(401, "missing or wrong bearer token"), !keep_alive_);
  }

  const router::route* match = nullptr;
  std::string allowed;
  for (const auto& r : owner_->routes().routes()) {
    if (r.path != req.path) continue;
    if (r.method == req.method) {
      match = &r;
      break;
    }
    allowed += allowed.empty() ? r.method : ", " + r.method;
  }
  if (match == nullptr) {
    if (allowed.empty()) return start_write(json_error(404, "no route for " + req.path), !keep_alive_);
    response r = json_error(405, req.method + " is not allowed on " + req.path + " (allowed: " + allowed + ")");
    return start_write(std::move(r), !keep_alive_);
  }

  // Nothing is read while the handler works (no pipelining), so no read deadline may fire meanwhile.
  stream_.expires_never();
  awaiting_handler_ = true;
  const uint64_t seq = ++seq_;
  auto pending = std::make_shared<pending_answer>(shared_from_this(), seq);
  try {
    match->h(req, [pending](response r) { pending->deliver(std::move(r)); });
  } catch (const std::exception& e) {
    DS_LOG(warn, "http", "%s %s: handler threw: %s", req.method.c_str(), req.path.c_str(), e.what());
    pending->deliver(json_error(500, std::string("internal error: ") + e.what()));
  } catch (...) {
    DS_LOG(warn, "http", "%s %s: handler threw a non-exception", req.method.c_str(), req.path.c_str());
    pending->deliver(json_error(500, "internal error"));
  }
}

void session::answer(uint64_t seq, response r) {
  if (!owner_->ctx().get_executor().running_in_this_thread()) {
    asio::post(owner_->ctx(), [self = shared_from_this(), seq, r = std::move(r)]() mutable {
      self->answer(seq, std::move(r));
    });
    return;
  }
  if (closed_ || !awaiting_handler_ || seq != seq_) {
    DS_LOG(debug, "http", "%s: dropping the answer to %s %s: connection closed", remote_.c_str(), log_method_.c_str(),
           log_target_.c_str());
    return;
  }
  awaiting_handler_ = false;
  start_write(std::move(r), !keep_alive_);
}

void session::start_write(response r, bool close_after) {
  if (closed_) return;
  if (r.status < 100 || r.status > 599) {
    DS_LOG(warn, "http", "%s %s: handler answered invalid status %u; sending 500", log_method_.c_str(),
           log_target_.c_str(), r.status);
    r = json_error(500, "the handler answered an invalid status");
  }
  close_after_write_ = close_after;
  res_ = {};
  res_.version(11);
  res_.result(r.status);
  res_.set(bhttp::field::server, "deltasync");
  res_.set(bhttp::field::content_type, r.content_type);
  if (r.status == 401) res_.set(bhttp::field::www_authenticate, "Bearer");
  res_.body() = std::move(r.body);
  res_.keep_alive(!close_after);
  res_.prepare_payload();
  const auto level = r.status >= 500 ? log_level::warn : log_level::debug;
  if (level >= current_log_level())
    log_line(level, "http", "%s %s %s -> %u (%zu bytes, %.1f ms)", remote_.c_str(), log_method_.c_str(),
             log_target_.c_str(), r.status, res_.body().size(),
             request_start_ == steady::time_point{} ? 0.0 : ms_since(request_start_));
  stream_.expires_after(std::chrono::milliseconds(owner_->options().write_timeout_ms));
  bhttp::async_write(stream_, res_, beast::bind_front_handler(&session::on_write, shared_from_this()));
}

void session::on_write(beast::error_code ec, size_t) {
  if (closed_) return;
  if (ec) {
    DS_LOG(debug, "http", "%s: write failed: %s", remote_.c_str(), ec.message().c_str());
    return close();
  }
  res_ = {};
  request_start_ = {};
  if (close_after_write_) return start_linger();
  start_read_header();
}

void session::start_linger() {
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (ec) return close();
  stream_.expires_after(std::min(k_linger_timeout, std::chrono::milliseconds(owner_->options().read_timeout_ms)));
  stream_.async_read_some(asio::buffer(drain_), beast::bind_front_handler(&session::on_linger, shared_from_this()));
}

void session::on_linger(beast::error_code ec, size_t bytes) {
  if (closed_) return;
  lingered_bytes_ += bytes;
  if (ec || lingered_bytes_ > k_linger_max_bytes) return close();
  stream_.async_read_some(asio::buffer(drain_), beast::bind_front_handler(&session::on_linger, shared_from_this()));
}

}  // namespace

response json_error(unsigned status, const std::string& message, const std::string& extra_json_fields) {
  response r;
  r.status = status;
  r.body = "{\"error\": \"" + json_escape(message) + "\"";
  if (!extra_json_fields.empty()) r.body += ", " + extra_json_fields;
  r.body += "}";
  return r;
}

void router::add(std::string method, std::string path, handler h) {
  DS_CHECK(!path.empty() && path[0] == '/', "route paths start with '/'");
  DS_CHECK(h != nullptr, "a route needs a handler");
  for (const auto& r : routes_) DS_CHECK(!(r.method == method && r.path == path), "duplicate route");
  routes_.push_back(route{std::move(method), std::move(path), std::move(h)});
}

struct http_server::impl {
  io::event_loop* loop = nullptr;
  std::shared_ptr<listener> l;
};

http_server::http_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

result<std::unique_ptr<http_server>> http_server::start(io::event_loop& loop, server_options options, router routes) {
  DS_CHECK(options.max_header_bytes > 0 && options.max_body_bytes > 0, "http server limits must be positive");
  DS_CHECK(options.read_timeout_ms > 0 && options.write_timeout_ms > 0, "http server timeouts must be positive");
  DS_CHECK(options.max_connections > 0, "max_connections must be positive");
  auto p = std::make_unique<impl>();
  p->loop = &loop;
  status opened;
  const std::string host = options.host;
  loop.run_sync([&] {
    p->l = std::make_shared<listener>(io::asio_context(loop), std::move(options), std::move(routes));
    opened = p->l->open();
    if (opened.ok()) p->l->start_accept();
  });
  if (!opened.ok()) return std::move(opened).err();
  DS_LOG(info, "http", "listening on %s:%u", host.c_str(), static_cast<unsigned>(p->l->port()));
  return std::unique_ptr<http_server>(new http_server(std::move(p)));
}

http_server::~http_server() {
  if (!impl_ || !impl_->l) return;
  auto l = impl_->l;
  impl_->loop->run_sync([l] { l->shutdown(); });
}

uint16_t http_server::port() const noexcept { return impl_->l->port(); }

}  // namespace deltasync::http
