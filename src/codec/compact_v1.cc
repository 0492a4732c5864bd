// The compact/1 decoder (codec/compact.h "compact/1"): streams written by the first release of `compact` still
// apply. It validates exactly what it did then; the header and directory are checked by read_header.
#include <string>

#include "codec/compact_bits.h"

namespace deltasync::compact::detail {
namespace {


template <typename T>
status decode_v1_t(byte_span stream, const stream_info& info, uint64_t numel, uint32_t* positions, T* diffs) {
  constexpr uint32_t w = bits_of<T>;
  constexpr uint64_t max_code = (w == 64 ? UINT64_MAX : (uint64_t{1} << w) - 1) - 1;  // zigzag + 1 fits w bits
  const std::byte* dir = stream.data() + info.dir_offset;
  const std::byte* data = dir + size_t{kDirEntryBytes} * info.blocks;
  uint64_t next = 0;
  for (uint32_t b = 0; b < info.blocks; ++b) {
    const uint64_t base = load_le<uint32_t>(dir + size_t{kDirEntryBytes} * b);
    const uint32_t bytes = load_le<uint32_t>(dir + size_t{kDirEntryBytes} * b + 4);
    if (base != next) return bad_block(b, "does not start right after the previous block's last position");
    const size_t first = size_t{b} * kBlockElemsV1;
    const size_t m = std::min<size_t>(kBlockElemsV1, info.count - first);
    const uint32_t kp = static_cast<uint8_t>(data[0]);
    const uint32_t kv = static_cast<uint8_t>(data[1]);
    if ((kp > kMaxK && kp != kModeSpecial) || (kv > kMaxK && kv != kModeSpecial))
      return bad_block(b, "has a Rice parameter past 31");
    bit_reader r{data + 2, data + bytes};
    for (size_t i = 0; i < m; ++i) {
      uint64_t g = 0;
      if (kp != kModeSpecial && !r.rice(kp, 32, kEscapeQ, g)) return bad_block(b, "ends inside a position code");
      if (g > UINT32_MAX) return bad_block(b, "has a gap wider than 32 bits");
      const uint64_t idx = next + g;
      if (idx >= numel)
        return error(errc::delta_position_out_of_range, "compact stream: position " + std::to_string(idx) +
                                                            " is past the tensor's " + std::to_string(numel) +
                                                            " elements");
      positions[first + i] = static_cast<uint32_t>(idx);
      next = idx + 1;
      uint64_t u = 0;
      T d;
      if (kv != kModeSpecial) {
        if (!r.rice(kv, w, kValueEscapeQ, u)) return bad_block(b, "ends inside a value code");
        if (u > max_code) return bad_block(b, "has a value code wider than the element");
        d = from_code<T>(u);
      } else {
        if (!r.take_wide(w, u)) return bad_block(b, "ends inside a raw value");
        d = static_cast<T>(u);
        if (d == 0) return bad_block(b, "has a zero difference (an unchanged element)");
      }
      diffs[first + i] = d;
    }
    if (!r.at_end()) return bad_block(b, "has bytes or non-zero bits after its last code");
    data += bytes;
  }
  return {};
}

}  // namespace

status decode_v1(byte_span stream, const stream_info& info, uint64_t numel, uint32_t* positions, std::byte* diffs) {
  switch (info.elem_bytes) {
    case 1: return decode_v1_t<uint8_t>(stream, info, numel, positions, reinterpret_cast<uint8_t*>(diffs));
    case 2: return decode_v1_t<uint16_t>(stream, info, numel, positions, reinterpret_cast<uint16_t*>(diffs));
    case 4: return decode_v1_t<uint32_t>(stream, info, numel, positions, reinterpret_cast<uint32_t*>(diffs));
    default: return decode_v1_t<uint64_t>(stream, info, numel, positions, reinterpret_cast<uint64_t*>(diffs));
  }
}

}  // namespace deltasync::compact::detail
