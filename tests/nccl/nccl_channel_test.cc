// The real NCCL broadcast channel (src/gpu/nccl_channel.cc). Skips visibly without NCCL or without GPUs.
// One GPU: a loopback communicator of one rank (NCCL allows nranks = 1): join, send from host and device
// memory, abort. Two GPUs (one thread per rank in this process): bytes arrive exactly across chunk
// boundaries through host and device sinks, a failing sink drains the rest (the group stays usable), and a
// peer that stops taking part makes the other side time out and abort instead of hanging.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <future>
#include <random>
#include <thread>

#include "gpu/nccl_channel.h"

namespace deltasync::gpu {
namespace {

int gpus() {
  if (!nccl_available()) return -1;
  auto n = cuda_device_count();
  return n ? *n : 0;
}

#define REQUIRE_GPUS(n)                                                                              \
  do {                                                                                               \
    const int have = gpus();                                                                         \
    if (have < 0) GTEST_SKIP() << "NCCL transport not built";                                        \
    if (have < (n)) GTEST_SKIP() << "needs " << (n) << " CUDA device(s), found " << have;            \
  } while (0)

byte_buffer random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  byte_buffer b(n);
  for (auto& x : b) x = std::byte(rng() & 0xFF);
  return b;
}

// Collects received bytes in host memory, handing out pieces of at most piece_bytes; can fail at an offset.
class collect_sink final : public receive_sink {
 public:
  explicit collect_sink(size_t n, size_t piece_bytes = 1 << 20) : out(n), piece_(piece_bytes) {}
  byte_buffer out;
  uint64_t fail_at = UINT64_MAX;
  uint64_t filled_bytes = 0;
  result<mutable_byte_span> host(uint64_t offset, size_t max) override {
    if (offset >= fail_at) return error(errc::io_error, "sink refuses at " + std::to_string(offset));
    return mutable_byte_span(out.data() + offset, std::min(max, piece_));
  }
  status filled(uint64_t, size_t n) override {
    filled_bytes += n;
    return {};
  }

 private:
  size_t piece_;
};

TEST(nccl_channel, base64_round_trips_and_refuses_garbage) {
  for (size_t n : {0, 1, 2, 3, 4, 127, 128}) {
    auto b = random_bytes(n, n);
    auto d = base64_decode(base64_encode(b));
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(*d, b) << n;
  }
  EXPECT_EQ(base64_encode(byte_buffer{std::byte('f'), std::byte('o'), std::byte('o')}), "Zm9v");
  EXPECT_FALSE(base64_decode("Zm9").ok());
  EXPECT_FALSE(base64_decode("Zm9*").ok());
  EXPECT_FALSE(base64_decode("Z=9v").ok());
}

TEST(nccl_channel, without_nccl_every_call_says_not_built) {
  if (nccl_available()) GTEST_SKIP() << "this build has NCCL";
  EXPECT_NE(nccl_available().err().message.find("NCCL transport not built"), std::string::npos);
  std::atomic<bool> cancel{false};
  EXPECT_TRUE(open_nccl_channel({}, cancel).err().is(errc::unsupported));
}

TEST(nccl_channel, loopback_group_of_one_rank) {
  REQUIRE_GPUS(1);
  auto id = nccl_new_unique_id();
  ASSERT_TRUE(id.ok()) << id.err().describe();
  channel_params p;
  p.id = *id;
  p.nranks = 1;
  p.rank = 0;
  p.chunk_bytes = 1 << 20;
  p.timeout_ms = 20'000;
  std::atomic<bool> cancel{false};
  auto ch = open_nccl_channel(p, cancel);
  ASSERT_TRUE(ch.ok()) << ch.err().describe();
  EXPECT_TRUE((*ch)->health().ok());
  auto bytes = random_bytes((5 << 20) + 123, 1);
  EXPECT_TRUE((*ch)->send(bytes, cancel).ok());
  collect_sink sink(10);
  EXPECT_TRUE((*ch)->receive(10, sink, cancel).err().is(errc::invalid_argument)) << "rank 0 cannot receive";
  (*ch)->abort();
  auto after = (*ch)->send(bytes, cancel);
  ASSERT_FALSE(after.ok());
  EXPECT_TRUE(after.err().is(errc::cancelled)) << after.err().describe();
  EXPECT_TRUE((*ch)->broken());
}

TEST(nccl_channel, bad_parameters_are_refused) {
  REQUIRE_GPUS(1);
  std::atomic<bool> cancel{false};
  channel_params p;
  p.nranks = 2;
  p.rank = 2;
  EXPECT_TRUE(open_nccl_channel(p, cancel).err().is(errc::invalid_argument));
  p.rank = 0;
  p.device = 4096;
  auto e = open_nccl_channel(p, cancel);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.err().message.find("device 4096"), std::string::npos) << e.err().describe();
}

TEST(nccl_channel, a_join_that_nobody_answers_times_out) {
  REQUIRE_GPUS(1);
  auto id = nccl_new_unique_id();
  ASSERT_TRUE(id.ok());
  channel_params p;
  p.id = *id;
  p.nranks = 2;  // rank 1 never comes
  p.timeout_ms = 1500;
  std::atomic<bool> cancel{false};
  const auto t0 = std::chrono::steady_clock::now();
  auto ch = open_nccl_channel(p, cancel);
  ASSERT_FALSE(ch.ok());
  EXPECT_TRUE(ch.err().is(errc::timeout)) << ch.err().describe();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 15.0);
}

// Two ranks on GPUs 0 and 1, one thread each.
struct pair_of_ranks {
  std::unique_ptr<broadcast_channel> root, peer;
  static pair_of_ranks open(uint64_t chunk_bytes, uint32_t timeout_ms) {
    pair_of_ranks out;
    auto id = nccl_new_unique_id();
    EXPECT_TRUE(id.ok());
    std::atomic<bool> cancel{false};
    auto join = [&](int rank) {
      channel_params p;
      p.id = *id;
      p.nranks = 2;
      p.rank = rank;
      p.device = rank;
      p.chunk_bytes = chunk_bytes;
      p.timeout_ms = timeout_ms;
      return open_nccl_channel(p, cancel);
    };
    auto f = std::async(std::launch::async, join, 1);
    auto r0 = join(0);
    auto r1 = f.get();
    EXPECT_TRUE(r0.ok()) << r0.err().describe();
    EXPECT_TRUE(r1.ok()) << r1.err().describe();
    if (r0 && r1) {
      out.root = std::move(r0).value();
      out.peer = std::move(r1).value();
    }
    return out;
  }
};

TEST(nccl_channel, two_ranks_move_bytes_exactly) {
  REQUIRE_GPUS(2);
  auto g = pair_of_ranks::open(3 << 20, 30'000);
  ASSERT_TRUE(g.root && g.peer);
  std::atomic<bool> cancel{false};
  for (size_t n : {size_t{1}, size_t{3} << 20, (size_t{10} << 20) + 4097, size_t{0}}) {
    auto bytes = random_bytes(n, n + 7);
    collect_sink sink(n, (1 << 20) - 3);  // pieces that do not divide the chunks
    auto rx = std::async(std::launch::async, [&] { return g.peer->receive(n, sink, cancel); });
    ASSERT_TRUE(g.root->send(bytes, cancel).ok());
    auto got = rx.get();
    ASSERT_TRUE(got.ok()) << got.err().describe();
    EXPECT_EQ(sink.out, bytes) << n << " bytes";
    EXPECT_EQ(sink.filled_bytes, n);
  }
}

TEST(nccl_channel, a_failing_sink_drains_and_the_group_stays_usable) {
  REQUIRE_GPUS(2);
  auto g = pair_of_ranks::open(1 << 20, 30'000);
  ASSERT_TRUE(g.root && g.peer);
  std::atomic<bool> cancel{false};
  const size_t n = (5 << 20) + 11;
  auto bytes = random_bytes(n, 3);
  collect_sink bad(n);
  bad.fail_at = 2 << 20;
  auto rx = std::async(std::launch::async, [&] { return g.peer->receive(n, bad, cancel); });
  ASSERT_TRUE(g.root->send(bytes, cancel).ok()) << "the root's broadcast completes although the sink failed";
  auto got = rx.get();
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(got.err().is(errc::io_error)) << got.err().describe();
  EXPECT_FALSE(g.peer->broken());
  // Next payload over the same communicator.
  auto next = random_bytes(n, 4);
  collect_sink good(n);
  auto rx2 = std::async(std::launch::async, [&] { return g.peer->receive(n, good, cancel); });
  ASSERT_TRUE(g.root->send(next, cancel).ok());
  ASSERT_TRUE(rx2.get().ok());
  EXPECT_EQ(good.out, next);
}

TEST(nccl_channel, a_peer_that_stops_taking_part_times_out_and_aborts) {
  REQUIRE_GPUS(2);
  auto g = pair_of_ranks::open(1 << 20, 1500);
  ASSERT_TRUE(g.root && g.peer);
  std::atomic<bool> cancel{false};
  auto bytes = random_bytes(8 << 20, 5);
  const auto t0 = std::chrono::steady_clock::now();
  auto sent = g.root->send(bytes, cancel);  // rank 1 never receives
  ASSERT_FALSE(sent.ok());
  EXPECT_TRUE(sent.err().is(errc::timeout)) << sent.err().describe();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 15.0);
  EXPECT_TRUE(g.root->broken());
  g.peer->abort();
}

TEST(nccl_channel, cancel_stops_a_receive_that_waits) {
  REQUIRE_GPUS(2);
  auto g = pair_of_ranks::open(1 << 20, 60'000);
  ASSERT_TRUE(g.root && g.peer);
  std::atomic<bool> cancel{false};
  collect_sink sink(1 << 20);
  auto rx = std::async(std::launch::async, [&] { return g.peer->receive(1 << 20, sink, cancel); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  cancel = true;
  auto got = rx.get();
  ASSERT_FALSE(got.ok());
  EXPECT_TRUE(got.err().is(errc::cancelled)) << got.err().describe();
  g.root->abort();
}

}  // namespace
}  // namespace deltasync::gpu
