// The position codecs (encode_positions, decode_positions) and the validation that guards every decode.
#include "codec/positions.h"

#include <algorithm>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "base/check.h"
#include "codec/compact.h"
#include "codec/delta_format.h"

namespace deltasync {
namespace detail {
namespace {

status check_width(encoding enc, uint32_t width, uint64_t bytes) {
  if (!width_valid(enc, width))
    return error(errc::delta_bad_pos_width, "pos_width " + std::to_string(width) + " is not valid for encoding " +
                                                std::string(encoding_name(enc)));
  if (bytes % width != 0)
    return error(errc::delta_bad_manifest, "positions range of " + std::to_string(bytes) +
                                               " bytes is not a multiple of pos_width " + std::to_string(width));
  return {};
}

// Gap lists ascend by construction (each step adds g + 1 >= 1), so only the last index needs a bound check.
// With n <= numel <= 2^32 entries of at most 2^32 each, the 64-bit sum wraps only when it is exactly 2^64,
// to 0, and 0 - 1 fails the check as it should.
template <typename G>
bool gaps_in_range(const std::byte* p, size_t n, uint64_t numel, uint64_t base) noexcept {
  if (n == 0) return true;
  uint64_t sum = base;
  for (size_t i = 0; i < n; ++i) sum += uint64_t{load_le<G>(p + sizeof(G) * i)} + 1;
  return sum - 1 < numel;
}

bool indices_ascending(const std::byte* p, size_t n) noexcept {
  uint32_t bad = 0;
  for (size_t i = 1; i < n; ++i)
    bad |= static_cast<uint32_t>(load_le<uint32_t>(p + 4 * i) <= load_le<uint32_t>(p + 4 * (i - 1)));
  return bad == 0;
}

}  // namespace

bool width_valid(encoding enc, uint32_t width) noexcept {
  if (enc == encoding::compact) return width == 1;
  return enc == encoding::indices ? width == 4 : (width == 2 || width == 4);
}

status decode_compact_positions(byte_span encoded, uint64_t numel, std::vector<uint32_t>& out) {
  // The count and element size come from the stream's own header (the manifest was checked against it when
  // the file was parsed).
  out.clear();
  if (encoded.size() < compact::kHeaderBytes)
    return error(errc::delta_bad_manifest, "compact stream shorter than its header");
  const uint32_t eb = static_cast<uint8_t>(encoded[2]);
  const uint64_t count = load_le<uint32_t>(encoded.data() + 4);
  byte_buffer diffs;
  return compact::decode(encoded, count, numel, eb, out, diffs);
}

status validate_positions(encoding enc, uint32_t width, byte_span encoded, uint64_t numel, uint64_t base) {
  if (enc == encoding::compact) {
    DS_CHECK(base == 0, "validate_positions: a compact stream is never sliced");
    DS_TRY_STATUS(check_width(enc, width, encoded.size()));
    std::vector<uint32_t> scratch;
    return decode_compact_positions(encoded, numel, scratch);
  }
  DS_TRY_STATUS(check_width(enc, width, encoded.size()));
  // Decoded positions are uint32, so nothing at or past 2^32 is addressable whatever the caller says.
  numel = std::min(numel, kMaxNumel + 1);
  const size_t n = encoded.size() / width;
  if (n > numel)
    return error(errc::delta_position_out_of_range, std::to_string(n) + " positions for a tensor of " +
                                                        std::to_string(numel) + " elements");
  if (n == 0) return {};
  const std::byte* p = encoded.data();
  if (enc == encoding::indices) {
    if (!indices_ascending(p, n) || load_le<uint32_t>(p) < base)
      return error(errc::delta_positions_not_ascending, "indices do not ascend strictly");
    const uint32_t last = load_le<uint32_t>(p + 4 * (n - 1));
    if (last >= numel)
      return error(errc::delta_position_out_of_range, "index " + std::to_string(last) +
                                                          " is past the tensor's " + std::to_string(numel) +
                                                          " elements");
    return {};
  }
  const bool ok =
      width == 2 ? gaps_in_range<uint16_t>(p, n, numel, base) : gaps_in_range<uint32_t>(p, n, numel, base);
  if (!ok)
    return error(errc::delta_position_out_of_range,
                 "gaps run past the tensor's " + std::to_string(numel) + " elements");
  return {};
}

}  // namespace detail

using detail::for_each_position;
using detail::validate_positions;

uint32_t encode_positions(encoding enc, std::span<const uint32_t> positions, byte_buffer& out) {
  DS_CHECK(enc != encoding::compact, "encode_positions: compact streams carry values too (compact::encode)");
  const size_t n = positions.size();
  for (size_t i = 1; i < n; ++i) DS_CHECK(positions[i] > positions[i - 1], "encode_positions: not ascending");
  if (enc == encoding::indices) {
    const size_t at = out.size();
    out.resize(at + 4 * n);
    if (n > 0) std::memcpy(out.data() + at, positions.data(), 4 * n);  // data() may be null when empty
    return 4;
  }
  // positions[0] itself is the first gap; a later gap is one less than the index step.
  uint32_t max_gap = n > 0 ? positions[0] : 0;
  for (size_t i = 1; i < n; ++i) max_gap = std::max(max_gap, positions[i] - positions[i - 1] - 1);
  const uint32_t width = max_gap <= 0xFFFF ? 2 : 4;
  const size_t at = out.size();
  out.resize(at + width * n);
  std::byte* dst = out.data() + at;
  uint32_t prev_next = 0;  // previous index + 1
  for (size_t i = 0; i < n; ++i) {
    const uint32_t gap = positions[i] - prev_next;
    if (width == 2)
      store_le<uint16_t>(dst + 2 * i, static_cast<uint16_t>(gap));
    else
      store_le<uint32_t>(dst + 4 * i, gap);
    prev_next = positions[i] + 1;
  }
  return width;
}

status decode_positions(encoding enc, uint32_t pos_width, byte_span encoded, uint64_t numel,
                        std::vector<uint32_t>& out, uint64_t base) {
  out.clear();
  if (enc == encoding::compact) {
    DS_CHECK(base == 0, "decode_positions: a compact stream is never sliced");
    if (pos_width != 1)
      return error(errc::delta_bad_pos_width, "pos_width " + std::to_string(pos_width) + " is not valid for encoding compact");
    return detail::decode_compact_positions(encoded, numel, out);
  }
  DS_TRY_STATUS(validate_positions(enc, pos_width, encoded, numel, base));
  out.resize(encoded.size() / pos_width);
  for_each_position(
      enc, pos_width, encoded, [&](size_t i, uint64_t idx) { out[i] = static_cast<uint32_t>(idx); }, base);
  return {};
}

status check_positions(encoding enc, uint32_t pos_width, byte_span encoded, uint64_t numel) {
  return validate_positions(enc, pos_width, encoded, numel);
}

}  // namespace deltasync
