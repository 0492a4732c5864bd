// The additive per-tensor digest over whole tensors (the per-element terms are inline in the header).
#include "codec/sum_digest.h"

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

}  // namespace

digest128 sum_digest_part(byte_span bytes, uint32_t elem_bytes, uint64_t first) noexcept {
  const uint64_t n = bytes.size() / elem_bytes;
  switch (elem_bytes) {
    case 1: return sum_range<1>(bytes.data(), n, first);
    case 2: return sum_range<2>(bytes.data(), n, first);
    case 4: return sum_range<4>(bytes.data(), n, first);
    case 8: return sum_range<8>(bytes.data(), n, first);
    default: DS_CHECK(false, "sum_digest: element size must be 1, 2, 4 or 8");
  }
  return {};
}

digest128 sum_digest(byte_span bytes, uint32_t elem_bytes) noexcept { return sum_digest_part(bytes, elem_bytes, 0); }

}  // namespace deltasync
