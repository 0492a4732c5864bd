// parallel_sum_digests: the digest of each input equals the single-threaded sum_digest, whatever the slicing
// (inputs of 4 MiB or more in all are cut into 1 MiB slices over every core), for every element size;
// an unsupported element size is {0, 0}.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "codec/sum_digest.h"
#include "sync/parallel_sum.h"

namespace deltasync {
namespace {

TEST(ParallelSum, EqualsTheSingleThreadedDigestForEveryElementSize) {
  std::mt19937_64 rng(11);
  // 12 MiB in all, so the slices run on several threads; the big ones' last slices are partial.
  std::vector<byte_buffer> bufs = {byte_buffer((7u << 20) + 6), byte_buffer(12), byte_buffer((5u << 20) + 8),
                                   byte_buffer(0), byte_buffer(9), byte_buffer(30)};
  const uint32_t sizes[] = {2, 4, 8, 1, 1, 3};
  for (auto& b : bufs)
    for (auto& x : b) x = std::byte(rng() & 0xFF);
  std::vector<sum_input> in;
  for (size_t i = 0; i < bufs.size(); ++i) in.push_back({bufs[i], sizes[i]});
  const auto got = parallel_sum_digests(in);
  ASSERT_EQ(got.size(), bufs.size());
  for (size_t i = 0; i + 1 < bufs.size(); ++i) EXPECT_EQ(got[i], sum_digest(bufs[i], sizes[i])) << "input " << i;
  EXPECT_EQ(got.back(), (digest128{0, 0}));
  EXPECT_NE(got[0], (digest128{0, 0}));
}

}  // namespace
}  // namespace deltasync
