// Byte-span helpers and little-endian loads/stores used by the codecs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

namespace deltasync {

using byte_span = std::span<const std::byte>;
using mutable_byte_span = std::span<std::byte>;
using byte_buffer = std::vector<std::byte>;

template <typename T>
inline T load_le(const void* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;  // deltasync targets little-endian hosts only (x86-64, aarch64); see config summary.
}

template <typename T>
inline void store_le(void* p, T v) noexcept {
  std::memcpy(p, &v, sizeof v);
}

inline byte_span as_bytes(std::string_view s) noexcept {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}
inline std::string_view as_chars(byte_span s) noexcept {
  return {reinterpret_cast<const char*>(s.data()), s.size()};
}

// a * b, false on 64-bit overflow.
inline bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) noexcept {
  return !__builtin_mul_overflow(a, b, &out);
}

}  // namespace deltasync

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "deltasync assumes a little-endian host");
