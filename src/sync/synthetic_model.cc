// Synthetic layouts and the RL trainer simulator. Random numbers come from a counter-based hash
// (splitmix64 of seed, step, tensor, index), so any element of any step is reproducible and the work splits
// across threads without shared generator state.
#include "sync/synthetic_model.h"

#include <array>
#include <bit>
#include <cmath>
#include <thread>

#include "base/check.h"

namespace deltasync {
namespace {

constexpr std::array<std::string_view, 5> kNames{"tiny", "small", "qwen2.5-0.5b", "llama3.2-1b", "qwen2.5-7b"};

struct arch {
  uint64_t hidden, intermediate, layers, heads, kv_heads, head_dim, vocab;
  bool tied, qkv_bias;
};

model_layout decoder_layout(std::string name, const arch& a) {
  model_layout m{std::move(name), {}};
  auto add = [&](std::string n, std::vector<uint64_t> shape, float std_dev = 0.02f) {
    m.tensors.push_back({std::move(n), std::move(shape), dtype::BF16, std_dev});
  };
  uint64_t q = a.heads * a.head_dim, kv = a.kv_heads * a.head_dim;
  add("model.embed_tokens.weight", {a.vocab, a.hidden});
  for (uint64_t l = 0; l < a.layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {a.hidden}, 0.0f);
    add(p + "self_attn.q_proj.weight", {q, a.hidden});
    add(p + "self_attn.k_proj.weight", {kv, a.hidden});
    add(p + "self_attn.v_proj.weight", {kv, a.hidden});
    if (a.qkv_bias) {
      add(p + "self_attn.q_proj.bias", {q});
      add(p + "self_attn.k_proj.bias", {kv});
      add(p + "self_attn.v_proj.bias", {kv});
    }
    add(p + "self_attn.o_proj.weight", {a.hidden, q});
    add(p + "post_attention_layernorm.weight", {a.hidden}, 0.0f);
    add(p + "mlp.gate_proj.weight", {a.intermediate, a.hidden});
    add(p + "mlp.up_proj.weight", {a.intermediate, a.hidden});
    add(p + "mlp.down_proj.weight", {a.hidden, a.intermediate});
  }
  add("model.norm.weight", {a.hidden}, 0.0f);
  if (!a.tied) add("lm_head.weight", {a.vocab, a.hidden});
  return m;
}

inline uint64_t splitmix64(uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Four uniforms in [-1, 1) from one 64-bit hash.
inline void four_uniforms(uint64_t h, float out[4]) noexcept {
  for (int k = 0; k < 4; ++k) {
    out[k] = static_cast<float>(static_cast<int16_t>(h & 0xFFFF)) * (1.0f / 32768.0f);
    h >>= 16;
  }
}

// Runs fn(tensor, begin, end) over every tensor's elements, split into blocks across `threads` threads.
template <typename Fn>
void parallel_elements(const model_layout& m, unsigned threads, Fn&& fn) {
  constexpr uint64_t kBlock = 1 << 20;
  struct task {
    size_t tensor;
    uint64_t begin, end;
  };
  std::vector<task> tasks;
  for (size_t t = 0; t < m.tensors.size(); ++t) {
    uint64_t n = m.tensors[t].numel();
    for (uint64_t b = 0; b < n; b += kBlock) tasks.push_back({t, b, std::min(n, b + kBlock)});
  }
  auto worker = [&](unsigned w) {
    for (size_t i = w; i < tasks.size(); i += threads) fn(tasks[i].tensor, tasks[i].begin, tasks[i].end);
  };
  if (threads <= 1) {
    worker(0);
    return;
  }
  std::vector<std::thread> pool;
  for (unsigned w = 1; w < threads; ++w) pool.emplace_back(worker, w);
  worker(0);
  for (auto& th : pool) th.join();
}

}  // namespace

uint64_t tensor_layout::numel() const noexcept {
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

uint64_t model_layout::parameters() const noexcept {
  uint64_t n = 0;
  for (const auto& t : tensors) n += t.numel();
  return n;
}

std::span<const std::string_view> synthetic_model_names() noexcept { return kNames; }

result<model_layout> synthetic_model(std::string_view name) {
  if (name == "tiny") return decoder_layout("tiny", {64, 256, 2, 4, 2, 16, 1000, true, true});
  if (name == "small") return decoder_layout("small", {512, 1536, 8, 8, 2, 64, 32000, false, true});
  if (name == "qwen2.5-0.5b")
    return decoder_layout("qwen2.5-0.5b", {896, 4864, 24, 14, 2, 64, 151936, true, true});
  if (name == "llama3.2-1b")
    return decoder_layout("llama3.2-1b", {2048, 8192, 16, 32, 8, 64, 128256, true, false});
  if (name == "qwen2.5-7b")
    return decoder_layout("qwen2.5-7b", {3584, 18944, 28, 28, 4, 128, 152064, false, true});
  std::string known;
  for (auto n : kNames) known += (known.empty() ? "" : ", ") + std::string(n);
  return error(errc::invalid_argument, "unknown synthetic model '" + std::string(name) + "' (known: " + known + ")");
}

uint16_t float_to_bf16_rne(float f) noexcept {
  uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // NaN
  uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

rl_trainer_sim::rl_trainer_sim(model_layout layout, uint64_t seed, unsigned threads)
    : layout_(std::move(layout)), seed_(seed), threads_(threads == 0 ? 1 : threads) {
  master_.resize(layout_.tensors.size());
  view_.resize(layout_.tensors.size());
  for (size_t t = 0; t < layout_.tensors.size(); ++t) {
    master_[t].resize(layout_.tensors[t].numel());
    view_[t].resize(layout_.tensors[t].numel());
  }
  parallel_elements(layout_, threads_, [&](size_t t, uint64_t begin, uint64_t end) {
    const float std_dev = layout_.tensors[t].init_std;
    float* m = master_[t].data();
    uint16_t* v = view_[t].data();
    for (uint64_t i = begin; i < end; ++i) {
      float x = 1.0f;
      if (std_dev > 0) {
        // Irwin-Hall of four uniforms: a cheap, bounded stand-in for a normal init (std 1 after scaling).
        float u[4];
        four_uniforms(splitmix64(seed_ ^ (t << 40) ^ i), u);
        x = (u[0] + u[1] + u[2] + u[3]) * 0.8660254f * std_dev;
      }
      m[i] = x;
      v[i] = float_to_bf16_rne(x);
    }
  });
}

byte_span rl_trainer_sim::bf16(size_t i) const noexcept {
  DS_CHECK(i < view_.size(), "tensor index out of range");
  return std::as_bytes(std::span<const uint16_t>(view_[i]));
}

void rl_trainer_sim::step(double lr) {
  ++step_;
  // Adam's normalised step m/sqrt(v) is ~1 in magnitude at the start of training and shrinks once
  // gradients turn noisy; half of lr x U(-1, 1) is a typical RL fine-tuning magnitude.
  const float flr = static_cast<float>(lr) * 0.5f;
  const uint64_t salt = splitmix64(seed_ + step_ * 0x632BE59BD9B4E019ull);
  parallel_elements(layout_, threads_, [&](size_t t, uint64_t begin, uint64_t end) {
    float* m = master_[t].data();
    uint16_t* v = view_[t].data();
    const uint64_t key = salt ^ (static_cast<uint64_t>(t) << 40);
    uint64_t i = begin;
    for (; i + 4 <= end; i += 4) {
      float u[4];
      four_uniforms(splitmix64(key ^ i), u);
      for (int k = 0; k < 4; ++k) {
        m[i + k] -= flr * u[k];
        v[i + k] = float_to_bf16_rne(m[i + k]);
      }
    }
    for (; i < end; ++i) {
      float u[4];
      four_uniforms(splitmix64(key ^ i), u);
      m[i] -= flr * u[0];
      v[i] = float_to_bf16_rne(m[i]);
    }
  });
}

}  // namespace deltasync
