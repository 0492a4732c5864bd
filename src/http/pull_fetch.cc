// fetch_discard: the raw link throughput measurement of `deltasync bench` (one GET over one connection, its
// body read into a scratch buffer and dropped).
#include <chrono>
#include <future>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "base/check.h"
#include "base/clock.h"
#include "http/pull_source.h"
#include "http/pull_url.h"
#include "io/asio_context.h"
#include "io/event_loop.h"

namespace deltasync::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

// See pull_source.cc: Beast reads at most the buffer's free capacity per call.
constexpr size_t k_read_buffer_bytes = 1 << 20;

}  // namespace

result<fetch_result> fetch_discard(io::event_loop& loop, const std::string& url_text, uint32_t timeout_ms) {
  DS_CHECK(!loop.in_loop_thread(), "fetch_discard blocks; never call it on the loop thread");
  DS_ASSIGN_OR_RETURN(url_parts url, parse_http_url(url_text));
  struct state {
    explicit state(asio::io_context& ctx) : resolver(ctx), stream(ctx) { buf.reserve(k_read_buffer_bytes); }
    tcp::resolver resolver;
    beast::tcp_stream stream;
    beast::flat_buffer buf;
    bhttp::request<bhttp::empty_body> req;
    bhttp::response_parser<bhttp::buffer_body> parser;
    std::vector<std::byte> scratch = std::vector<std::byte>(4 << 20);
    uint64_t bytes = 0;
    stopwatch sw;
    std::promise<result<fetch_result>> done;
    std::function<void()> read_more;
  };
  auto& ctx = io::asio_context(loop);
  auto st = std::make_shared<state>(ctx);
  auto fut = st->done.get_future();
  loop.post([st, url, timeout_ms] {
    auto fail = [st](const std::string& what, beast::error_code ec) {
      st->read_more = nullptr;
      st->done.set_value(error(errc::upstream_error, what + ": " + ec.message()));
    };
    st->req.version(11);
    st->req.method(bhttp::verb::get);
    st->req.target(url.prefix.empty() ? "/" : url.prefix);
    st->req.set(bhttp::field::host, url.host + ":" + url.port);
    st->req.keep_alive(false);
    st->parser.body_limit(boost::none);
    st->read_more = [st, fail] {
      auto& body = st->parser.get().body();
      body.data = st->scratch.data();
      body.size = st->scratch.size();
      bhttp::async_read(st->stream, st->buf, st->parser, [st, fail](beast::error_code ec, size_t) {
        if (ec == bhttp::error::need_buffer) ec = {};
        if (ec) return fail("read body", ec);
        st->bytes += st->scratch.size() - st->parser.get().body().size;
        if (!st->parser.is_done()) return st->read_more();
        const unsigned code = st->parser.get().result_int();
        st->read_more = nullptr;
        if (code != 200) return st->done.set_value(error(errc::upstream_error, "GET answered " + std::to_string(code)));
        st->done.set_value(fetch_result{st->bytes, st->sw.elapsed_s()});
      });
    };
    st->stream.expires_after(std::chrono::milliseconds(timeout_ms));
    st->resolver.async_resolve(url.host, url.port, [st, fail](beast::error_code ec, tcp::resolver::results_type r) {
      if (ec) return fail("resolve", ec);
      st->stream.async_connect(r, [st, fail](beast::error_code ec2, const tcp::endpoint&) {
        if (ec2) return fail("connect", ec2);
        st->sw.reset();
        bhttp::async_write(st->stream, st->req, [st, fail](beast::error_code ec3, size_t) {
          if (ec3) return fail("send request", ec3);
          bhttp::async_read_header(st->stream, st->buf, st->parser, [st, fail](beast::error_code ec4, size_t) {
            if (ec4) return fail("read header", ec4);
            st->read_more();
          });
        });
      });
    });
  });
  auto r = fut.get();
  loop.run_sync([st] {
    beast::error_code ignored;
    st->stream.socket().close(ignored);
  });
  return r;
}

}  // namespace deltasync::http
