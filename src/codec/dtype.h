// The dtype table: every safetensors dtype string, its size, and the torch name slime's manifests use.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace deltasync {

enum class dtype : uint8_t {
  BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ,
  I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64,
};

enum class dtype_kind : uint8_t { boolean, unsigned_int, signed_int, floating, complex };

struct dtype_info {
  dtype type;
  std::string_view name;        // safetensors spelling: "BF16"
  std::string_view torch_name;  // torch.dtype without "torch.": "bfloat16"
  uint32_t bits;                // 4 and 6 for the sub-byte float formats
  dtype_kind kind;
};

// All dtypes in enum order.
std::span<const dtype_info> all_dtypes() noexcept;
const dtype_info& info(dtype t) noexcept;

std::optional<dtype> dtype_from_name(std::string_view safetensors_name) noexcept;
std::optional<dtype> dtype_from_torch_name(std::string_view torch_name) noexcept;  // "torch." prefix allowed

inline std::string_view name(dtype t) noexcept { return info(t).name; }
inline std::string_view torch_name(dtype t) noexcept { return info(t).torch_name; }
inline uint32_t element_bits(dtype t) noexcept { return info(t).bits; }
// Whole bytes per element; 0 for the sub-byte formats (F4, F6_*), which cannot be addressed per element.
inline uint32_t element_bytes(dtype t) noexcept { return info(t).bits % 8 == 0 ? info(t).bits / 8 : 0; }
inline bool is_floating(dtype t) noexcept { return info(t).kind == dtype_kind::floating; }

// Byte size of a tensor of `numel` elements, false on overflow or when a sub-byte dtype does not fill whole
// bytes.
bool tensor_bytes(dtype t, uint64_t numel, uint64_t& out_bytes) noexcept;

// The dtype that can hold every value of both a and b exactly (bit for bit, NaN payloads included), used for
// `__values__` when a bucket mixes params of different dtypes. nullopt when no such dtype exists: such params
// go in separate buckets. promote(a, a) == a.
std::optional<dtype> promote(dtype a, dtype b) noexcept;

}  // namespace deltasync
