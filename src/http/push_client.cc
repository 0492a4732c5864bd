// The push client's fan-out: one asynchronous POST per receiver on the event loop, all in flight at once,
// joined by a promise that the calling (non-loop) thread waits on.
#include "http/push_client.h"

#include <algorithm>
#include <chrono>
#include <future>
#include <memory>
#include <string_view>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
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

// A receiver's header block is a few hundred bytes; anything near this is not one of ours.
constexpr uint32_t k_max_response_header_bytes = 64 << 10;

struct parsed_url {
  std::string host, port, prefix;
};

result<parsed_url> parse_url(const std::string& url) {
  constexpr std::string_view scheme = "http://";
  if (url.compare(0, scheme.size(), scheme) != 0)
    return error(errc::invalid_argument, "unsupported URL '" + url + "': only http://host:port[/prefix] is supported");
  const std::string rest = url.substr(scheme.size());
  const auto slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  parsed_url u;
  if (slash != std::string::npos) u.prefix = rest.substr(slash);
  while (!u.prefix.empty() && u.prefix.back() == '/') u.prefix.pop_back();
  if (authority.empty() || authority.find('@') != std::string::npos)
    return error(errc::invalid_argument, "bad URL '" + url + "': expected http://host:port");
  std::string port_text;
  if (authority[0] == '[') {  // [v6 address]:port
    const auto close = authority.find(']');
    if (close == std::string::npos) return error(errc::invalid_argument, "bad URL '" + url + "': unterminated '['");
    u.host = authority.substr(1, close - 1);
    const std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return error(errc::invalid_argument, "bad URL '" + url + "': junk after ']'");
      port_text = after.substr(1);
    }
  } else {
    const auto colon = authority.rfind(':');
    u.host = authority.substr(0, colon);
    if (colon != std::string::npos) port_text = authority.substr(colon + 1);
  }
  if (port_text.empty()) port_text = "80";
  unsigned long port = 0;
  for (char c : port_text) {
    if (c < '0' || c > '9' || port > 65535) return error(errc::invalid_argument, "bad port in URL '" + url + "'");
    port = port * 10 + static_cast<unsigned long>(c - '0');
  }
  if (u.host.empty() || port == 0 || port > 65535)
    return error(errc::invalid_argument, "bad host or port in URL '" + url + "'");
  u.port = port_text;
  return u;
}

// The join point of one post_all: loop-thread state only, except `done`, which hands the outcomes over.
struct fanout {
  std::vector<push_outcome> outcomes;
  size_t remaining = 0;
  std::promise<void> done;

  void finish_one() {
    DS_CHECK(remaining > 0, "push fan-out finished more requests than it started");
    if (--remaining == 0) done.set_value();
  }
};

// One POST to one receiver: resolve, connect, write, read, each bounded by the same overall deadline.
class push_op : public std::enable_shared_from_this<push_op> {
 public:
  push_op(asio::io_context& ctx, std::shared_ptr<fanout> join, size_t index, parsed_url url,
          const push_client_options& options, bool get, const std::string& path, const std::string& body)
      : join_(std::move(join)),
        index_(index),
        url_(std::move(url)),
        options_(options),
        resolver_(ctx),
        resolve_timer_(ctx),
        stream_(ctx) {
    req_.version(11);
    req_.method(get ? bhttp::verb::get : bhttp::verb::post);
    req_.target(url_.prefix + (path.empty() || path[0] != '/' ? "/" : "") + path);
    req_.set(bhttp::field::host, url_.host + ":" + url_.port);
    req_.set(bhttp::field::user_agent, "deltasync");
    if (!get) req_.set(bhttp::field::content_type, "application/json");
    if (!options_.bearer_token.empty()) req_.set(bhttp::field::authorization, "Bearer " + options_.bearer_token);
    req_.keep_alive(false);  // one request per connection: pushes are rare and long
    if (!get) {
      req_.body() = body;
      req_.prepare_payload();
    }
    parser_.header_limit(k_max_response_header_bytes);
    parser_.body_limit(options_.max_response_bytes);
  }

  void start() {
    start_ = steady::now();
    deadline_ = start_ + std::chrono::milliseconds(options_.timeout_ms);
    // tcp_stream's deadline does not cover the resolver: a timer cancels a slow resolution.
    resolve_timer_.expires_at(deadline_);
    resolve_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec) return;  // cancelled: resolution finished first
      self->timed_out_ = true;
      self->resolver_.cancel();
    });
    resolver_.async_resolve(url_.host, url_.port, beast::bind_front_handler(&push_op::on_resolve, shared_from_this()));
  }

 private:
  void on_resolve(beast::error_code ec, tcp::resolver::results_type results) {
    resolve_timer_.cancel();
    if (timed_out_) return fail("resolve " + url_.host, beast::error::timeout);
    if (ec) return fail("resolve " + url_.host, ec);
    stream_.expires_at(deadline_);
    stream_.async_connect(results, beast::bind_front_handler(&push_op::on_connect, shared_from_this()));
  }

  void on_connect(beast::error_code ec, const tcp::endpoint&) {
    if (ec) return fail("connect " + url_.host + ":" + url_.port, ec);
    stream_.expires_at(deadline_);
    bhttp::async_write(stream_, req_, beast::bind_front_handler(&push_op::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, size_t) {
    if (ec) return fail("send request", ec);
    stream_.expires_at(deadline_);
    bhttp::async_read(stream_, buffer_, parser_, beast::bind_front_handler(&push_op::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, size_t) {
    if (ec) return fail("read response", ec);
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
    auto& res = parser_.get();
    push_outcome& out = outcome();
    out.http_status = res.result_int();
    out.body = std::move(res.body());
    out.elapsed_s = elapsed_s();
    DS_LOG(debug, "http", "push %s%s -> %u (%.3f s)", out.url.c_str(), std::string(req_.target()).c_str(),
           out.http_status, out.elapsed_s);
    join_->finish_one();
  }

  void fail(const std::string& what, beast::error_code ec) {
    stream_.close();
    push_outcome& out = outcome();
    out.http_status = 0;
    out.elapsed_s = elapsed_s();
    if (ec == beast::error::timeout)
      out.transport_error = what + ": timed out after " + std::to_string(options_.timeout_ms) + " ms";
    else
      out.transport_error = what + ": " + ec.message();
    DS_LOG(warn, "http", "push to %s failed: %s", out.url.c_str(), out.transport_error.c_str());
    join_->finish_one();
  }

  push_outcome& outcome() { return join_->outcomes[index_]; }
  double elapsed_s() const { return std::chrono::duration<double>(steady::now() - start_).count(); }

  std::shared_ptr<fanout> join_;
  size_t index_;
  parsed_url url_;
  push_client_options options_;  // a copy: the op may outlive post_all by a cancelled timer's completion
  tcp::resolver resolver_;
  asio::steady_timer resolve_timer_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  bhttp::request<bhttp::string_body> req_;
  bhttp::response_parser<bhttp::string_body> parser_;
  steady::time_point start_{}, deadline_{};
  bool timed_out_ = false;
};

}  // namespace

push_client::push_client(io::event_loop& loop, push_client_options options)
    : loop_(loop), options_(std::move(options)) {
  DS_CHECK(options_.max_response_bytes > 0, "push response limit must be positive");
}

uint32_t push_timeout_ms_for(uint64_t sync_bytes) noexcept {
  if (sync_bytes == 0) return 600'000;
  const uint64_t ms = 15'000 + sync_bytes / 50'000;  // 1 ms per 50 kB = 1 s per 50 MB
  return static_cast<uint32_t>(std::min<uint64_t>(ms, 3'600'000));
}

std::vector<push_outcome> push_client::post_all(const std::vector<std::string>& urls, const std::string& path,
                                                const std::string& json_body, uint64_t sync_bytes) {
  return request_all(false, urls, path, json_body, sync_bytes);
}

push_outcome push_client::get(const std::string& url, const std::string& path) {
  return std::move(request_all(true, {url}, path, "", 0).front());
}

std::vector<push_outcome> push_client::request_all(bool get, const std::vector<std::string>& urls,
                                                   const std::string& path, const std::string& json_body,
                                                   uint64_t sync_bytes) {
  DS_CHECK(!loop_.in_loop_thread(), "push_client requests block; never call them on the loop thread");
  auto join = std::make_shared<fanout>();
  join->outcomes.resize(urls.size());
  std::vector<std::pair<size_t, parsed_url>> targets;
  for (size_t i = 0; i < urls.size(); ++i) {
    join->outcomes[i].url = urls[i];
    auto parsed = parse_url(urls[i]);
    if (parsed.ok()) {
      targets.emplace_back(i, std::move(parsed).value());
    } else {
      join->outcomes[i].transport_error = parsed.err().message;
      DS_LOG(warn, "http", "push: %s", parsed.err().message.c_str());
    }
  }
  if (targets.empty()) return std::move(join->outcomes);
  join->remaining = targets.size();
  auto finished = join->done.get_future();
  push_client_options o = options_;
  if (o.timeout_ms == 0) o.timeout_ms = push_timeout_ms_for(sync_bytes);
  loop_.post([this, join, targets = std::move(targets), get, path, json_body, o]() mutable {
    auto& ctx = io::asio_context(loop_);
    for (auto& [index, url] : targets)
      std::make_shared<push_op>(ctx, join, index, std::move(url), o, get, path, json_body)->start();
  });
  finished.wait();
  return std::move(join->outcomes);
}

}  // namespace deltasync::http
