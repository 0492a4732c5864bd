// Built-in synthetic models and an RL-trainer simulator, so the demo, tests and benchmarks need no files.
//
// A layout is a named set of tensor shapes shaped like a real checkpoint (Qwen2.5 / Llama 3.2 style).
// rl_trainer_sim keeps fp32 master weights and a bf16 view, the way a mixed-precision trainer does; each
// step adds an AdamW-sized update (lr x a unit-scale direction) to every master weight and re-rounds the
// bf16 view. Density is not drawn: it emerges from how many weights cross a bf16 rounding boundary, which
// lands near the ~1% reported for RL fine-tuning at lr ~ 1e-6.
//
// Two optimizers: `uniform` (the default; lr x U(-0.5, 0.5) per element, no optimizer state, so the demo and
// the service bench stay light) and `adamw` (the realistic corpus of `deltasync bench`): synthetic gradients
// (a persistent per-element direction plus fresh noise each step), AdamW's first and second moments with
// bias correction and decoupled weight decay, all in fp32 arithmetic; the moments are stored in fp32 or, to
// fit a 1B+ model next to a sender and a receiver in this machine's memory, in bf16.
//
// Scaled layouts: "NAME@F" (0 < F <= 1, e.g. "qwen2.5-7b@0.125") keeps NAME's depth and head size and
// shrinks hidden size, MLP width and vocabulary by sqrt(F), so the parameter count is about F x NAME's.
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

enum class sim_optimizer : uint8_t { uniform, adamw };
enum class sim_state_dtype : uint8_t { fp32, bf16 };

struct adamw_options {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.01;   // decoupled (AdamW): w -= lr * weight_decay * w
  double grad_scale = 1e-3;     // gradient standard deviation
  double signal = 0.3;          // share of the gradient that points the same way every step (0..1)
  sim_state_dtype state = sim_state_dtype::fp32;
};

struct trainer_options {
  sim_optimizer optimizer = sim_optimizer::uniform;
  adamw_options adamw;
};

// "uniform" / "adamw" and "fp32" / "bf16"; errc::invalid_argument otherwise.
result<sim_optimizer> sim_optimizer_from_name(std::string_view name);
result<sim_state_dtype> sim_state_dtype_from_name(std::string_view name);

class rl_trainer_sim {
 public:
  // Initialises fp32 master weights from `seed` (deterministic; uses up to `threads` threads). The initial
  // weights depend on the layout and seed only, never on the optimizer (a receiver built with
  // host_weight_store::synthetic starts where any trainer starts).
  rl_trainer_sim(model_layout layout, uint64_t seed, unsigned threads = 2, trainer_options options = {});

  const model_layout& layout() const noexcept { return layout_; }
  size_t tensor_count() const noexcept { return layout_.tensors.size(); }
  // The current bf16 view of tensor i (numel x 2 bytes).
  byte_span bf16(size_t i) const noexcept;

  // One optimizer step at learning rate `lr`: master -= lr * u with u in [-0.5, 0.5] per element (a fresh
  // deterministic draw each step: the size of a steady-state Adam update), then bf16 = rne(master).
  // With the adamw optimizer: one AdamW step at `lr` on fresh synthetic gradients, then bf16 = rne(master).
  void step(double lr);
  uint64_t steps_taken() const noexcept { return step_; }
  const trainer_options& options() const noexcept { return options_; }
  // Host bytes held per parameter (master + view + optimizer state).
  uint64_t bytes_per_parameter() const noexcept;

 private:
  void adamw_step(double lr);

  trainer_options options_;
  model_layout layout_;
  uint64_t seed_;
  unsigned threads_;
  uint64_t step_ = 0;
  std::vector<std::vector<float>> master_;
  std::vector<std::vector<uint16_t>> view_;
  // AdamW moments: one of the two pairs is used, by options_.adamw.state.
  std::vector<std::vector<float>> m32_, v32_;
  std::vector<std::vector<uint16_t>> m16_, v16_;
};

// Round-to-nearest-even fp32 -> bf16 bits (NaN stays NaN).
uint16_t float_to_bf16_rne(float f) noexcept;

}  // namespace deltasync
