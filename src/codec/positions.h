// Internal to src/codec: the position-list and message helpers shared by the delta file's sources.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "codec/delta_format.h"
#include "codec/quote.h"
#include "codec/dtype.h"

namespace deltasync::detail {

// Positions are uint32 element indices, so a tensor may hold at most 2^32 - 1 elements.
inline constexpr uint64_t kMaxNumel = (uint64_t{1} << 32) - 1;

// Whether `width` is a pos_width `enc` allows: 4 for indices, 2 or 4 for the gap encodings, 1 for compact.
bool width_valid(encoding enc, uint32_t width) noexcept;

// The positions of a compact stream (codec/compact.h), count and element size read from its header; the
// whole stream is validated. Errors as compact::decode's.
status decode_compact_positions(byte_span encoded, uint64_t numel, std::vector<uint32_t>& out);

// Validates an encoded position list in full (bounds, order, count) without decoding it anywhere. `base`
// (param_entry::pos_base of a slice; not for compact): every index is >= base, and gaps count from it.
// Errors: delta_bad_pos_width, delta_bad_manifest (size not a multiple of width), delta_position_out_of_range,
// delta_positions_not_ascending.
status validate_positions(encoding enc, uint32_t width, byte_span encoded, uint64_t numel, uint64_t base = 0);

// Calls visit(i, index) for every entry of an already validated position list (not compact), gaps counted
// from `base`.
template <typename Visit>
void for_each_position(encoding enc, uint32_t width, byte_span encoded, Visit&& visit, uint64_t base = 0) {
  const std::byte* p = encoded.data();
  const size_t n = encoded.size() / width;
  if (enc == encoding::indices) {
    for (size_t i = 0; i < n; ++i) visit(i, uint64_t{load_le<uint32_t>(p + 4 * i)});
  } else if (width == 2) {
    uint64_t next = base;
    for (size_t i = 0; i < n; ++i) {
      const uint64_t idx = next + load_le<uint16_t>(p + 2 * i);
      visit(i, idx);
      next = idx + 1;
    }
  } else {
    uint64_t next = base;
    for (size_t i = 0; i < n; ++i) {
      const uint64_t idx = next + load_le<uint32_t>(p + 4 * i);
      visit(i, idx);
      next = idx + 1;
    }
  }
}

// Whether `from` converts to `to` at all; each value must still round-trip (apply_param checks that).
// Shared by the reader and apply_param; defined in delta_apply.cc.
bool castable(dtype from, dtype to) noexcept;

}  // namespace deltasync::detail
