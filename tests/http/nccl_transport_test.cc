// The NCCL transport's sequencing, end to end in one process with an in-process fake of NCCL's groups
// (tests/sync/fake_channel.h): the real Sender (transport "nccl"), push client, HTTP server, routes
// (POST/DELETE /nccl/init, /status), receiver pipeline and host store. Covers several syncs in each encoding
// (store byte-identical to the trainer after each), refusals that drain the broadcast and keep the group,
// corrupted bytes caught by the file checksums, and a receiver that stops receiving: the sync fails without
// hanging, nothing advances, and the next sync rebuilds the group and carries every change.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <future>
#include <thread>
#include <random>

#include "codec/digest.h"
#include "http/push_client.h"
#include "http/receiver_routes.h"
#include "http/server.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "io/worker_pool.h"
#include "sync/fake_channel.h"
#include "sync/nccl_member.h"
#include "sync/receiver.h"
#include "sync/sender.h"

namespace deltasync::http {
namespace {

namespace json = boost::json;

struct tensor {
  std::string name;
  dtype type;
  std::vector<uint64_t> shape;
  byte_buffer bytes;
};

// Receiver (rank 1) and sender (rank 0) in one process; the fake world connects their channels.
struct world {
  testing::fake_world fake;
  io::event_loop rx_loop;
  std::unique_ptr<io::io_backend> backend;
  std::unique_ptr<io::buffer_pool> pool;
  std::unique_ptr<io::worker_pool> workers;
  std::unique_ptr<host_weight_store> store;
  std::unique_ptr<receiver> rx;
  std::unique_ptr<nccl_member> member;
  metrics_registry metrics;
  std::unique_ptr<http_server> server;
  std::string url;

  io::event_loop tx_loop;
  std::unique_ptr<push_client> client;
  std::vector<tensor> trainer;
  std::mt19937_64 rng{42};

  explicit world(uint32_t receiver_timeout_ms = 2000) {
    io::io_backend_options bo;
    bo.backend = "threads";
    backend = std::move(io::make_io_backend(rx_loop, bo)).value();
    io::buffer_pool_options po;
    po.buffer_bytes = 4096;  // small pieces: one broadcast chunk spans several pool buffers
    po.max_total_bytes = 256 << 10;
    po.lock_memory = false;
    pool = std::move(io::buffer_pool::create(rx_loop, backend.get(), po)).value();
    workers = std::make_unique<io::worker_pool>(rx_loop, 2, 64);
    std::vector<std::pair<store_tensor, byte_buffer>> t;
    add_tensor("embed", dtype::BF16, {64, 300}, t);
    add_tensor("layer.0.w", dtype::BF16, {128, 200}, t);
    add_tensor("layer.0.norm", dtype::F32, {4000}, t);
    add_tensor("head", dtype::F16, {100, 70}, t);
    store = host_weight_store::from_tensors(std::move(t));
    receiver_options ro;
    ro.delta_dir = "/nonexistent";  // the nccl transport reads no files
    rx = std::make_unique<receiver>(rx_loop, *backend, *pool, *workers, *store, ro, &metrics);
    nccl_member_options mo;
    mo.factory = fake.factory();
    mo.timeout_ms = receiver_timeout_ms;
    mo.health_interval_ms = 50;
    member = std::make_unique<nccl_member>(rx_loop, mo);
    rx->set_transport("nccl", [m = member.get()](const sync_request& req, io::buffer_pool& p) { return m->source(req, p); });
    server = std::move(http_server::start(rx_loop, {}, make_receiver_routes(*rx, *workers, metrics, member.get()))).value();
    url = "http://127.0.0.1:" + std::to_string(server->port());
    client = std::make_unique<push_client>(tx_loop, push_client_options{});
  }
  ~world() {
    client.reset();
    server.reset();
    member.reset();
    rx.reset();
    workers.reset();
    pool.reset();
    backend.reset();
  }

  void add_tensor(const std::string& name, dtype type, std::vector<uint64_t> shape,
                  std::vector<std::pair<store_tensor, byte_buffer>>& out) {
    uint64_t numel = 1;
    for (auto d : shape) numel *= d;
    const uint64_t nbytes = numel * element_bytes(type);
    byte_buffer b(nbytes);
    for (auto& x : b) x = std::byte(rng() & 0xFF);
    trainer.push_back({name, type, shape, b});
    out.push_back({store_tensor{name, type, shape, numel, nbytes}, b});
  }

  sender_options options(encoding enc) {
    sender_options so;
    so.transport = "nccl";
    so.enc = enc;
    so.receivers = {url};
    so.buffer_bytes = 8 << 10;  // several flushes per sync
    so.nccl.factory = fake.factory();
    so.nccl.new_id = fake.id_source();
    so.nccl.chunk_bytes = 10'000;  // several broadcasts per file, not aligned to the pool's buffers
    so.nccl.timeout_ms = 5000;
    so.nccl.group = "test";
    return so;
  }

  void seed(sender& s) {
    for (auto& t : trainer) ASSERT_TRUE(s.seed(t.name, tensor_view{t.bytes.data(), t.type, t.shape, "cpu"}).ok());
  }
  // Changes about `fraction` of every tensor's bytes (whole elements).
  void step(double fraction) {
    for (auto& t : trainer) {
      const size_t eb = element_bytes(t.type);
      const size_t n = t.bytes.size() / eb;
      const size_t changes = std::max<size_t>(1, static_cast<size_t>(static_cast<double>(n) * fraction));
      for (size_t k = 0; k < changes; ++k) t.bytes[(rng() % n) * eb] ^= std::byte(1 + rng() % 255);
    }
  }
  result<sync_report> sync(sender& s, uint64_t version) {
    DS_TRY_STATUS(s.begin(version));
    for (auto& t : trainer) {
      auto st = s.add(t.name, tensor_view{t.bytes.data(), t.type, t.shape, "cpu"});
      if (!st) {
        s.abort();
        return std::move(st).err();
      }
    }
    return s.finish();
  }
  // The receiver's /checksums against the trainer's digests; "" when identical.
  std::string compare(uint64_t version) {
    push_outcome got = client->get(url, "/checksums");
    if (!got.ok()) return "GET /checksums: " + std::to_string(got.http_status) + got.body;
    auto o = json::parse(got.body).as_object();
    if (o.at("version").as_int64() != static_cast<int64_t>(version))
      return "receiver at version " + json::serialize(o.at("version"));
    const auto& tensors = o.at("tensors").as_object();
    for (auto& t : trainer)
      if (tensors.at(t.name).as_object().at("xxh3_128").as_string() != to_hex(xxh3_128(t.bytes))) return t.name + " differs";
    return "";
  }
  json::object status_json() { return json::parse(client->get(url, "/status").body).as_object(); }
};

// One HTTP/1.1 request over a plain socket (push_client only POSTs and GETs); returns the raw answer.
std::string raw_request(uint16_t port, const std::string& method, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "connect failed";
  }
  const std::string req = method + " " + path + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  if (::send(fd, req.data(), req.size(), 0) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return "send failed";
  }
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

class nccl_transport_each_encoding : public ::testing::TestWithParam<encoding> {};

TEST_P(nccl_transport_each_encoding, several_syncs_keep_the_store_identical) {
  world w;
  sender s(w.options(GetParam()), w.client.get());
  w.seed(s);
  for (uint64_t v = 1; v <= 4; ++v) {
    w.step(v == 3 ? 0.0 : 0.01 * static_cast<double>(v));  // v3 changes one element per tensor
    auto rep = w.sync(s, v);
    ASSERT_TRUE(rep.ok()) << rep.err().describe();
    EXPECT_TRUE(rep->snapshot_advanced);
    EXPECT_GT(rep->files.size(), 1u) << "the sync should carry several flushes";
    EXPECT_EQ(w.compare(v), "");
  }
  EXPECT_EQ(w.fake.joins.load(), 2) << "one group (two ranks) for every sync";
  auto st = w.status_json().at("nccl").as_object();
  EXPECT_EQ(st.at("state").as_string(), "ready");
  EXPECT_EQ(st.at("group").as_string(), "test");
  EXPECT_EQ(st.at("rank").as_int64(), 1);
  EXPECT_EQ(st.at("syncs_received").as_int64(), 4);
  EXPECT_GT(w.fake.bytes_broadcast.load(), 0u);
}

INSTANTIATE_TEST_SUITE_P(all, nccl_transport_each_encoding,
                         ::testing::Values(encoding::indices, encoding::deltas, encoding::deltas_zstd),
                         [](const auto& p) { return std::string(encoding_name(p.param)); });

TEST(nccl_transport, full_mode_and_slime_format_travel_too) {
  world w;
  auto so = w.options(encoding::deltas);
  so.mode = update_mode::full;
  so.format = wire_format::slime;
  sender s(so, w.client.get());
  w.step(0.5);
  auto rep = w.sync(s, 1);
  ASSERT_TRUE(rep.ok()) << rep.err().describe();
  EXPECT_EQ(w.compare(1), "");
}

TEST(nccl_transport, a_refused_sync_drains_the_broadcast_and_keeps_the_group) {
  world w;
  sender s(w.options(encoding::deltas), w.client.get());
  w.seed(s);
  w.step(0.01);
  ASSERT_TRUE(w.sync(s, 1).ok());
  // The receiver moves on behind the sender's back: the next sync's base no longer matches (409).
  w.rx_loop.run_sync([&] { w.store->set_version(7); });
  w.step(0.01);
  auto rep = w.sync(s, 2);
  ASSERT_FALSE(rep.ok());
  EXPECT_EQ(rep.err().code, make_error_code(errc::receiver_failed));
  EXPECT_NE(rep.err().message.find("409"), std::string::npos) << rep.err().message;
  EXPECT_EQ(s.snapshot_version(), 1u);
  EXPECT_FALSE(s.last_report().snapshot_advanced);
  EXPECT_EQ(w.status_json().at("nccl").as_object().at("state").as_string(), "ready");
  // Back at 1, the next sync carries both steps' changes over the same group.
  w.rx_loop.run_sync([&] { w.store->set_version(1); });
  auto again = w.sync(s, 2);
  ASSERT_TRUE(again.ok()) << again.err().describe();
  EXPECT_EQ(w.compare(2), "");
  EXPECT_EQ(w.fake.joins.load(), 2) << "the group survived the refusal";
}

TEST(nccl_transport, corrupted_bytes_are_refused_and_the_store_is_unchanged) {
  world w;
  sender s(w.options(encoding::indices), w.client.get());
  w.seed(s);
  w.step(0.02);
  ASSERT_TRUE(w.sync(s, 1).ok());
  const auto before = w.client->get(w.url, "/checksums").body;
  w.step(0.02);
  w.fake.corrupt_next = true;
  auto rep = w.sync(s, 2);
  ASSERT_FALSE(rep.ok());
  EXPECT_NE(rep.err().message.find("422"), std::string::npos) << rep.err().message;
  EXPECT_EQ(w.client->get(w.url, "/checksums").body, before) << "a refused sync must leave the store bit-identical";
  EXPECT_EQ(s.snapshot_version(), 1u);
  auto again = w.sync(s, 2);
  ASSERT_TRUE(again.ok()) << again.err().describe();
  EXPECT_EQ(w.compare(2), "");
}

TEST(nccl_transport, a_receiver_that_stops_receiving_fails_the_sync_without_hanging) {
  world w;
  auto so = w.options(encoding::deltas);
  so.nccl.timeout_ms = 1000;  // the group's timeout (POST /nccl/init hands it to every receiver)
  sender s(so, w.client.get());
  w.seed(s);
  w.step(0.01);
  ASSERT_TRUE(w.sync(s, 1).ok());
  const auto before = w.client->get(w.url, "/checksums").body;
  w.step(0.01);
  w.fake.stall_rank = 1;
  const auto t0 = std::chrono::steady_clock::now();
  auto rep = w.sync(s, 2);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(rep.ok());
  EXPECT_EQ(rep.err().code, make_error_code(errc::receiver_failed)) << rep.err().describe();
  EXPECT_LT(took, 4.0) << "bounded by the group's timeout (1 s), plus the answer";
  EXPECT_EQ(s.snapshot_version(), 1u);
  EXPECT_EQ(w.client->get(w.url, "/checksums").body, before);
  auto st = w.status_json().at("nccl").as_object();
  EXPECT_EQ(st.at("state").as_string(), "failed") << json::serialize(st);
  // The receiver is back: the next sync rebuilds the group and carries both steps' changes.
  w.fake.stall_rank = -1;
  auto again = w.sync(s, 2);
  ASSERT_TRUE(again.ok()) << again.err().describe();
  EXPECT_EQ(w.compare(2), "");
  EXPECT_EQ(w.fake.joins.load(), 4) << "a second group was built";
}

TEST(nccl_transport, a_receiver_that_is_gone_fails_the_set_up_cleanly) {
  world w;
  auto so = w.options(encoding::deltas);
  so.receivers = {"http://127.0.0.1:1"};  // nothing listens there
  so.nccl.timeout_ms = 20'000;
  sender s(so, w.client.get());
  w.seed(s);
  w.step(0.01);
  const auto t0 = std::chrono::steady_clock::now();
  auto rep = w.sync(s, 1);
  ASSERT_FALSE(rep.ok());
  EXPECT_EQ(rep.err().code, make_error_code(errc::receiver_failed)) << rep.err().describe();
  EXPECT_NE(rep.err().message.find("/nccl/init"), std::string::npos) << rep.err().message;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0)
      << "our own join is cancelled once a receiver's init failed";
  EXPECT_EQ(s.snapshot_version(), 0u);
}

TEST(nccl_transport, routes_refuse_bad_requests) {
  world w;
  auto post = [&](const std::string& path, const std::string& body) { return w.client->post_all({w.url}, path, body).front(); };
  EXPECT_EQ(post("/nccl/init", "not json").http_status, 400u);
  EXPECT_EQ(post("/nccl/init", R"({"unique_id": "AAAA", "nranks": 2, "rank": 1, "group": "g"})").http_status, 400u)
      << "an id of the wrong length";
  const std::string id = gpu::base64_encode(byte_buffer(128, std::byte{1}));
  auto rank0 = post("/nccl/init", R"({"unique_id": ")" + id + R"(", "nranks": 2, "rank": 0, "group": "g"})");
  EXPECT_EQ(rank0.http_status, 400u);
  EXPECT_NE(rank0.body.find("rank"), std::string::npos) << rank0.body;
  // A nccl sync without a group: refused at once (400), the store untouched.
  auto sync = post("/sync", R"({"version": 1, "base_version": 0, "transport": "nccl", "dir": "weight_v000001",
                               "files": ["a.safetensors"], "sizes": [100]})");
  EXPECT_EQ(sync.http_status, 400u);
  EXPECT_NE(sync.body.find("no NCCL group"), std::string::npos) << sync.body;
  auto nosizes = post("/sync", R"({"version": 1, "transport": "nccl", "dir": "d", "files": ["a"]})");
  EXPECT_EQ(nosizes.http_status, 400u);
  EXPECT_NE(nosizes.body.find("sizes"), std::string::npos) << nosizes.body;
  EXPECT_EQ(w.status_json().at("nccl").as_object().at("state").as_string(), "none");
}

TEST(nccl_transport, delete_leaves_the_group) {
  world w;
  sender s(w.options(encoding::deltas), w.client.get());
  w.seed(s);
  w.step(0.01);
  ASSERT_TRUE(w.sync(s, 1).ok());
  EXPECT_EQ(w.status_json().at("nccl").as_object().at("state").as_string(), "ready");
  const std::string answer = raw_request(w.server->port(), "DELETE", "/nccl/init");
  EXPECT_NE(answer.find("200 OK"), std::string::npos) << answer;
  EXPECT_EQ(w.status_json().at("nccl").as_object().at("state").as_string(), "none");
  // The sender's next sync finds the receiver outside any group: it fails, then rebuilds the group.
  w.step(0.01);
  auto rep = w.sync(s, 2);
  EXPECT_FALSE(rep.ok());
  EXPECT_EQ(s.snapshot_version(), 1u);
  auto again = w.sync(s, 2);
  ASSERT_TRUE(again.ok()) << again.err().describe();
  EXPECT_EQ(w.compare(2), "");
}

}  // namespace
}  // namespace deltasync::http

namespace deltasync::http {
namespace {

TEST(nccl_transport, a_new_group_cancels_a_join_that_waits_for_absent_ranks) {
  world w;
  // A join whose other ranks never come (its init would wait 30 s) ...
  const std::string id = gpu::base64_encode(byte_buffer(128, std::byte{9}));
  auto stuck = std::async(std::launch::async, [&] {
    return w.client->post_all({w.url}, "/nccl/init",
                              R"({"unique_id": ")" + id + R"(", "nranks": 2, "rank": 1, "group": "old", "timeout_ms": 30000})")
        .front();
  });
  for (int i = 0; i < 200 && w.status_json().at("nccl").as_object().at("state").as_string() != "joining"; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  // ... gives way to a sender that builds a new group: the sync goes through at once.
  sender s(w.options(encoding::deltas), w.client.get());
  w.seed(s);
  w.step(0.01);
  const auto t0 = std::chrono::steady_clock::now();
  auto rep = w.sync(s, 1);
  ASSERT_TRUE(rep.ok()) << rep.err().describe();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  EXPECT_EQ(w.compare(1), "");
  auto old = stuck.get();
  EXPECT_EQ(old.http_status, 500u) << old.body;
  EXPECT_NE(old.body.find("cancelled"), std::string::npos) << old.body;
}

}  // namespace
}  // namespace deltasync::http
