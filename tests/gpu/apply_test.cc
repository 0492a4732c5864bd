// Device scatter-apply (same dtype and promoted), its undo, and torch.hash_tensor on the device, against
// the CPU implementations.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "codec/diff.h"
#include "codec/tensor_hash.h"
#include "gpu/kernels.h"
#include "gpu_test_util.h"

namespace deltasync::gpu {
namespace {

using testing::download;
using testing::random_bytes;
using testing::upload;

std::vector<uint32_t> random_positions(uint64_t numel, uint64_t count, std::mt19937_64& rng) {
  std::vector<uint32_t> p;
  for (uint64_t i = 0; i < count; ++i) p.push_back(static_cast<uint32_t>(rng() % numel));
  std::sort(p.begin(), p.end());
  p.erase(std::unique(p.begin(), p.end()), p.end());
  return p;
}

TEST(gpu_apply, same_dtype_matches_cpu_and_saves_old_values) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(31);
  stream s;
  for (dtype t : {dtype::U8, dtype::BF16, dtype::F32, dtype::F64}) {
    const uint32_t eb = element_bytes(t);
    const uint64_t numel = 100003;
    byte_buffer tensor = random_bytes(numel * eb, rng);
    const auto pos = random_positions(numel, 3000, rng);
    const byte_buffer values = random_bytes(pos.size() * eb, rng);
    byte_buffer want = tensor;
    ASSERT_TRUE(scatter_apply(want, t, pos, values, t).ok());

    device_buffer dt = upload(tensor, s), dp = upload(pos.data(), pos.size() * 4, s), dv = upload(values, s);
    auto old = device_buffer::allocate(pos.size() * eb);
    ASSERT_TRUE(old.ok());
    ASSERT_TRUE(gpu::scatter_apply(dt.data(), t, numel, dp.as<uint32_t>(), pos.size(), dv.data(), t, old->data(), s).ok());
    EXPECT_TRUE(download(dt.data(), tensor.size(), s) == want) << name(t);
    const byte_buffer saved = download(old->data(), pos.size() * eb, s);
    for (size_t k = 0; k < pos.size(); ++k)
      ASSERT_EQ(std::memcmp(saved.data() + k * eb, tensor.data() + uint64_t{pos[k]} * eb, eb), 0) << name(t) << " #" << k;
    ASSERT_TRUE(scatter_restore(dt.data(), eb, dp.as<uint32_t>(), pos.size(), old->data(), s).ok());
    EXPECT_TRUE(download(dt.data(), tensor.size(), s) == tensor) << name(t) << ": restore";
  }
}

TEST(gpu_apply, promoted_values_cast_back_exactly) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(32);
  stream s;
  struct pair_case { dtype param, values; };
  for (pair_case pc : {pair_case{dtype::BF16, dtype::F32}, pair_case{dtype::F16, dtype::F32},
                       pair_case{dtype::F32, dtype::F64}, pair_case{dtype::BF16, dtype::F64}}) {
    const uint32_t peb = element_bytes(pc.param), veb = element_bytes(pc.values);
    const uint64_t numel = 50000;
    const byte_buffer tensor = random_bytes(numel * peb, rng);
    const auto pos = random_positions(numel, 2000, rng);
    // Values: random param-dtype elements (NaNs with payloads included), widened exactly by the CPU.
    const byte_buffer narrow = random_bytes(pos.size() * peb, rng);
    byte_buffer wide(pos.size() * veb);
    for (size_t k = 0; k < pos.size(); ++k)
      ASSERT_TRUE(cast_element(pc.param, narrow.data() + k * peb, pc.values, wide.data() + k * veb));
    byte_buffer want = tensor;
    ASSERT_TRUE(scatter_apply(want, pc.param, pos, wide, pc.values).ok());
    device_buffer dt = upload(tensor, s), dp = upload(pos.data(), pos.size() * 4, s), dv = upload(wide, s);
    auto st = gpu::scatter_apply(dt.data(), pc.param, numel, dp.as<uint32_t>(), pos.size(), dv.data(), pc.values, nullptr, s);
    ASSERT_TRUE(st.ok()) << name(pc.param) << " from " << name(pc.values) << ": " << st.err().message;
    EXPECT_TRUE(download(dt.data(), tensor.size(), s) == want) << name(pc.param) << " from " << name(pc.values);

    // One value that does not round-trip: refused, and the tensor is untouched.
    byte_buffer bad = wide;
    if (pc.values == dtype::F32) bad[veb * 7] ^= std::byte{1};  // a low mantissa bit the narrow type lacks
    else bad[veb * 7] ^= std::byte{1};
    device_buffer dt2 = upload(tensor, s), dv2 = upload(bad, s);
    auto st2 = gpu::scatter_apply(dt2.data(), pc.param, numel, dp.as<uint32_t>(), pos.size(), dv2.data(), pc.values, nullptr, s);
    ASSERT_FALSE(st2.ok());
    EXPECT_EQ(st2.err().code, errc::delta_value_not_representable);
    EXPECT_TRUE(download(dt2.data(), tensor.size(), s) == tensor) << "a refused apply wrote";
  }
}

TEST(gpu_xor_hash, matches_torch_hash_tensor) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(33);
  stream s;
  for (dtype t : {dtype::U8, dtype::I8, dtype::I16, dtype::U32, dtype::I64, dtype::BF16, dtype::F16, dtype::F32,
                  dtype::F64}) {
    for (size_t n : {0u, 1u, 7u, 100000u}) {
      const byte_buffer b = random_bytes(n * element_bytes(t), rng);
      device_buffer d = upload(b, s);
      auto h = xor_hash(d.data(), b.size(), t, s);
      ASSERT_TRUE(h.ok());
      EXPECT_EQ(*h, hash_tensor(t, b)) << name(t) << " x" << n;
    }
  }
}

}  // namespace
}  // namespace deltasync::gpu
