// Tests for the synthetic layouts and the RL trainer simulator.
#include <gtest/gtest.h>

#include <cstring>

#include "codec/diff.h"
#include "sync/synthetic_model.h"

namespace deltasync {
namespace {

TEST(SyntheticModel, LayoutsHaveRealisticSizes) {
  auto qwen = synthetic_model("qwen2.5-0.5b");
  ASSERT_TRUE(qwen.ok());
  EXPECT_NEAR(static_cast<double>(qwen->parameters()) / 1e6, 494.0, 5.0);  // Qwen2.5-0.5B, tied embeddings
  auto llama = synthetic_model("llama3.2-1b");
  ASSERT_TRUE(llama.ok());
  EXPECT_NEAR(static_cast<double>(llama->parameters()) / 1e9, 1.236, 0.01);
  auto bad = synthetic_model("gpt-5");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.err().is(errc::invalid_argument));
  EXPECT_NE(bad.err().message.find("tiny"), std::string::npos);  // lists the known names
}

TEST(SyntheticModel, Bf16RoundingIsNearestEven) {
  EXPECT_EQ(float_to_bf16_rne(1.0f), 0x3F80);
  float halfway;  // 1 + 2^-8: exactly between two bf16 values, rounds to even (1.0)
  uint32_t bits = 0x3F808000u;
  std::memcpy(&halfway, &bits, 4);
  EXPECT_EQ(float_to_bf16_rne(halfway), 0x3F80);
  bits = 0x3F818000u;  // odd lower neighbour: rounds up
  std::memcpy(&halfway, &bits, 4);
  EXPECT_EQ(float_to_bf16_rne(halfway), 0x3F82);
}

TEST(SyntheticModel, StepsAreDeterministicAndDensityEmergesNearOnePercent) {
  auto layout = synthetic_model("tiny");
  ASSERT_TRUE(layout.ok());
  rl_trainer_sim a(*layout, 7, 2), b(*layout, 7, 1);
  std::vector<byte_buffer> before;
  for (size_t i = 0; i < a.tensor_count(); ++i) before.emplace_back(a.bf16(i).begin(), a.bf16(i).end());
  a.step(1e-6);
  b.step(1e-6);
  uint64_t changed = 0, total = 0, norm_changed = 0;
  for (size_t i = 0; i < a.tensor_count(); ++i) {
    ASSERT_EQ(std::memcmp(a.bf16(i).data(), b.bf16(i).data(), a.bf16(i).size()), 0) << "thread count changed results";
    std::vector<uint32_t> pos;
    byte_buffer vals;
    uint64_t c = diff_tensor(before[i], a.bf16(i), 2, pos, vals);
    changed += c;
    total += a.bf16(i).size() / 2;
    if (layout->tensors[i].init_std == 0) norm_changed += c;
  }
  double density = static_cast<double>(changed) / static_cast<double>(total);
  EXPECT_GT(density, 0.002);
  EXPECT_LT(density, 0.03);
  EXPECT_EQ(norm_changed, 0u);  // weights at 1.0 sit far above a 1e-6 step's reach
  // A larger learning rate changes more elements.
  a.step(1e-4);
  uint64_t changed_big = 0;
  for (size_t i = 0; i < a.tensor_count(); ++i) {
    std::vector<uint32_t> pos;
    byte_buffer vals;
    changed_big += diff_tensor(b.bf16(i), a.bf16(i), 2, pos, vals);
  }
  EXPECT_GT(changed_big, changed * 10);
}

}  // namespace
}  // namespace deltasync
