// push_client against a live http_server, a closed port, a listener that never answers, bad URLs, auth and
// response limits; outcomes come back in url order.
#include "http/push_client.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <gtest/gtest.h>

#include "http/server.h"
#include "io/event_loop.h"

namespace deltasync::http {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// A port on which nothing listens: bound once to learn a free number, then released.
uint16_t dead_port() {
  asio::io_context ctx;
  tcp::acceptor a(ctx, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const uint16_t p = a.local_endpoint().port();
  a.close();
  return p;
}

std::string url_of(uint16_t port) { return "http://127.0.0.1:" + std::to_string(port); }

class push_client_test : public ::testing::Test {
 protected:
  void start(const std::string& token = "") {
    router r;
    r.add("POST", "/sync", [](const request& req, responder respond) {
      respond(response{200, "application/json", "{\"got\": " + req.body + ", \"type\": \"" + req.content_type + "\"}"});
    });
    r.add("POST", "/api/v1/sync", [](const request&, responder respond) {
      respond(response{200, "application/json", R"({"prefixed": true})"});
    });
    r.add("POST", "/conflict", [](const request&, responder respond) {
      respond(json_error(409, "base_version mismatch", "\"current_version\": 7"));
    });
    r.add("POST", "/big", [](const request&, responder respond) {
      respond(response{200, "application/json", std::string(64 << 10, 'x')});
    });
    r.add("POST", "/hold/sync", [this](const request&, responder respond) { held_.push_back(std::move(respond)); });
    server_options o;
    o.bearer_token = token;
    auto s = http_server::start(loop_, o, std::move(r));
    ASSERT_TRUE(s.ok()) << s.err().describe();
    server_ = std::move(s).value();
  }
  void TearDown() override {
    server_.reset();
    loop_.run_sync([this] { held_.clear(); });
  }

  io::event_loop loop_;
  std::vector<responder> held_;  // loop thread only
  std::unique_ptr<http_server> server_;
};

// timeout_ms 0 sizes the limit to the sync: 15 s + 1 s per 50 MB; unknown (0 bytes) keeps the old 600 s.
TEST(push_timeout, is_sized_to_the_sync) {
  EXPECT_EQ(push_timeout_ms_for(0), 600'000u);
  EXPECT_EQ(push_timeout_ms_for(1), 15'000u);
  EXPECT_EQ(push_timeout_ms_for(50'000'000), 16'000u);
  EXPECT_EQ(push_timeout_ms_for(uint64_t{4} << 30), 15'000u + 85'899u);
  EXPECT_EQ(push_timeout_ms_for(~uint64_t{0}), 3'600'000u);
}

TEST_F(push_client_test, posts_json_to_a_live_server) {
  start();
  push_client client(loop_, {});
  const auto out = client.post_all({url_of(server_->port())}, "/sync", R"({"version": 1})");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].http_status, 200u) << out[0].transport_error;
  EXPECT_TRUE(out[0].ok());
  EXPECT_EQ(out[0].body, R"({"got": {"version": 1}, "type": "application/json"})");
  EXPECT_TRUE(out[0].transport_error.empty());
  EXPECT_GT(out[0].elapsed_s, 0.0);
}

TEST_F(push_client_test, url_path_prefix_is_prepended) {
  start();
  push_client client(loop_, {});
  const auto out = client.post_all({url_of(server_->port()) + "/api/v1/"}, "/sync", "{}");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].http_status, 200u) << out[0].transport_error;
  EXPECT_EQ(out[0].body, R"({"prefixed": true})");
}

TEST_F(push_client_test, live_and_dead_receivers_in_url_order) {
  start();
  push_client client(loop_, {});
  const std::string dead = url_of(dead_port()), live = url_of(server_->port());
  const auto out = client.post_all({dead, live, dead}, "/sync", "1");
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].url, dead);
  EXPECT_EQ(out[1].url, live);
  EXPECT_EQ(out[0].http_status, 0u);
  EXPECT_NE(out[0].transport_error.find("connect"), std::string::npos) << out[0].transport_error;
  EXPECT_NE(out[0].transport_error.find("refused"), std::string::npos) << out[0].transport_error;
  EXPECT_EQ(out[1].http_status, 200u) << out[1].transport_error;
  EXPECT_EQ(out[2].http_status, 0u);
  EXPECT_FALSE(out[0].ok());
}

TEST_F(push_client_test, a_receiver_that_never_answers_times_out) {
  start();
  // A listener whose backlog accepts the connection but nobody reads: connect and send succeed, no answer.
  asio::io_context ctx;
  tcp::acceptor silent(ctx, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  push_client_options o;
  o.timeout_ms = 300;
  push_client client(loop_, o);
  const auto t0 = std::chrono::steady_clock::now();
  const auto out = client.post_all(
      {url_of(silent.local_endpoint().port()), url_of(server_->port()) + "/hold", url_of(server_->port())}, "/sync",
      "{}");
  const auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_EQ(out.size(), 3u);
  for (int i : {0, 1}) {
    EXPECT_EQ(out[i].http_status, 0u);
    EXPECT_NE(out[i].transport_error.find("timed out after 300 ms"), std::string::npos) << out[i].transport_error;
    EXPECT_GE(out[i].elapsed_s, 0.25);
  }
  EXPECT_EQ(out[2].http_status, 200u) << "a fast receiver is not held back by a slow one";
  EXPECT_LT(waited, std::chrono::seconds(3));
}

TEST_F(push_client_test, error_statuses_are_reported_with_their_body) {
  start();
  push_client client(loop_, {});
  const auto out = client.post_all({url_of(server_->port()), url_of(server_->port())}, "/conflict", "{}");
  ASSERT_EQ(out.size(), 2u);
  for (const auto& o : out) {
    EXPECT_EQ(o.http_status, 409u);
    EXPECT_FALSE(o.ok());
    EXPECT_TRUE(o.transport_error.empty());
    EXPECT_EQ(o.body, R"({"error": "base_version mismatch", "current_version": 7})");
  }
}

TEST_F(push_client_test, bearer_token_is_sent_when_set) {
  start("tok-123");
  push_client_options with;
  with.bearer_token = "tok-123";
  push_client good(loop_, with);
  push_client none(loop_, {});
  EXPECT_EQ(good.post_all({url_of(server_->port())}, "/sync", "{}")[0].http_status, 200u);
  EXPECT_EQ(none.post_all({url_of(server_->port())}, "/sync", "{}")[0].http_status, 401u);
}

TEST_F(push_client_test, unsupported_or_malformed_urls_fail_without_network) {
  start();
  push_client client(loop_, {});
  const auto out = client.post_all({"https://127.0.0.1:1", "127.0.0.1:80", "http://", "http://h:99999",
                                    url_of(server_->port())},
                                   "/sync", "{}");
  ASSERT_EQ(out.size(), 5u);
  EXPECT_NE(out[0].transport_error.find("only http://"), std::string::npos) << out[0].transport_error;
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(out[i].http_status, 0u) << i;
    EXPECT_FALSE(out[i].transport_error.empty()) << i;
  }
  EXPECT_EQ(out[4].http_status, 200u);
  EXPECT_TRUE(client.post_all({}, "/sync", "{}").empty());
}

TEST_F(push_client_test, response_over_the_limit_is_a_transport_error) {
  start();
  push_client_options o;
  o.max_response_bytes = 1024;
  push_client client(loop_, o);
  const auto out = client.post_all({url_of(server_->port())}, "/big", "{}");
  EXPECT_EQ(out[0].http_status, 0u);
  EXPECT_NE(out[0].transport_error.find("read response"), std::string::npos) << out[0].transport_error;
}

TEST_F(push_client_test, fan_out_to_many_receivers) {
  start();
  push_client client(loop_, {});
  std::vector<std::string> urls(64, url_of(server_->port()));
  const auto out = client.post_all(urls, "/sync", "42");
  ASSERT_EQ(out.size(), urls.size());
  for (const auto& o : out) EXPECT_EQ(o.http_status, 200u) << o.transport_error;
}

}  // namespace
}  // namespace deltasync::http
