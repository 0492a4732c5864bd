// The additive per-tensor digest ("sum128"; docs/verification.md): a digest of a tensor's (index, value)
// pairs that a sync updates from the elements it changed, so the receiver's post-apply check costs
// O(changed elements) instead of a pass over every touched tensor.
//
// Definition (the wire contract of the native key `tensor_sum128`): for a tensor of n elements of
// `elem_bytes` bytes (1, 2, 4 or 8), element k's bits v (little-endian, zero-extended to 64 bits),
//   x_k  = v + k * 0x9E3779B97F4A7C15                       (mod 2^64)
//   high = sum over k of fmix64(x_k ^ 0x243F6A8885A308D3)   (mod 2^64)
//   low  = sum over k of fmix64(x_k ^ 0x13198A2E03707344)   (mod 2^64)
// where fmix64 is MurmurHash3's 64-bit finalizer (a bijection). Spelled like XXH3-128 (to_hex: high first).
// For one index the map from value to term is a bijection, so any single changed element changes both lanes;
// several wrong elements go unnoticed only if their term differences cancel in both lanes at once (about
// 2^-128 for unrelated errors; this is an integrity check against faults and bugs, not a MAC against an
// adversary who can forge files).
// An element changed from a to b moves the digest by term(k, b) - term(k, a) in each lane.
#pragma once

#include <cstdint>
#include <cstring>

#include "base/bytes.h"
#include "codec/digest.h"

namespace deltasync {

namespace sum_detail {
inline constexpr uint64_t kIndexMul = 0x9E3779B97F4A7C15ull;
inline constexpr uint64_t kSeedHigh = 0x243F6A8885A308D3ull;
inline constexpr uint64_t kSeedLow = 0x13198A2E03707344ull;
// constexpr: src/gpu's kernels call it too (nvcc --expt-relaxed-constexpr).
constexpr uint64_t fmix64(uint64_t k) noexcept {
  k ^= k >> 33;
  k *= 0xFF51AFD7ED558CCDull;
  k ^= k >> 33;
  k *= 0xC4CEB9FE1A85EC53ull;
  k ^= k >> 33;
  return k;
}
// Element bits, little-endian, zero-extended (elem_bytes 1, 2, 4 or 8).
inline uint64_t element_bits(const std::byte* p, uint32_t elem_bytes) noexcept {
  uint64_t v = 0;
  std::memcpy(&v, p, elem_bytes);
  return v;
}
}  // namespace sum_detail

// The running change of a digest: accumulate removed and added elements, then apply() it to a digest.
// Not thread-safe; one per apply.
struct sum_delta {
  uint64_t high = 0;
  uint64_t low = 0;
  void add(uint64_t index, uint64_t bits) noexcept {
    const uint64_t x = bits + index * sum_detail::kIndexMul;
    high += sum_detail::fmix64(x ^ sum_detail::kSeedHigh);
    low += sum_detail::fmix64(x ^ sum_detail::kSeedLow);
  }
  void remove(uint64_t index, uint64_t bits) noexcept {
    const uint64_t x = bits + index * sum_detail::kIndexMul;
    high -= sum_detail::fmix64(x ^ sum_detail::kSeedHigh);
    low -= sum_detail::fmix64(x ^ sum_detail::kSeedLow);
  }
  // Element `index` changed from `old_bits` to `new_bits`.
  void change(uint64_t index, uint64_t old_bits, uint64_t new_bits) noexcept {
    remove(index, old_bits);
    add(index, new_bits);
  }
  void apply(digest128& d) const noexcept {
    d.high += high;
    d.low += low;
  }
};

// The digest of a whole tensor (`bytes.size() / elem_bytes` elements; elem_bytes 1, 2, 4 or 8, asserted).
digest128 sum_digest(byte_span bytes, uint32_t elem_bytes) noexcept;

// The same over elements [first, first + bytes.size() / elem_bytes) of a tensor (for splitting one tensor
// over threads: the digests of the parts add up to the whole's, lane by lane).
digest128 sum_digest_part(byte_span bytes, uint32_t elem_bytes, uint64_t first) noexcept;

inline digest128 sum_add(digest128 a, digest128 b) noexcept { return {a.high + b.high, a.low + b.low}; }

}  // namespace deltasync
