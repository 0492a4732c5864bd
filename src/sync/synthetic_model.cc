// Synthetic layouts and the RL trainer simulator. Random numbers come from a counter-based hash
// (splitmix64 of seed, step, tensor, index), so any element of any step is reproducible and the work splits
// across threads without shared generator state.
#include "sync/synthetic_model.h"

#include <array>
#include <bit>
#include <cmath>
#include <algorithm>
#include <cstdlib>
#include <optional>
#include <thread>

#include "base/check.h"

namespace deltasync {
namespace {

constexpr std::array<std::string_view, 5> kNames{"tiny", "small", "qwen2.5-0.5b", "llama3.2-1b", "qwen2.5-7b"};

struct arch {
  uint64_t hidden, intermediate, layers, heads, kv_heads, head_dim, vocab;
  bool tied, qkv_bias;
};

std::optional<arch> arch_of(std::string_view name) {
  if (name == "tiny") return arch{64, 256, 2, 4, 2, 16, 1000, true, true};
  if (name == "small") return arch{512, 1536, 8, 8, 2, 64, 32000, false, true};
  if (name == "qwen2.5-0.5b") return arch{896, 4864, 24, 14, 2, 64, 151936, true, true};
  if (name == "llama3.2-1b") return arch{2048, 8192, 16, 32, 8, 64, 128256, true, false};
  if (name == "qwen2.5-7b") return arch{3584, 18944, 28, 28, 4, 128, 152064, false, true};
  return std::nullopt;
}


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

namespace {

result<model_layout> base_model(std::string_view name);

// "NAME@F": NAME with hidden size, MLP width and vocabulary scaled by sqrt(F) (rounded to the head size).
result<model_layout> scaled_model(std::string_view name, std::string_view fraction_text) {
  char* end = nullptr;
  const std::string text(fraction_text);
  const double f = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !(f > 0 && f <= 1))
    return error(errc::invalid_argument, "bad scale '" + text + "' in synthetic model '" + std::string(name) + "@" + text +
                                             "' (want 0 < F <= 1)");
  auto a = arch_of(name);
  if (!a) return base_model(name).err();
  const double s = std::sqrt(f);
  auto scale = [&](uint64_t n, uint64_t multiple) {
    return std::max<uint64_t>(multiple, static_cast<uint64_t>(std::llround(static_cast<double>(n) * s / static_cast<double>(multiple))) * multiple);
  };
  arch b = *a;
  b.hidden = scale(a->hidden, a->head_dim);
  b.heads = std::max<uint64_t>(1, b.hidden / a->head_dim);
  b.kv_heads = std::max<uint64_t>(1, std::min(b.heads, scale(a->kv_heads * 16, 16) / 16));
  b.intermediate = scale(a->intermediate, 64);
  b.vocab = scale(a->vocab, 64);
  return decoder_layout(std::string(name) + "@" + text, b);
}

}  // namespace

result<model_layout> synthetic_model(std::string_view name) {
  if (auto at = name.find('@'); at != std::string_view::npos) return scaled_model(name.substr(0, at), name.substr(at + 1));
  return base_model(name);
}

namespace {

result<model_layout> base_model(std::string_view name) {
  if (auto a = arch_of(name)) return decoder_layout(std::string(name), *a);
  std::string known;
  for (auto n : kNames) known += (known.empty() ? "" : ", ") + std::string(n);
  return error(errc::invalid_argument, "unknown synthetic model '" + std::string(name) + "' (known: " + known +
                                           "; NAME@F scales one to a fraction F of its parameters)");
}

}  // namespace


uint16_t float_to_bf16_rne(float f) noexcept {
  uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // NaN
  uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

result<sim_optimizer> sim_optimizer_from_name(std::string_view name) {
  if (name == "uniform") return sim_optimizer::uniform;
  if (name == "adamw") return sim_optimizer::adamw;
  return error(errc::invalid_argument, "unknown trainer optimizer '" + std::string(name) + "' (uniform, adamw)");
}

result<sim_state_dtype> sim_state_dtype_from_name(std::string_view name) {
  if (name == "fp32") return sim_state_dtype::fp32;
  if (name == "bf16") return sim_state_dtype::bf16;
  return error(errc::invalid_argument, "unknown optimizer state dtype '" + std::string(name) + "' (fp32, bf16)");
}

rl_trainer_sim::rl_trainer_sim(model_layout layout, uint64_t seed, unsigned threads, trainer_options options)
    : options_(options), layout_(std::move(layout)), seed_(seed), threads_(threads == 0 ? 1 : threads) {
  const size_t n = layout_.tensors.size();
  master_.resize(n);
  view_.resize(n);
  const bool adamw = options_.optimizer == sim_optimizer::adamw;
  const bool state16 = options_.adamw.state == sim_state_dtype::bf16;
  if (adamw && state16) m16_.resize(n), v16_.resize(n);
  if (adamw && !state16) m32_.resize(n), v32_.resize(n);
  for (size_t t = 0; t < n; ++t) {
    const uint64_t numel = layout_.tensors[t].numel();
    master_[t].resize(numel);
    view_[t].resize(numel);
    if (!adamw) continue;
    if (state16) {
      m16_[t].assign(numel, 0);
      v16_[t].assign(numel, 0);
    } else {
      m32_[t].assign(numel, 0.0f);
      v32_[t].assign(numel, 0.0f);
    }
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

uint64_t rl_trainer_sim::bytes_per_parameter() const noexcept {
  if (options_.optimizer == sim_optimizer::uniform) return 6;
  return options_.adamw.state == sim_state_dtype::bf16 ? 10 : 14;
}

void rl_trainer_sim::step(double lr) {
  if (options_.optimizer == sim_optimizer::adamw) return adamw_step(lr);
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

namespace {

// Loads and stores of a moment kept in fp32 or in bf16 bits (fp32 arithmetic either way).
struct moments32 {
  float* m;
  float* v;
  float m_at(uint64_t i) const noexcept { return m[i]; }
  float v_at(uint64_t i) const noexcept { return v[i]; }
  void set(uint64_t i, float mi, float vi) const noexcept { m[i] = mi, v[i] = vi; }
};
struct moments16 {
  uint16_t* m;
  uint16_t* v;
  static float up(uint16_t b) noexcept { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }
  // Finite moments only (no NaN test): m and v stay finite for finite gradients.
  static uint16_t down(float f) noexcept {
    const uint32_t bits = std::bit_cast<uint32_t>(f);
    return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
  }
  float m_at(uint64_t i) const noexcept { return up(m[i]); }
  float v_at(uint64_t i) const noexcept { return up(v[i]); }
  void set(uint64_t i, float mi, float vi) const noexcept { m[i] = down(mi), v[i] = down(vi); }
};

struct adamw_step_params {
  float lr, b1, b2, one_minus_b1, one_minus_b2, inv_bc1, inv_sqrt_bc2, eps, decay, grad_scale, signal, noise;
};

// One block of AdamW: gradients first (integer hashing), then the float update in a loop the compiler
// vectorises (no calls, no branches).
template <typename Moments>
void adamw_block(const adamw_step_params& p, uint64_t dir_key, uint64_t noise_key, float* w, uint16_t* view,
                 const Moments& mo, uint64_t begin, uint64_t end) {
  constexpr uint64_t kChunk = 4096;
  alignas(64) float g[kChunk];
  for (uint64_t c = begin; c < end; c += kChunk) {
    const uint64_t n = std::min(kChunk, end - c);
    for (uint64_t k = 0; k < n; k += 4) {
      float d[4], z[4];
      four_uniforms(splitmix64(dir_key ^ ((c + k) >> 2)), d);
      four_uniforms(splitmix64(noise_key ^ ((c + k) >> 2)), z);
      for (int j = 0; j < 4; ++j) g[k + j] = p.grad_scale * (p.signal * d[j] + p.noise * z[j]) * 1.7320508f;
    }
    for (uint64_t k = 0; k < n; ++k) {
      const uint64_t i = c + k;
      const float m = p.b1 * mo.m_at(i) + p.one_minus_b1 * g[k];
      const float v = p.b2 * mo.v_at(i) + p.one_minus_b2 * g[k] * g[k];
      mo.set(i, m, v);
      const float update = (m * p.inv_bc1) / (std::sqrt(v) * p.inv_sqrt_bc2 + p.eps);
      const float x = w[i] - p.lr * update - p.decay * w[i];
      w[i] = x;
      const uint32_t bits = std::bit_cast<uint32_t>(x);
      view[i] = static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);  // finite: see float_to_bf16_rne
    }
  }
}

}  // namespace

void rl_trainer_sim::adamw_step(double lr) {
  ++step_;
  const adamw_options& o = options_.adamw;
  const double t = static_cast<double>(step_);
  adamw_step_params p{};
  p.lr = static_cast<float>(lr);
  p.b1 = static_cast<float>(o.beta1);
  p.b2 = static_cast<float>(o.beta2);
  p.one_minus_b1 = static_cast<float>(1 - o.beta1);
  p.one_minus_b2 = static_cast<float>(1 - o.beta2);
  p.inv_bc1 = static_cast<float>(1 / (1 - std::pow(o.beta1, t)));
  p.inv_sqrt_bc2 = static_cast<float>(1 / std::sqrt(1 - std::pow(o.beta2, t)));
  p.eps = static_cast<float>(o.eps);
  p.decay = static_cast<float>(lr * o.weight_decay);
  p.grad_scale = static_cast<float>(o.grad_scale);
  p.signal = static_cast<float>(std::clamp(o.signal, 0.0, 1.0));
  p.noise = std::sqrt(1.0f - p.signal * p.signal);
  const uint64_t salt = splitmix64(seed_ + step_ * 0x632BE59BD9B4E019ull);
  const uint64_t dir_salt = splitmix64(seed_ ^ 0xD1B54A32D192ED03ull);
  const bool state16 = o.state == sim_state_dtype::bf16;
  parallel_elements(layout_, threads_, [&](size_t t_index, uint64_t begin, uint64_t end) {
    // Blocks start at multiples of 2^20, so element i always draws lane i % 4 of hash i / 4.
    const uint64_t tkey = static_cast<uint64_t>(t_index) << 40;
    float* w = master_[t_index].data();
    uint16_t* view = view_[t_index].data();
    if (state16)
      adamw_block(p, dir_salt ^ tkey, salt ^ tkey, w, view, moments16{m16_[t_index].data(), v16_[t_index].data()}, begin, end);
    else
      adamw_block(p, dir_salt ^ tkey, salt ^ tkey, w, view, moments32{m32_[t_index].data(), v32_[t_index].data()}, begin, end);
  });
}

}  // namespace deltasync
