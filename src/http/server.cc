// The HTTP/1.1 server on the event loop: a listener that accepts and keeps the registry of open sessions, the
// router and the public http_server. Each connection's session (read, authenticate, route, wait for the
// handler, write, loop or close) is in server_session.cc; both types are declared in server_internal.h.
#include "http/server.h"

#include <chrono>
#include <cstdio>
#include <string_view>

#include "base/check.h"
#include "base/log.h"
#include "base/text_escape.h"
#include "http/server_internal.h"
#include "io/asio_context.h"
#include "io/event_loop.h"

namespace deltasync::http {

namespace {

// When accept fails (EMFILE, ENFILE), wait before retrying instead of spinning on the loop.
constexpr std::chrono::milliseconds k_accept_backoff{100};

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

}  // namespace

namespace server_detail {

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
  if (stopped_ || !acceptor_.is_open()) return;
  acceptor_.async_accept(ctx_, beast::bind_front_handler(&listener::on_accept, shared_from_this()));
}

void listener::on_accept(beast::error_code ec, tcp::socket socket) {
  if (stopped_ || !acceptor_.is_open()) return;  // shut down, or stop_accepting()
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
  // At the limit, the longest-idle connection makes room; with none idle, a reserved slot is taken (health and
  // sync routes only); past those the new connection is closed.
  const size_t limit = options_.max_connections;
  bool reserved = false;
  if (sessions_.size() >= limit && !shed_idle()) reserved = true;
  if (reserved && sessions_.size() >= limit + options_.reserved_connections) {
    DS_LOG(warn, "http", "refusing connection from %s: %zu connections open, none idle (max-connections = %zu, %u reserved)",
           remote.c_str(), sessions_.size(), limit, options_.reserved_connections);
    socket.close(peer_ec);
  } else {
    const uint64_t id = next_id_++;
    auto s = std::make_shared<session>(shared_from_this(), std::move(socket), id, std::move(remote));
    sessions_.emplace(id, s);
    if (reserved) s->set_reserved();
    s->start();
  }
  start_accept();
}

void listener::stop_accepting() {
  beast::error_code ec;
  acceptor_.close(ec);
  backoff_.cancel();
}

bool listener::shed_idle() {
  std::shared_ptr<session> oldest;
  for (auto& [id, weak] : sessions_) {
    auto s = weak.lock();
    if (s && s->idle() && (!oldest || s->idle_since() < oldest->idle_since())) oldest = std::move(s);
  }
  if (!oldest) return false;
  ++shed_;
  // One line per 10 s at most: a flood of idle connections must not flood the log too.
  const auto now = steady::now();
  if (now - last_limit_log_ >= std::chrono::seconds(10)) {
    last_limit_log_ = now;
    DS_LOG(warn, "http", "at max-connections = %u: closing idle connections to make room (%llu so far)",
           options_.max_connections, static_cast<unsigned long long>(shed_));
  }
  oldest->close();  // forget() erases it from sessions_
  return true;
}

bool listener::reserved_route(std::string_view method, std::string_view path) const {
  if (method == "GET" && path == "/healthz") return true;
  for (const auto& r : options_.reserved_routes)
    if (path == r) return true;
  return false;
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

}  // namespace server_detail

response json_error(unsigned status, const std::string& message, const std::string& extra_json_fields) {
  response r;
  r.status = status;
  r.body = "{\"error\": \"" + json_escape(escape_control(message)) + "\"";  // untrusted text escaped
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
  std::shared_ptr<server_detail::listener> l;
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
    p->l = std::make_shared<server_detail::listener>(io::asio_context(loop), std::move(options), std::move(routes));
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

void http_server::stop_accepting() {
  auto l = impl_->l;
  impl_->loop->run_sync([l] { l->stop_accepting(); });
}

void http_server::set_bearer_token(std::string token) {
  auto l = impl_->l;
  impl_->loop->run_sync([l, &token] { l->set_bearer_token(std::move(token)); });
}

}  // namespace deltasync::http
