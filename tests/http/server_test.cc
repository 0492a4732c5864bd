// http_server on loopback, driven by a raw Beast client: routing, auth, limits, keep-alive, timeouts,
// deferred answers, handler failures, connection limits, shutdown with requests in flight.
#include "http/server.h"

#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <gtest/gtest.h>

#include "io/asio_context.h"
#include "io/event_loop.h"

namespace deltasync::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// A blocking client built on async operations with a deadline, so a misbehaving server fails the test
// instead of hanging it.
class test_client {
 public:
  explicit test_client(uint16_t port) : stream_(ctx_) {
    run([&] {
      stream_.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port),
                            [this](beast::error_code ec) { ec_ = ec; });
    });
    connect_ec = ec_;
  }

  beast::error_code write_raw(const std::string& data) {
    run([&] { asio::async_write(stream_, asio::buffer(data), [this](beast::error_code ec, size_t) { ec_ = ec; }); });
    return ec_;
  }

  beast::error_code send(bhttp::request<bhttp::string_body> req) {
    req.prepare_payload();
    run([&] { bhttp::async_write(stream_, req, [this](beast::error_code ec, size_t) { ec_ = ec; }); });
    return ec_;
  }

  beast::error_code receive(bhttp::response<bhttp::string_body>& out, std::chrono::milliseconds timeout = 5s) {
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(64 << 20);
    run([&] { bhttp::async_read(stream_, buffer_, parser, [this](beast::error_code ec, size_t) { ec_ = ec; }); },
        timeout);
    if (!ec_) out = parser.release();
    return ec_;
  }

  // GET/POST with an optional bearer token; the response's status, or -1 on a transport error.
  int call(bhttp::verb verb, const std::string& target, const std::string& body = "", const std::string& token = "",
           std::string* body_out = nullptr) {
    bhttp::request<bhttp::string_body> req{verb, target, 11};
    req.set(bhttp::field::host, "127.0.0.1");
    if (!token.empty()) req.set(bhttp::field::authorization, "Bearer " + token);
    if (!body.empty() || verb == bhttp::verb::post) req.body() = body;
    if (send(std::move(req))) return -1;
    bhttp::response<bhttp::string_body> res;
    if (receive(res)) return -1;
    if (body_out) *body_out = res.body();
    last_ = res;
    return static_cast<int>(res.result_int());
  }

  // Reads raw bytes until the server closes (or the deadline): the error that ended the read.
  beast::error_code read_until_closed(std::string& out, std::chrono::milliseconds timeout = 5s) {
    std::array<char, 4096> chunk{};
    for (;;) {
      size_t n = 0;
      run([&] {
        stream_.async_read_some(asio::buffer(chunk), [&, this](beast::error_code ec, size_t got) {
          ec_ = ec;
          n = got;
        });
      },
          timeout);
      out.append(chunk.data(), n);
      if (ec_) return ec_;
    }
  }

  const bhttp::response<bhttp::string_body>& last() const { return last_; }
  beast::error_code connect_ec;

 private:
  template <typename F>
  void run(F start, std::chrono::milliseconds timeout = 5s) {
    ec_ = {};
    stream_.expires_after(timeout);
    start();
    ctx_.run();
    ctx_.restart();
  }

  asio::io_context ctx_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  beast::error_code ec_;
  bhttp::response<bhttp::string_body> last_;
};

// Responders parked by the /hold route; touched on the loop thread only.
class held_responders {
 public:
  void add(responder r) { held_.push_back(std::move(r)); }
  size_t count(io::event_loop& loop) {
    size_t n = 0;
    loop.run_sync([&] { n = held_.size(); });
    return n;
  }
  void answer_all(io::event_loop& loop) {
    loop.run_sync([&] {
      for (auto& r : held_) r(response{200, "text/plain", "too late"});
    });
  }
  void clear(io::event_loop& loop) {
    loop.run_sync([&] { held_.clear(); });
  }

 private:
  std::vector<responder> held_;
};

// The routes every test here uses: synchronous, deferred (a loop timer), echo, failing and parked ones.
result<std::unique_ptr<http_server>> start_test_server(io::event_loop& loop, const server_options& o,
                                                       std::shared_ptr<held_responders> held) {
  router r;
  r.add("GET", "/hello", [](const request&, responder respond) {
    respond(response{200, "application/json", R"({"hello": "world"})"});
  });
  r.add("GET", "/healthz", [](const request&, responder respond) { respond(response{200, "text/plain", "ok"}); });
  r.add("POST", "/echo", [](const request& req, responder respond) {
    respond(response{200, req.content_type.empty() ? "application/octet-stream" : req.content_type, req.body});
  });
  r.add("GET", "/inspect", [](const request& req, responder respond) {
    respond(response{200, "text/plain", req.method + " " + req.path + " " + req.query});
  });
  r.add("GET", "/later", [&loop](const request& req, responder respond) {
    long ms = 50;
    if (req.query.rfind("ms=", 0) == 0) ms = std::stol(req.query.substr(3));
    auto timer = std::make_shared<asio::steady_timer>(io::asio_context(loop), std::chrono::milliseconds(ms));
    timer->async_wait([timer, respond](const beast::error_code&) {
      respond(response{200, "application/json", R"({"later": true})"});
    });
  });
  r.add("GET", "/throw", [](const request&, responder) { throw std::runtime_error("boom"); });
  r.add("GET", "/drop", [](const request&, responder) {});
  r.add("GET", "/twice", [](const request&, responder respond) {
    respond(response{200, "text/plain", "first"});
    respond(response{200, "text/plain", "second"});
  });
  r.add("GET", "/bad_status", [](const request&, responder respond) { respond(response{42, "text/plain", ""}); });
  r.add("GET", "/hold", [held](const request&, responder respond) { held->add(std::move(respond)); });
  return http_server::start(loop, o, std::move(r));
}

bool is_closed_error(const beast::error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset;
}

class server_test : public ::testing::Test {
 protected:
  void start(server_options o = {}) {
    o.host = "127.0.0.1";
    o.port = 0;
    auto s = start_test_server(loop_, o, held_);
    ASSERT_TRUE(s.ok()) << s.err().describe();
    server_ = std::move(s).value();
  }
  uint16_t port() const { return server_->port(); }

  io::event_loop loop_;
  std::shared_ptr<held_responders> held_ = std::make_shared<held_responders>();
  std::unique_ptr<http_server> server_;  // destroyed before the loop
};

TEST_F(server_test, sync_route_answers_200_with_json) {
  start();
  test_client c(port());
  ASSERT_FALSE(c.connect_ec);
  std::string body;
  EXPECT_EQ(c.call(bhttp::verb::get, "/hello", "", "", &body), 200);
  EXPECT_EQ(body, R"({"hello": "world"})");
  EXPECT_EQ(c.last()[bhttp::field::content_type], "application/json");
}

TEST_F(server_test, echo_returns_body_and_handler_sees_query) {
  start();
  test_client c(port());
  std::string body;
  EXPECT_EQ(c.call(bhttp::verb::post, "/echo", "payload \x01\xff bytes", "", &body), 200);
  EXPECT_EQ(body, "payload \x01\xff bytes");
  EXPECT_EQ(c.call(bhttp::verb::get, "/inspect?a=1&b=2", "", "", &body), 200);
  EXPECT_EQ(body, "GET /inspect a=1&b=2");
}

TEST_F(server_test, unknown_path_is_404_and_wrong_method_is_405) {
  start();
  test_client c(port());
  std::string body;
  EXPECT_EQ(c.call(bhttp::verb::get, "/nope", "", "", &body), 404);
  EXPECT_NE(body.find("\"error\""), std::string::npos) << body;
  EXPECT_EQ(c.call(bhttp::verb::post, "/hello", "x", "", &body), 405);
  EXPECT_NE(body.find("GET"), std::string::npos) << body;
  EXPECT_EQ(c.call(bhttp::verb::get, "/hello/", "", "", &body), 404) << "routes match exactly";
}

TEST_F(server_test, bearer_token_is_required_except_for_healthz) {
  server_options o;
  o.bearer_token = "s3cret-token";
  start(o);
  test_client c(port());
  std::string body;
  EXPECT_EQ(c.call(bhttp::verb::get, "/hello", "", "", &body), 401);
  EXPECT_EQ(c.last()[bhttp::field::www_authenticate], "Bearer");
  EXPECT_NE(body.find("token"), std::string::npos) << body;
  EXPECT_EQ(c.call(bhttp::verb::get, "/hello", "", "wrong"), 401);
  EXPECT_EQ(c.call(bhttp::verb::get, "/hello", "", "s3cret-toke"), 401) << "a prefix of the token";
  EXPECT_EQ(c.call(bhttp::verb::get, "/hello", "", "s3cret-token2"), 401) << "the token plus a byte";
  EXPECT_EQ(c.call(bhttp::verb::get, "/nope"), 401) << "unknown paths are not revealed before auth";
  EXPECT_EQ(c.call(bhttp::verb::get, "/hello", "", "s3cret-token", &body), 200);
  EXPECT_EQ(body, R"({"hello": "world"})");
  EXPECT_EQ(c.call(bhttp::verb::get, "/healthz"), 200);
  EXPECT_EQ(c.call(bhttp::verb::post, "/echo", "x"), 401);

  // The scheme name is case-insensitive (RFC 9110); the token is not.
  bhttp::request<bhttp::string_body> req{bhttp::verb::get, "/hello", 11};
  req.set(bhttp::field::authorization, "bearer s3cret-token");
  ASSERT_FALSE(c.send(req));
  bhttp::response<bhttp::string_body> res;
  ASSERT_FALSE(c.receive(res));
  EXPECT_EQ(res.result_int(), 200u);
}

TEST_F(server_test, oversized_body_is_413_and_closes) {
  server_options o;
  o.max_body_bytes = 1024;
  start(o);
  test_client c(port());
  std::string body;
  EXPECT_EQ(c.call(bhttp::verb::post, "/echo", std::string(1024, 'a'), "", &body), 200) << "exactly the limit";
  EXPECT_EQ(c.call(bhttp::verb::post, "/echo", std::string(4096, 'a'), "", &body), 413);
  EXPECT_NE(body.find("exceeds 1024 bytes"), std::string::npos) << body;
  std::string rest;
  EXPECT_TRUE(is_closed_error(c.read_until_closed(rest))) << "the connection is closed after a 413";
}

TEST_F(server_test, oversized_body_larger_than_socket_buffers_is_still_answered) {
  server_options o;
  o.max_body_bytes = 1024;
  start(o);
  test_client c(port());
  // 8 MiB cannot sit in the socket buffers: the answer must survive the server's close (lingering drain).
  EXPECT_EQ(c.call(bhttp::verb::post, "/echo", std::string(8 << 20, 'a')), 413);
}

TEST_F(server_test, oversized_chunked_body_is_413) {
  server_options o;
  o.max_body_bytes = 1024;
  start(o);
  test_client c(port());
  std::string raw = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 4; ++i) raw += "200\r\n" + std::string(512, 'b') + "\r\n";
  raw += "0\r\n\r\n";
  ASSERT_FALSE(c.write_raw(raw));
  bhttp::response<bhttp::string_body> res;
  ASSERT_FALSE(c.receive(res));
  EXPECT_EQ(res.result_int(), 413u);
}

TEST_F(server_test, oversized_headers_are_413) {
  server_options o;
  o.max_header_bytes = 2048;
  start(o);
  test_client c(port());
  bhttp::request<bhttp::string_body> req{bhttp::verb::get, "/hello", 11};
  req.set("X-Big", std::string(4096, 'h'));
  ASSERT_FALSE(c.send(req));
  bhttp::response<bhttp::string_body> res;
  ASSERT_FALSE(c.receive(res));
  EXPECT_EQ(res.result_int(), 413u);
  EXPECT_NE(res.body().find("header"), std::string::npos) << res.body();
}

TEST_F(server_test, garbage_is_400) {
  start();
  test_client c(port());
  ASSERT_FALSE(c.write_raw("NOT HTTP AT ALL\r\n\r\n"));
  bhttp::response<bhttp::string_body> res;
  ASSERT_FALSE(c.receive(res));
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_NE(res.body().find("\"error\""), std::string::npos);
}

TEST_F(server_test, keep_alive_serves_two_requests_on_one_connection) {
  start();
  test_client c(port());
  std::string body;
  EXPECT_EQ(c.call(bhttp::verb::get, "/hello"), 200);
  EXPECT_TRUE(c.last().keep_alive());
  EXPECT_EQ(c.call(bhttp::verb::post, "/echo", "second", "", &body), 200);
  EXPECT_EQ(body, "second");
  EXPECT_EQ(c.call(bhttp::verb::get, "/later"), 200);
}

TEST_F(server_test, connection_close_is_honoured) {
  start();
  test_client c(port());
  bhttp::request<bhttp::string_body> req{bhttp::verb::get, "/hello", 11};
  req.keep_alive(false);
  ASSERT_FALSE(c.send(req));
  bhttp::response<bhttp::string_body> res;
  ASSERT_FALSE(c.receive(res));
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_FALSE(res.keep_alive());
  std::string rest;
  EXPECT_TRUE(is_closed_error(c.read_until_closed(rest)));
}

TEST_F(server_test, read_timeout_closes_an_idle_connection) {
  server_options o;
  o.read_timeout_ms = 200;
  start(o);
  {
    test_client c(port());
    const auto t0 = std::chrono::steady_clock::now();
    std::string got;
    const auto ec = c.read_until_closed(got);
    const auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_TRUE(is_closed_error(ec)) << ec.message();
    EXPECT_TRUE(got.empty()) << "no answer to a request that never came";
    EXPECT_GE(waited, 150ms);
    EXPECT_LT(waited, 3s);
  }
  {  // idle after a served request, and stalled in the middle of a header block
    test_client c(port());
    EXPECT_EQ(c.call(bhttp::verb::get, "/hello"), 200);
    std::string got;
    EXPECT_TRUE(is_closed_error(c.read_until_closed(got)));
    test_client stalled(port());
    ASSERT_FALSE(stalled.write_raw("GET /hello HTTP/1.1\r\nHost: x\r\n"));
    EXPECT_TRUE(is_closed_error(stalled.read_until_closed(got)));
  }
}

// Slow clients that keep sending (one byte at a time, each well inside the timeout) are still cut off: the
// read timeout bounds the whole header block, then the whole body, not the gap between two bytes.
TEST_F(server_test, trickling_client_is_disconnected_after_the_read_timeout) {
  server_options o;
  o.read_timeout_ms = 300;
  start(o);
  auto trickle = [&](const std::string& prefix, const std::string& slow_part) {
    test_client c(port());
    if (!prefix.empty()) {
      EXPECT_FALSE(c.write_raw(prefix));
    }
    const auto t0 = std::chrono::steady_clock::now();
    bool cut_off = false;
    for (char ch : slow_part) {
      std::this_thread::sleep_for(50ms);
      if (c.write_raw(std::string(1, ch))) {
        cut_off = true;
        break;
      }
      if (std::chrono::steady_clock::now() - t0 > 3s) break;
    }
    std::string got;
    const auto ec = c.read_until_closed(got, 3s);
    const auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_TRUE(cut_off || is_closed_error(ec)) << ec.message();
    EXPECT_TRUE(got.empty()) << "no answer to a request that never completed: " << got;
    EXPECT_LT(waited, 3s) << "the trickle should be cut off near read_timeout_ms";
  };
  // Header block trickled byte by byte (60 bytes x 50 ms = 3 s, ten times the timeout).
  trickle("", "GET /hello HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n");
  // Body trickled after a complete header.
  trickle("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n", std::string(60, 'b'));
}

// A client that sends a request and then does not read the (large) answer is cut off after write_timeout_ms:
// it cannot pin a session and its buffers forever.
TEST_F(server_test, client_not_reading_its_answer_is_disconnected_after_the_write_timeout) {
  server_options o;
  o.write_timeout_ms = 300;
  o.max_body_bytes = 64 << 20;
  start(o);
  test_client c(port());
  const size_t n = 32 << 20;  // more than the loopback socket buffers of both ends can hold
  bhttp::request<bhttp::string_body> req{bhttp::verb::post, "/echo", 11};
  req.set(bhttp::field::host, "127.0.0.1");
  req.body() = std::string(n, 'z');
  ASSERT_FALSE(c.send(std::move(req)));
  std::this_thread::sleep_for(1500ms);  // not reading: the server's write stalls, then times out
  std::string got;
  const auto ec = c.read_until_closed(got, 10s);
  EXPECT_TRUE(is_closed_error(ec)) << "the server should have closed the connection: " << ec.message();
  EXPECT_LT(got.size(), n) << "the answer cannot have been written whole";
}

TEST_F(server_test, handler_answering_later_is_not_subject_to_read_timeout) {
  server_options o;
  o.read_timeout_ms = 200;
  start(o);
  test_client c(port());
  const auto t0 = std::chrono::steady_clock::now();
  std::string body;
  EXPECT_EQ(c.call(bhttp::verb::get, "/later?ms=400", "", "", &body), 200);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 390ms);
  EXPECT_EQ(body, R"({"later": true})");
  EXPECT_EQ(c.call(bhttp::verb::get, "/hello"), 200) << "keep-alive after a deferred answer";
}

TEST_F(server_test, handler_failures_answer_500) {
  start();
  test_client c(port());
  std::string body;
  EXPECT_EQ(c.call(bhttp::verb::get, "/throw", "", "", &body), 500);
  EXPECT_NE(body.find("boom"), std::string::npos) << body;
  EXPECT_EQ(c.call(bhttp::verb::get, "/drop", "", "", &body), 500);
  EXPECT_EQ(c.call(bhttp::verb::get, "/twice", "", "", &body), 200);
  EXPECT_EQ(body, "first");
  EXPECT_EQ(c.call(bhttp::verb::get, "/bad_status"), 500);
  EXPECT_EQ(c.call(bhttp::verb::get, "/hello"), 200) << "the connection survives handler failures";
}

TEST_F(server_test, expect_100_continue_is_honoured) {
  start();
  test_client c(port());
  ASSERT_FALSE(c.write_raw("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
  bhttp::response<bhttp::string_body> interim;
  ASSERT_FALSE(c.receive(interim));
  EXPECT_EQ(interim.result_int(), 100u);
  ASSERT_FALSE(c.write_raw("hello"));
  bhttp::response<bhttp::string_body> res;
  ASSERT_FALSE(c.receive(res));
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(res.body(), "hello");
}

TEST_F(server_test, many_concurrent_clients) {
  start();
  constexpr int k_clients = 24, k_requests = 20;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < k_clients; ++t) {
    threads.emplace_back([&, t] {
      test_client c(port());
      for (int i = 0; i < k_requests; ++i) {
        const std::string payload = "client " + std::to_string(t) + " request " + std::to_string(i);
        std::string body;
        if (i % 5 == 0) {
          if (c.call(bhttp::verb::get, "/later?ms=5") == 200) ok.fetch_add(1);
        } else if (c.call(bhttp::verb::post, "/echo", payload, "", &body) == 200 && body == payload) {
          ok.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), k_clients * k_requests);
}

TEST_F(server_test, at_the_limit_the_longest_idle_connection_makes_room) {
  server_options o;
  o.max_connections = 2;
  start(o);
  test_client a(port());
  ASSERT_EQ(a.call(bhttp::verb::get, "/hello"), 200);  // idle (keep-alive) from here on, the longest
  std::this_thread::sleep_for(20ms);
  test_client b(port());
  ASSERT_EQ(b.call(bhttp::verb::get, "/hello"), 200);
  test_client c(port());  // at the limit: a is closed for it
  EXPECT_EQ(c.call(bhttp::verb::get, "/hello"), 200);
  std::string got;
  EXPECT_TRUE(is_closed_error(a.read_until_closed(got, 2s)));
  EXPECT_TRUE(got.empty());
  EXPECT_EQ(b.call(bhttp::verb::get, "/hello"), 200) << "b was idle for less time and stays";
}

TEST_F(server_test, with_none_idle_reserved_slots_serve_only_health_and_reserved_routes) {
  server_options o;
  o.max_connections = 1;
  o.reserved_connections = 2;
  o.reserved_routes = {"/echo"};
  start(o);
  test_client busy(port());  // holds the one ordinary slot with a handler that does not answer
  bhttp::request<bhttp::string_body> hold{bhttp::verb::get, "/hold", 11};
  ASSERT_FALSE(busy.send(hold));
  for (int i = 0; i < 500 && held_->count(loop_) == 0; ++i) std::this_thread::sleep_for(2ms);
  ASSERT_EQ(held_->count(loop_), 1u);
  {
    test_client r(port());
    EXPECT_EQ(r.call(bhttp::verb::get, "/healthz"), 200);
    std::string got;
    EXPECT_TRUE(is_closed_error(r.read_until_closed(got, 2s))) << "a reserved slot serves one request";
  }
  {
    test_client r(port());
    std::string body;
    EXPECT_EQ(r.call(bhttp::verb::post, "/echo", "x", "", &body), 200);
  }
  {
    test_client r(port());
    std::string body;
    EXPECT_EQ(r.call(bhttp::verb::get, "/hello", "", "", &body), 503);
    EXPECT_NE(body.find("max-connections"), std::string::npos) << body;
  }
  {  // both reserved slots taken by connections midway through a header (not idle): the next is closed
    test_client r1(port());
    ASSERT_FALSE(r1.write_raw("GET /healthz HTTP/1.1\r\n"));
    std::this_thread::sleep_for(50ms);
    test_client r2(port());
    ASSERT_FALSE(r2.write_raw("GET /healthz HTTP/1.1\r\n"));
    std::this_thread::sleep_for(50ms);
    test_client extra(port());
    std::string got;
    EXPECT_TRUE(is_closed_error(extra.read_until_closed(got, 1s)));
    EXPECT_TRUE(got.empty());
  }
  held_->answer_all(loop_);
  held_->clear(loop_);
}

// Issue 18: 1000 keep-alive connections that never send a byte used to lock /healthz out until they timed out.
TEST_F(server_test, healthz_answers_under_a_flood_of_1000_idle_connections) {
  struct rlimit lim {};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);
  if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < 1400)
    GTEST_SKIP() << "needs 1400 file descriptors (client and server ends in one process); the hard limit is " << lim.rlim_max;
  const rlim_t saved = lim.rlim_cur;
  lim.rlim_cur = lim.rlim_max == RLIM_INFINITY ? 4096 : std::min<rlim_t>(lim.rlim_max, 4096);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lim), 0);
  server_options o;  // the defaults: 256 connections, 30 s read timeout
  start(o);
  asio::io_context ctx;
  std::vector<std::unique_ptr<tcp::socket>> flood;
  for (int i = 0; i < 1000; ++i) {
    auto s = std::make_unique<tcp::socket>(ctx);
    beast::error_code ec;
    s->connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port()), ec);
    ASSERT_FALSE(ec) << "flood connection " << i << ": " << ec.message();
    flood.push_back(std::move(s));
  }
  std::this_thread::sleep_for(200ms);  // let the server accept (and shed) them
  std::vector<double> ms;
  for (int i = 0; i < 50; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    test_client c(port());
    ASSERT_EQ(c.call(bhttp::verb::get, "/healthz"), 200) << "request " << i;
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf("healthz under 1000 idle connections: median %.2f ms, max %.2f ms\n", ms[ms.size() / 2], ms.back());
  EXPECT_LT(ms.back(), 1000.0);
  flood.clear();
  lim.rlim_cur = saved;
  ::setrlimit(RLIMIT_NOFILE, &lim);
}

TEST_F(server_test, destroying_the_server_with_a_pending_handler_is_safe) {
  start();
  test_client c(port());
  bhttp::request<bhttp::string_body> req{bhttp::verb::get, "/hold", 11};
  ASSERT_FALSE(c.send(req));
  for (int i = 0; i < 500 && held_->count(loop_) == 0; ++i) std::this_thread::sleep_for(2ms);
  ASSERT_EQ(held_->count(loop_), 1u);
  server_.reset();
  std::string got;
  EXPECT_TRUE(is_closed_error(c.read_until_closed(got))) << "the server closed the connection";
  EXPECT_TRUE(got.empty());
  held_->answer_all(loop_);  // answers to dead connections are dropped quietly
  held_->clear(loop_);
}

TEST_F(server_test, bind_failure_names_the_address) {
  start();
  server_options o;
  o.host = "127.0.0.1";
  o.port = port();
  auto second = http_server::start(loop_, o, router{});
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.err().message.find("127.0.0.1:" + std::to_string(port())), std::string::npos)
      << second.err().message;
}

TEST(json_error_test, escapes_the_message_and_appends_fields) {
  const response r = json_error(409, "bad \"quote\" \\ and\nnewline\x01", "\"current_version\": 3");
  EXPECT_EQ(r.status, 409u);
  EXPECT_EQ(r.content_type, "application/json");
  // Control characters are escaped as text first (base/text_escape.h), so the decoded message holds none.
  EXPECT_EQ(r.body, R"({"error": "bad \"quote\" \\ and\\nnewline\\x01", "current_version": 3})");
  EXPECT_EQ(json_error(404, "x").body, R"({"error": "x"})");
}

}  // namespace
}  // namespace deltasync::http
