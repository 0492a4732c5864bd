// The server's session: one connection, strictly one request at a time (read the header block, honour
// "Expect: 100-continue", read the body, check the bearer token, route, wait for the handler's answer, write it),
// then keep-alive or a lingering close. The listener that creates sessions is in server.cc; both are declared
// in server_internal.h.
#include <atomic>
#include <chrono>
#include <exception>
#include <limits>
#include <string_view>

#include <boost/asio/post.hpp>

#include "base/log.h"
#include "http/server_internal.h"

namespace deltasync::http::server_detail {

namespace {

// After an answer that closes the connection (400, 413), the unread rest of the request is drained for at
// most this long and this many bytes before the socket is closed: closing with unread input makes the
// kernel send a RST, which can destroy the answer before the client reads it.
constexpr std::chrono::milliseconds k_linger_timeout{2000};
constexpr uint64_t k_linger_max_bytes = 64ull << 20;

constexpr std::string_view k_continue = "HTTP/1.1 100 Continue\r\n\r\n";

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

}  // namespace

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
  waiting_header_ = true;
  idle_since_ = steady::now();
  // A reserved slot is held briefly: its one request must arrive promptly.
  stream_.expires_after(std::chrono::milliseconds(reserved_ ? std::min<uint32_t>(o.read_timeout_ms, 2000) : o.read_timeout_ms));
  bhttp::async_read_header(stream_, buffer_, *parser_,
                           beast::bind_front_handler(&session::on_read_header, shared_from_this()));
}

void session::on_read_header(beast::error_code ec, size_t) {
  waiting_header_ = false;
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

  if (reserved_ && !owner_->reserved_route(req.method, req.path)) {
    DS_LOG(warn, "http", "%s: %s %s refused on a reserved connection slot (max-connections = %u)", remote_.c_str(),
           req.method.c_str(), req.path.c_str(), o.max_connections);
    return start_write(json_error(503, "the server is at its connection limit (max-connections = " +
                                           std::to_string(o.max_connections) +
                                           "); only /healthz and the sync routes are served past it"),
                       true);
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
  start_write(std::move(r), !keep_alive_ || reserved_);  // a reserved slot serves one request
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
  if (r.retry_after_s != 0) res_.set(bhttp::field::retry_after, std::to_string(r.retry_after_s));
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

}  // namespace deltasync::http::server_detail
