// The pull transport's pieces in process: URL parsing and percent-coding, and pull_opener fetching files from a
// live file_server in many ranges over several connections (bytes equal, pieces of a file in order), a missing
// file (not_found), a dead server (upstream_error), a bad URL (invalid_argument) and a server outside the allow
// list (forbidden_url, with nothing sent).
#include "http/pull_source.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <random>

#include <gtest/gtest.h>

#include "http/file_server.h"
#include "http/pull_url.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"

namespace deltasync::http {
namespace {

namespace fs = std::filesystem;

TEST(PullUrl, ParsesHostPortAndPrefix) {
  auto u = parse_http_url("http://10.0.0.5:8080/deltas/");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "10.0.0.5");
  EXPECT_EQ(u->port, "8080");
  EXPECT_EQ(u->prefix, "/deltas");
  auto v6 = parse_http_url("http://[::1]:9");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(parse_http_url("http://host")->port, "80");
  for (const char* bad : {"https://h:1", "ftp://h", "http://", "http://u@h:1", "http://h:99999", "http://h:x"}) {
    auto r = parse_http_url(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_TRUE(r.err().is(errc::invalid_argument)) << bad;
  }
}

TEST(PullUrl, PercentCodingRoundTrips) {
  EXPECT_EQ(pct_encode("weight_v000001/rank0000 a#b.safetensors"), "weight_v000001/rank0000%20a%23b.safetensors");
  EXPECT_EQ(*pct_decode("a%20b%2Fc"), "a b/c");
  EXPECT_FALSE(pct_decode("a%2").has_value());
  EXPECT_FALSE(pct_decode("a%zz").has_value());
  EXPECT_FALSE(pct_decode("a%00b").has_value());
}

class pull_test : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("ds-pull-test-" + std::to_string(::getpid()));
    fs::create_directories(root_ / "weight_v000001");
    std::mt19937 rng(5);
    for (size_t size : {size_t{0}, size_t{1}, size_t{100000}, size_t{300001}}) {
      std::string bytes(size, '\0');
      for (auto& c : bytes) c = static_cast<char>(rng());
      const std::string name = "f" + std::to_string(size) + ".safetensors";
      std::ofstream(root_ / "weight_v000001" / name, std::ios::binary) << bytes;
      files_.push_back(name);
      contents_.push_back(bytes);
    }
    file_server_options o;
    o.root = root_.string();
    auto s = file_server::start(loop_, o);
    ASSERT_TRUE(s.ok()) << s.err().describe();
    server_ = std::move(s).value();
    port_ = server_->port();
    io::buffer_pool_options po;
    po.buffer_bytes = 16384;
    po.max_total_bytes = 16384 * 6;  // fewer buffers than pieces: the fetch waits for the consumer
    po.lock_memory = false;
    auto p = io::buffer_pool::create(loop_, nullptr, po);
    ASSERT_TRUE(p.ok());
    pool_ = std::move(p).value();
  }
  void TearDown() override {
    server_.reset();
    pool_.reset();
    fs::remove_all(root_);
  }

  // Opens and reads `files` from base_url, allowed by `allow` (by default: 127.0.0.1 on the test server's port,
  // also once the server is gone); returns the open
  // error, or the assembled files.
  result<std::vector<std::string>> pull(const std::string& base_url, std::vector<std::string> files,
                                        std::optional<std::vector<std::string>> allow = std::nullopt,
                                        pull_options po = {}) {
    std::promise<result<std::vector<std::string>>> done;
    auto fut = done.get_future();
    auto list = pull_allowlist::parse(allow ? *allow : std::vector<std::string>{"http://127.0.0.1:" + std::to_string(port_)});
    if (!list) return std::move(list).err();
    po.allow = std::move(list).value();
    pull_opener opener(loop_, std::move(po));
    std::unique_ptr<file_source> source;
    std::vector<std::string> got(files.size());
    std::vector<uint64_t> next(files.size(), 0);
    bool order_ok = true;
    loop_.post([&] {
      remote_fetch what{base_url, "weight_v000001", files, 16384, 3, 1 << 20};
      opener.open(what, *pool_, [&](result<remote_files> r) {
        if (!r) return done.set_value(std::move(r).err());
        EXPECT_EQ(r->sizes.size(), files.size());
        source = std::move(r->source);
        source->start(
            [&](io::read_piece p) {
              order_ok = order_ok && p.offset == next[p.file_index];
              next[p.file_index] += p.bytes.size();
              got[p.file_index].append(reinterpret_cast<const char*>(p.bytes.data()), p.bytes.size());
            },
            [&](status st) {
              if (!st) return done.set_value(st.err());
              done.set_value(got);
            });
      });
    });
    auto r = fut.get();
    loop_.run_sync([&] { source.reset(); });
    EXPECT_TRUE(order_ok) << "pieces of a file arrived out of order";
    return r;
  }

  // Restarts the file server with at most `max_connections` open connections.
  void restart_server(uint32_t max_connections) {
    server_.reset();
    file_server_options o;
    o.root = root_.string();
    o.max_connections = max_connections;
    auto s = file_server::start(loop_, o);
    ASSERT_TRUE(s.ok()) << s.err().describe();
    server_ = std::move(s).value();
    port_ = server_->port();
  }

  std::string base() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }

  io::event_loop loop_;
  fs::path root_;
  std::vector<std::string> files_, contents_;
  std::unique_ptr<file_server> server_;
  uint16_t port_ = 0;
  std::unique_ptr<io::buffer_pool> pool_;
};

TEST_F(pull_test, FetchesEveryFileInRangesBitExact) {
  auto r = pull(base(), files_);
  ASSERT_TRUE(r.ok()) << r.err().describe();
  for (size_t i = 0; i < files_.size(); ++i) EXPECT_TRUE((*r)[i] == contents_[i]) << files_[i];
  EXPECT_GT(server_->bytes_sent(), 400000u);
}

TEST_F(pull_test, MissingFileIsNotFoundNamingIt) {
  auto r = pull(base(), {files_[2], "nope.safetensors"});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::not_found)) << r.err().describe();
  EXPECT_NE(r.err().message.find("nope.safetensors"), std::string::npos);
}

TEST_F(pull_test, DeadServerAndBadUrlAreClearErrors) {
  const uint16_t port = server_->port();
  server_.reset();
  auto dead = pull("http://127.0.0.1:" + std::to_string(port), files_);
  ASSERT_FALSE(dead.ok());
  EXPECT_TRUE(dead.err().is(errc::upstream_error)) << dead.err().describe();
  auto bad = pull("gopher://x", files_);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.err().is(errc::invalid_argument));
}

TEST_F(pull_test, ServerOutsideTheAllowListIsRefusedBeforeAnyRequest) {
  const std::string port = std::to_string(server_->port());
  for (const auto& allow : std::vector<std::vector<std::string>>{
           {},                                                                  // the default: nothing allowed
           {"http://127.0.0.1:" + std::to_string(server_->port() == 1 ? 2 : 1)},  // another port
           {"http://127.0.0.1:" + port + "/other/"},                            // another prefix
           {"http://localhost:" + port}}) {                                     // another name of the same host
    auto r = pull(base(), files_, allow);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(r.err().is(errc::forbidden_url)) << r.err().describe();
    EXPECT_NE(r.err().message.find(base()), std::string::npos) << r.err().message;
  }
  EXPECT_EQ(server_->bytes_sent(), 0u) << "a refused pull reached the file server";
  // The same server under an allowed prefix: the pull goes through.
  auto ok = pull(base() + "/", {files_[1]}, std::vector<std::string>{"http://127.0.0.1:" + port + "/"});
  ASSERT_TRUE(ok.ok()) << ok.err().describe();
  EXPECT_TRUE((*ok)[0] == contents_[1]);
}

TEST_F(pull_test, OverTheServersConnectionLimitRequestsBackOffAndTheFilesArrive) {
  restart_server(1);  // the pull asks for 3 connections: two are turned away (503) at first, and again later
  auto r = pull(base(), files_);
  ASSERT_TRUE(r.ok()) << r.err().describe();
  for (size_t i = 0; i < files_.size(); ++i) EXPECT_TRUE((*r)[i] == contents_[i]) << files_[i];
}

TEST_F(pull_test, AServerThatKeepsTurningRequestsAwayFailsThePullOnceRetryForIsSpent) {
  restart_server(0);  // every connection is answered 503
  pull_options po;
  po.retry_for_ms = 300;
  const auto t0 = std::chrono::steady_clock::now();
  auto r = pull(base(), files_, std::nullopt, po);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::upstream_error)) << r.err().describe();
  EXPECT_NE(r.err().message.find("503"), std::string::npos) << r.err().message;
  EXPECT_NE(r.err().message.find("turned away"), std::string::npos) << r.err().message;
  EXPECT_GE(ms, 300) << "gave up before retry-for was spent";
}

TEST_F(pull_test, FetchDiscardMeasuresOneBody) {
  auto r = fetch_discard(loop_, base() + "/weight_v000001/" + files_[3]);
  ASSERT_TRUE(r.ok()) << r.err().describe();
  EXPECT_EQ(r->bytes, 300001u);
  EXPECT_GT(r->seconds, 0);
  EXPECT_FALSE(fetch_discard(loop_, base() + "/missing").ok());
}

}  // namespace
}  // namespace deltasync::http
