// Built-in synthetic models and an RL-trainer simulator, so the demo, tests and benchmarks need no files.
//
// A layout is a named set of tensor shapes shaped like a real checkpoint (Qwen2.5 / Llama 3.2 style).
// rl_trainer_sim keeps fp32 master weights and a bf16 view, the way a mixed-precision trainer does; each
// step adds an AdamW-sized update (lr x a unit-scale direction) to every master weight and re-rounds the
// bf16 view. Density is not drawn: it emerges from how many weights cross a bf16 rounding boundary, which
// lands near the ~1% reported for RL fine-tuning at lr ~ 1e-6.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "codec/dtype.h"

namespace deltasync {

struct tensor_layout {
  std::string name;
  std::vector<uint64_t> shape;
  dtype type = dtype::BF16;
  float init_std = 0.02f;  // 0 means a norm weight initialised to 1.0
  uint64_t numel() const noexcept;
};

struct model_layout {
  std::string name;
  std::vector<tensor_layout> tensors;
  uint64_t parameters() const noexcept;
};

// Names: "tiny" (~0.3M params), "small" (~60M), "qwen2.5-0.5b", "llama3.2-1b", "qwen2.5-7b".
std::span<const std::string_view> synthetic_model_names() noexcept;
result<model_layout> synthetic_model(std::string_view name);

class rl_trainer_sim {
 public:
  // Initialises fp32 master weights from `seed` (deterministic; uses up to `threads` threads).
  rl_trainer_sim(model_layout layout, uint64_t seed, unsigned threads = 2);

  const model_layout& layout() const noexcept { return layout_; }
  size_t tensor_count() const noexcept { return layout_.tensors.size(); }
  // The current bf16 view of tensor i (numel x 2 bytes).
  byte_span bf16(size_t i) const noexcept;

  // One optimizer step at learning rate `lr`: master -= lr * u with u in [-0.5, 0.5] per element (a fresh
  // deterministic draw each step: the size of a steady-state Adam update), then bf16 = rne(master).
  void step(double lr);
  uint64_t steps_taken() const noexcept { return step_; }

 private:
  model_layout layout_;
  uint64_t seed_;
  unsigned threads_;
  uint64_t step_ = 0;
  std::vector<std::vector<float>> master_;
  std::vector<std::vector<uint16_t>> view_;
};

// Round-to-nearest-even fp32 -> bf16 bits (NaN stays NaN).
uint16_t float_to_bf16_rne(float f) noexcept;

}  // namespace deltasync
