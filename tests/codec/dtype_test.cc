// Tests for the dtype table and promotion rules.
#include <gtest/gtest.h>

#include "codec/dtype.h"

namespace deltasync {
namespace {

TEST(Dtype, EveryNameRoundTrips) {
  for (const auto& d : all_dtypes()) {
    ASSERT_EQ(dtype_from_name(d.name), d.type) << d.name;
    ASSERT_EQ(dtype_from_torch_name(d.torch_name), d.type) << d.torch_name;
  }
  EXPECT_EQ(dtype_from_torch_name("torch.bfloat16"), dtype::BF16);
  EXPECT_FALSE(dtype_from_name("bf16").has_value());
  EXPECT_FALSE(dtype_from_name("").has_value());
}

TEST(Dtype, SizesMatchSafetensors) {
  EXPECT_EQ(element_bytes(dtype::BF16), 2u);
  EXPECT_EQ(element_bytes(dtype::F8_E4M3), 1u);
  EXPECT_EQ(element_bytes(dtype::C64), 8u);
  EXPECT_EQ(element_bytes(dtype::F4), 0u);
  uint64_t b = 0;
  EXPECT_TRUE(tensor_bytes(dtype::F4, 4, b));
  EXPECT_EQ(b, 2u);
  EXPECT_FALSE(tensor_bytes(dtype::F4, 3, b));     // 12 bits: not whole bytes
  EXPECT_FALSE(tensor_bytes(dtype::F64, 1ull << 62, b));  // overflow
}

TEST(Dtype, PromotionIsExactOrRefused) {
  EXPECT_EQ(promote(dtype::BF16, dtype::BF16), dtype::BF16);
  EXPECT_EQ(promote(dtype::BF16, dtype::F16), dtype::F32);
  EXPECT_EQ(promote(dtype::BF16, dtype::F32), dtype::F32);
  EXPECT_EQ(promote(dtype::F16, dtype::F64), dtype::F64);
  EXPECT_FALSE(promote(dtype::BF16, dtype::I32).has_value());
  EXPECT_FALSE(promote(dtype::F8_E4M3, dtype::BF16).has_value());
}

}  // namespace
}  // namespace deltasync
