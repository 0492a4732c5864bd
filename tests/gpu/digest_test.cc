// The device XXH3-128 against libxxhash (through codec's xxh3_128) on every length class of XXH3, aligned
// and not, one region and many, one launch and many.
#include <gtest/gtest.h>

#include <random>

#include "codec/digest.h"
#include "codec/sum_digest.h"
#include "gpu/kernels.h"
#include "gpu_test_util.h"

namespace deltasync::gpu {
namespace {

using testing::download;
using testing::random_bytes;
using testing::upload;

const std::vector<size_t> kSizes = {0,    1,    3,    8,    16,   17,    64,    128,   129,       240,      241,
                                    255,  512,  1023, 1024, 1025, 2047,  2048,  2049,  16383,     16384,    16385,
                                    65536 + 7, (1u << 20) + 64, (1u << 20) - 1, 3u << 20, (8u << 20) + 13};

TEST(gpu_digest, matches_libxxhash_on_every_length_class) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(11);
  stream s;
  digester d;
  for (size_t n : kSizes) {
    const byte_buffer host = random_bytes(n, rng);
    device_buffer dev = upload(host, s);
    auto got = d.digest(dev.data(), n, s);
    ASSERT_TRUE(got.ok()) << got.err().message;
    EXPECT_EQ(to_hex(*got), to_hex(xxh3_128(host))) << "length " << n;
  }
}

// The device additive digest (tensor_sum128) equals the host's for every element size, short and long.
TEST(gpu_sum_digest, matches_the_host_digest_for_every_element_size) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(12);
  stream s;
  for (uint32_t eb : {1u, 2u, 4u, 8u}) {
    for (size_t n : {size_t{0}, size_t{1}, size_t{31}, size_t{1000}, size_t{65536 + 7}, size_t{3} << 20}) {
      const byte_buffer host = random_bytes(n * eb, rng);
      device_buffer dev = upload(host, s);
      auto got = sum_digest(dev.data(), host.size(), eb, s);
      ASSERT_TRUE(got.ok()) << got.err().message;
      EXPECT_EQ(to_hex(*got), to_hex(deltasync::sum_digest(host, eb))) << "element size " << eb << ", " << n;
    }
  }
  EXPECT_FALSE(sum_digest(nullptr, 0, 3, s).ok());
}

TEST(gpu_digest, unaligned_inputs) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(12);
  stream s;
  digester d;
  const byte_buffer host = random_bytes(70000, rng);
  device_buffer dev = upload(host, s);
  for (size_t off : {1, 3, 7, 8, 13}) {
    for (size_t n : {241u, 1025u, 4096u, 69000u}) {
      auto got = d.digest(dev.as<std::byte>() + off, n, s);
      ASSERT_TRUE(got.ok());
      EXPECT_EQ(*got, xxh3_128(byte_span(host).subspan(off, n))) << "offset " << off << " length " << n;
    }
  }
}

TEST(gpu_digest, many_regions_and_chains_carried_across_launches) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(13);
  stream s;
  // A 16 KiB sums budget: 256 blocks (256 KiB of input) per launch, so the larger regions span launches.
  digester small(16 << 10);
  digester big;
  std::vector<byte_buffer> hosts;
  std::vector<device_buffer> devs;
  std::vector<std::pair<const void*, uint64_t>> regions;
  for (size_t n : {100u, 5000u, 1u << 20, 241u, (3u << 20) + 77, 0u, 262144u, 262145u}) {
    hosts.push_back(random_bytes(n, rng));
    devs.push_back(upload(hosts.back(), s));
    regions.emplace_back(devs.back().data(), n);
  }
  for (digester* d : {&small, &big}) {
    std::vector<digest128> out(regions.size());
    ASSERT_TRUE(d->digest_many(regions, out, s).ok());
    for (size_t i = 0; i < regions.size(); ++i)
      EXPECT_EQ(out[i], xxh3_128(hosts[i])) << "region " << i << " of " << hosts[i].size() << " bytes";
  }
}

// start() reads the region before it returns: overwriting it afterwards must not change the digest; chains
// run on side streams and are collected in any order; a small in-flight budget makes start() retire older
// chains first; regions longer than one launch are hashed synchronously; short ones on the host.
TEST(gpu_digest, started_digests_read_the_region_before_start_returns) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(15);
  stream s;
  for (uint64_t pending_budget : {uint64_t{1} << 30, uint64_t{64} << 10}) {
    digester d(16 << 10, pending_budget);  // 256 KiB of input per launch: the 3 MiB region falls back
    std::vector<byte_buffer> hosts;
    std::vector<uint64_t> tickets;
    device_buffer scratch = upload(random_bytes(8u << 20, rng), s);
    for (size_t n : {100u, 241u, 5000u, 262145u, 1025u, (3u << 20) + 77, 200000u, 240u, 65536u + 7}) {
      hosts.push_back(random_bytes(n, rng));
      ASSERT_TRUE(copy_h2d(scratch.data(), hosts.back().data(), n, s).ok());
      auto t = d.start(scratch.data(), n, s);
      ASSERT_TRUE(t.ok()) << t.err().message;
      tickets.push_back(*t);
      // The same memory is reused for the next region at once (and finally overwritten with zeros).
    }
    const byte_buffer zeros(8u << 20);
    ASSERT_TRUE(copy_h2d(scratch.data(), zeros.data(), zeros.size(), s).ok());
    ASSERT_TRUE(s.synchronize().ok());
    for (size_t k = tickets.size(); k-- > 0;) {  // newest first
      auto got = d.collect(tickets[k]);
      ASSERT_TRUE(got.ok()) << got.err().message;
      EXPECT_EQ(*got, xxh3_128(hosts[k])) << "region " << k << " of " << hosts[k].size() << " bytes, budget "
                                          << pending_budget;
    }
    auto again = d.collect(tickets[0]);
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.err().code, errc::invalid_argument);
    // drop_pending forgets started chains; the digester stays usable.
    ASSERT_TRUE(d.start(scratch.data(), 300000, s).ok());
    d.drop_pending();
    const byte_buffer last = random_bytes(300001, rng);
    device_buffer dev = upload(last, s);
    auto t = d.start(dev.data(), last.size(), s);
    ASSERT_TRUE(t.ok());
    auto got = d.collect(*t);
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(*got, xxh3_128(last));
  }
}

TEST(gpu_digest, large_random) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(14);
  stream s;
  digester d;
  const size_t n = (256u << 20) + 4099;
  const byte_buffer host = random_bytes(n, rng);
  device_buffer dev = upload(host, s);
  auto got = d.digest(dev.data(), n, s);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, xxh3_128(host));
}

}  // namespace
}  // namespace deltasync::gpu
