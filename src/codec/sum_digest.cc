// The additive per-tensor digest over whole tensors (the per-element terms are inline in the header).
#include "codec/sum_digest.h"

#include <immintrin.h>

#include "base/check.h"

namespace deltasync {

namespace {

template <uint32_t kElem>
digest128 sum_range(const std::byte* p, uint64_t n, uint64_t first) noexcept {
  using namespace sum_detail;
  uint64_t high = 0, low = 0;
  uint64_t base = first * kIndexMul;
  for (uint64_t k = 0; k < n; ++k, base += kIndexMul) {
    uint64_t v = 0;
    std::memcpy(&v, p + k * kElem, kElem);
    const uint64_t x = v + base;
    high += fmix64(x ^ kSeedHigh);
    low += fmix64(x ^ kSeedLow);
  }
  return {high, low};
}

// The same sums four elements at a time (AVX2 has no 64-bit multiply: each product by a constant is three
// 32x32->64 multiplies). Sums mod 2^64 commute, so the lanes' totals equal the scalar loop's exactly.
__attribute__((target("avx2"))) inline __m256i mul_const(__m256i a, uint64_t c) noexcept {
  const __m256i lo = _mm256_set1_epi64x(static_cast<int64_t>(c & 0xFFFFFFFFull));
  const __m256i hi = _mm256_set1_epi64x(static_cast<int64_t>(c >> 32));
  const __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), lo), _mm256_mul_epu32(a, hi));
  return _mm256_add_epi64(_mm256_mul_epu32(a, lo), _mm256_slli_epi64(cross, 32));
}

__attribute__((target("avx2"))) inline __m256i fmix64x4(__m256i k) noexcept {
  k = _mm256_xor_si256(k, _mm256_srli_epi64(k, 33));
  k = mul_const(k, 0xFF51AFD7ED558CCDull);
  k = _mm256_xor_si256(k, _mm256_srli_epi64(k, 33));
  k = mul_const(k, 0xC4CEB9FE1A85EC53ull);
  return _mm256_xor_si256(k, _mm256_srli_epi64(k, 33));
}

template <uint32_t kElem>
__attribute__((target("avx2"))) digest128 sum_range_avx2(const std::byte* p, uint64_t n, uint64_t first) noexcept {
  using namespace sum_detail;
  const __m256i seed_high = _mm256_set1_epi64x(static_cast<int64_t>(kSeedHigh));
  const __m256i seed_low = _mm256_set1_epi64x(static_cast<int64_t>(kSeedLow));
  const __m256i step = _mm256_set1_epi64x(static_cast<int64_t>(4 * kIndexMul));
  __m256i base = _mm256_setr_epi64x(static_cast<int64_t>(first * kIndexMul), static_cast<int64_t>((first + 1) * kIndexMul),
                                    static_cast<int64_t>((first + 2) * kIndexMul), static_cast<int64_t>((first + 3) * kIndexMul));
  __m256i high = _mm256_setzero_si256(), low = _mm256_setzero_si256();
  uint64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    __m256i v;
    if constexpr (kElem == 1) {
      uint32_t w;
      std::memcpy(&w, p + k, 4);
      v = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(static_cast<int>(w)));
    } else if constexpr (kElem == 2) {
      v = _mm256_cvtepu16_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + k * 2)));
    } else if constexpr (kElem == 4) {
      v = _mm256_cvtepu32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k * 4)));
    } else {
      v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + k * 8));
    }
    const __m256i x = _mm256_add_epi64(v, base);
    high = _mm256_add_epi64(high, fmix64x4(_mm256_xor_si256(x, seed_high)));
    low = _mm256_add_epi64(low, fmix64x4(_mm256_xor_si256(x, seed_low)));
    base = _mm256_add_epi64(base, step);
  }
  alignas(32) uint64_t h[4], l[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(h), high);
  _mm256_store_si256(reinterpret_cast<__m256i*>(l), low);
  const digest128 tail = sum_range<kElem>(p + k * kElem, n - k, first + k);
  return {h[0] + h[1] + h[2] + h[3] + tail.high, l[0] + l[1] + l[2] + l[3] + tail.low};
}

bool have_avx2() noexcept {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}

template <uint32_t kElem>
digest128 sum_any(const std::byte* p, uint64_t n, uint64_t first) noexcept {
  return have_avx2() ? sum_range_avx2<kElem>(p, n, first) : sum_range<kElem>(p, n, first);
}

}  // namespace

digest128 sum_digest_part(byte_span bytes, uint32_t elem_bytes, uint64_t first) noexcept {
  const uint64_t n = bytes.size() / elem_bytes;
  switch (elem_bytes) {
    case 1: return sum_any<1>(bytes.data(), n, first);
    case 2: return sum_any<2>(bytes.data(), n, first);
    case 4: return sum_any<4>(bytes.data(), n, first);
    case 8: return sum_any<8>(bytes.data(), n, first);
    default: DS_CHECK(false, "sum_digest: element size must be 1, 2, 4 or 8");
  }
  return {};
}

digest128 sum_digest(byte_span bytes, uint32_t elem_bytes) noexcept { return sum_digest_part(bytes, elem_bytes, 0); }

}  // namespace deltasync
