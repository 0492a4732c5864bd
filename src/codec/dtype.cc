// The dtype table. Order matches the enum; a static_assert-checked lookup keeps them in step.
#include "codec/dtype.h"

#include <array>

#include "base/check.h"

namespace deltasync {
namespace {

using k = dtype_kind;
constexpr std::array<dtype_info, 22> kTable{{
    {dtype::BOOL, "BOOL", "bool", 8, k::boolean},
    {dtype::F4, "F4", "float4_e2m1fn_x2", 4, k::floating},
    {dtype::F6_E2M3, "F6_E2M3", "float6_e2m3fn", 6, k::floating},
    {dtype::F6_E3M2, "F6_E3M2", "float6_e3m2fn", 6, k::floating},
    {dtype::U8, "U8", "uint8", 8, k::unsigned_int},
    {dtype::I8, "I8", "int8", 8, k::signed_int},
    {dtype::F8_E5M2, "F8_E5M2", "float8_e5m2", 8, k::floating},
    {dtype::F8_E4M3, "F8_E4M3", "float8_e4m3fn", 8, k::floating},
    {dtype::F8_E8M0, "F8_E8M0", "float8_e8m0fnu", 8, k::floating},
    {dtype::F8_E4M3FNUZ, "F8_E4M3FNUZ", "float8_e4m3fnuz", 8, k::floating},
    {dtype::F8_E5M2FNUZ, "F8_E5M2FNUZ", "float8_e5m2fnuz", 8, k::floating},
    {dtype::I16, "I16", "int16", 16, k::signed_int},
    {dtype::U16, "U16", "uint16", 16, k::unsigned_int},
    {dtype::F16, "F16", "float16", 16, k::floating},
    {dtype::BF16, "BF16", "bfloat16", 16, k::floating},
    {dtype::I32, "I32", "int32", 32, k::signed_int},
    {dtype::U32, "U32", "uint32", 32, k::unsigned_int},
    {dtype::F32, "F32", "float32", 32, k::floating},
    {dtype::C64, "C64", "complex64", 64, k::complex},
    {dtype::F64, "F64", "float64", 64, k::floating},
    {dtype::I64, "I64", "int64", 64, k::signed_int},
    {dtype::U64, "U64", "uint64", 64, k::unsigned_int},
}};

constexpr bool table_in_enum_order() {
  for (size_t i = 0; i < kTable.size(); ++i)
    if (static_cast<size_t>(kTable[i].type) != i) return false;
  return true;
}
static_assert(table_in_enum_order(), "dtype table must follow the enum order");

}  // namespace

std::span<const dtype_info> all_dtypes() noexcept { return kTable; }

const dtype_info& info(dtype t) noexcept {
  auto i = static_cast<size_t>(t);
  DS_CHECK(i < kTable.size(), "dtype out of range");
  return kTable[i];
}

std::optional<dtype> dtype_from_name(std::string_view n) noexcept {
  for (const auto& d : kTable)
    if (d.name == n) return d.type;
  return std::nullopt;
}

std::optional<dtype> dtype_from_torch_name(std::string_view n) noexcept {
  if (n.starts_with("torch.")) n.remove_prefix(6);
  for (const auto& d : kTable)
    if (d.torch_name == n) return d.type;
  // Aliases torch prints for the same dtypes.
  if (n == "half") return dtype::F16;
  if (n == "float") return dtype::F32;
  if (n == "double") return dtype::F64;
  if (n == "short") return dtype::I16;
  if (n == "int") return dtype::I32;
  if (n == "long") return dtype::I64;
  return std::nullopt;
}

bool tensor_bytes(dtype t, uint64_t numel, uint64_t& out_bytes) noexcept {
  uint64_t bits;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(element_bits(t)), &bits)) return false;
  if (bits % 8 != 0) return false;
  out_bytes = bits / 8;
  return true;
}

std::optional<dtype> promote(dtype a, dtype b) noexcept {
  if (a == b) return a;
  // Exact widening only between the float formats we convert in software (bf16, f16, f32, f64);
  // the fp8 and sub-byte formats, integers and bool never share a values tensor with another dtype.
  auto rank = [](dtype t) -> int {
    switch (t) {
      case dtype::BF16:
      case dtype::F16: return 1;
      case dtype::F32: return 2;
      case dtype::F64: return 3;
      default: return 0;
    }
  };
  int ra = rank(a), rb = rank(b);
  if (ra == 0 || rb == 0) return std::nullopt;
  int r = ra > rb ? ra : rb;
  if (r == 1) return dtype::F32;  // bf16 with f16: neither holds the other
  return r == 2 ? dtype::F32 : dtype::F64;
}

}  // namespace deltasync
