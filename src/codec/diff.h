// CPU bitwise diff and scatter-apply. Pure: no I/O. Compares element bit patterns, so NaN, inf and -0.0
// changes are seen exactly; no arithmetic touches the values.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "codec/dtype.h"

namespace deltasync {

// Appends to `positions` the element indices (ascending) where `now` differs bitwise from `before`, and to
// `values` the new elements' bytes. `elem_bytes` is 1, 2, 4 or 8; both spans hold the same whole number of
// elements (< 2^32 of them). Equal 64-byte blocks are skipped without per-element work. Returns the count.
uint64_t diff_tensor(byte_span before, byte_span now, uint32_t elem_bytes, std::vector<uint32_t>& positions,
                     byte_buffer& values);

namespace detail {
// diff_tensor restricted to the SSE2 path, which every x86-64 host has; lets tests cover the fallback on
// machines where diff_tensor dispatches to AVX2. Same contract as diff_tensor.
uint64_t diff_tensor_sse2(byte_span before, byte_span now, uint32_t elem_bytes, std::vector<uint32_t>& positions,
                          byte_buffer& values);
}  // namespace detail

// Writes values[i] (elements of `values_type`) to dest element positions[i] (elements of `dest_type`),
// casting exactly when the types differ (see cast_element). Validates every position (< element count of
// dest) and the counts before writing: on error `dest` is untouched.
status scatter_apply(mutable_byte_span dest, dtype dest_type, std::span<const uint32_t> positions,
                     byte_span values, dtype values_type);

// Converts one element between float formats bit-exactly where the value is representable in `to`
// (NaN payloads and signalling bits preserved across bf16/f16 <-> f32 <-> f64); otherwise rounds to nearest
// even like torch's .to(). Returns false for pairs that are not float-to-float among BF16, F16, F32, F64.
bool cast_element(dtype from, const std::byte* src, dtype to, std::byte* dst) noexcept;

}  // namespace deltasync
