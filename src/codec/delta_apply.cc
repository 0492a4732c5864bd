// apply_param: the bounds-checked scatter of one param's values from a parsed delta file into its tensor.
#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <utility>

#include "base/check.h"
#include "codec/compact.h"
#include "codec/delta_format.h"
#include "codec/diff.h"
#include "codec/positions.h"
#include "codec/sum_digest.h"

namespace deltasync {
namespace detail {

bool castable(dtype from, dtype to) noexcept {
  if (from == to) return true;
  alignas(8) std::array<std::byte, 8> zero{}, out{};
  return cast_element(from, zero.data(), to, out.data());
}

}  // namespace detail

using detail::castable;
using detail::for_each_position;
using detail::kMaxNumel;
using detail::quoted;
using detail::validate_positions;

namespace {

// The plain loop is within ~15% of scattering pre-decoded positions: at ~1% density into a tensor larger than
// the cache, each store misses on its own line and the destination's memory traffic sets the pace (a blocked
// decode with write prefetches measured no faster).
template <size_t kElem>
void scatter_same_dtype(encoding enc, uint32_t width, byte_span encoded, uint64_t base, const std::byte* values,
                        std::byte* dest, std::byte* old, sum_delta* sum) {
  if (sum != nullptr && old == nullptr) {
    // The digest's change comes from the old and new values in hand: no second visit of the element.
    for_each_position(enc, width, encoded, [&](size_t i, uint64_t idx) {
      uint64_t was = 0, now = 0;
      std::memcpy(&was, dest + idx * kElem, kElem);
      std::memcpy(&now, values + i * kElem, kElem);
      std::memcpy(dest + idx * kElem, &now, kElem);
      sum->change(idx, was, now);
    }, base);
    return;
  }
  if (old == nullptr) {
    for_each_position(enc, width, encoded, [&](size_t i, uint64_t idx) {
      std::memcpy(dest + idx * kElem, values + i * kElem, kElem);
    }, base);
    return;
  }
  // Saving the old value and writing the new one in the same visit costs one cache miss per element, not two.
  for_each_position(enc, width, encoded, [&](size_t i, uint64_t idx) {
    std::memcpy(old + i * kElem, dest + idx * kElem, kElem);
    std::memcpy(dest + idx * kElem, values + i * kElem, kElem);
  }, base);
  if (sum == nullptr) return;
  // The digest from the saved old values, in a second pass that reads only sequential memory: folded into the
  // scatter, its arithmetic makes each iteration so long that few of the scatter's cache misses overlap (at 1%
  // density into tensors past the cache the fused loop measured 4x slower; compact::apply_diffs does the same).
  for_each_position(enc, width, encoded, [&](size_t i, uint64_t idx) {
    uint64_t was = 0, now = 0;
    std::memcpy(&was, old + i * kElem, kElem);
    std::memcpy(&now, values + i * kElem, kElem);
    sum->change(idx, was, now);
  }, base);
}

// A compact slice (param_entry::block_first/block_end): its blocks, after checking that they lie in the stream
// and hold exactly the slice's changes.
status decode_compact_slice(byte_span stream, const param_entry& p, uint64_t numel, uint32_t eb,
                            std::vector<uint32_t>& positions, byte_buffer& diffs) {
  DS_ASSIGN_OR_RETURN(compact::stream_info info, compact::read_header(stream, compact::kAnyCount, eb));
  if (info.version != 2 || p.block_first >= p.block_end || p.block_end > info.blocks)
    return error(errc::delta_manifest_bounds, "blocks " + std::to_string(p.block_first) + ".." +
                                                  std::to_string(p.block_end) + " are not a run of the stream's " +
                                                  std::to_string(info.blocks));
  const uint64_t from = uint64_t{p.block_first} * compact::kBlockElems;
  const uint64_t to = std::min<uint64_t>(info.count, uint64_t{p.block_end} * compact::kBlockElems);
  if (p.changed() != to - from)
    return error(errc::delta_value_count_mismatch, "blocks " + std::to_string(p.block_first) + ".." +
                                                       std::to_string(p.block_end) + " hold " + std::to_string(to - from) +
                                                       " changes, the slice says " + std::to_string(p.changed()));
  return compact::decode_blocks(stream, info, numel, p.block_first, p.block_end, positions, diffs);
}

}  // namespace

status apply_param(const delta_file& f, const param_entry& p, mutable_byte_span dest, byte_buffer* old_values,
                   sum_delta* sum, std::vector<uint32_t>* compact_positions) {
  const std::string label = "param " + quoted(p.name);
  const uint32_t peb = element_bytes(p.type);
  const uint32_t veb = element_bytes(f.values_type);
  uint64_t dest_bytes = 0;
  const uint64_t numel = p.numel();
  if (peb == 0 || !tensor_bytes(p.type, numel, dest_bytes) || numel > kMaxNumel)
    return error(errc::delta_bad_manifest, label + ": unsupported dtype or shape");
  if (dest.size() != dest_bytes)
    return error(errc::delta_shape_mismatch, label + ": destination holds " + std::to_string(dest.size()) +
                                                 " bytes, the tensor needs " + std::to_string(dest_bytes));
  if (f.manifest.enc == encoding::compact) {
    DS_CHECK(p.pos_base == 0, "apply_param: a compact slice is a run of blocks, not a pos_base");
    if (p.pos_start > p.pos_end || p.pos_end > f.positions.size())
      return error(errc::delta_manifest_bounds, label + ": range lies outside the file's __compact__");
    // Decoded (and validated in full) before the first write; the differences land on the current values.
    std::vector<uint32_t> scratch;
    std::vector<uint32_t>& positions = compact_positions != nullptr ? *compact_positions : scratch;
    byte_buffer diffs;
    const byte_span stream = f.positions.subspan(p.pos_start, p.pos_end - p.pos_start);
    auto st = p.block_end == 0 ? compact::decode(stream, p.changed(), numel, peb, positions, diffs)
                               : decode_compact_slice(stream, p, numel, peb, positions, diffs);
    if (!st.ok()) {
      error e = std::move(st).err();
      return error(e.code, label + ": " + e.message);
    }
    compact::apply_diffs(positions, diffs, peb, dest, old_values, sum);
    return {};
  }
  // p may come from anywhere, so its ranges are checked against this file again.
  if (p.pos_start > p.pos_end || p.pos_end > f.positions.size() || p.val_start > p.val_end ||
      veb == 0 || p.val_end > f.values.size() / veb)
    return error(errc::delta_manifest_bounds, label + ": ranges lie outside the file's tensors");
  const byte_span encoded = f.positions.subspan(p.pos_start, p.pos_end - p.pos_start);
  {
    auto st = validate_positions(f.manifest.enc, p.pos_width, encoded, numel, p.pos_base);
    if (!st.ok()) {
      error e = std::move(st).err();
      return error(e.code, label + ": " + e.message);
    }
  }
  const uint64_t count = encoded.size() / p.pos_width;
  if (count != p.changed())
    return error(errc::delta_value_count_mismatch, label + ": " + std::to_string(count) + " positions but " +
                                                       std::to_string(p.changed()) + " values");
  const std::byte* vals = f.values.data() + p.val_start * veb;
  std::byte* out = dest.data();
  if (f.values_type == p.type && peb != 1 && peb != 2 && peb != 4 && peb != 8)
    return error(errc::unsupported, label + ": element size " + std::to_string(peb));
  std::byte* old = nullptr;
  if (old_values != nullptr) {
    old_values->resize(count * peb);
    old = old_values->data();
  }

  if (f.values_type == p.type) {
    switch (peb) {
      case 1: scatter_same_dtype<1>(f.manifest.enc, p.pos_width, encoded, p.pos_base, vals, out, old, sum); break;
      case 2: scatter_same_dtype<2>(f.manifest.enc, p.pos_width, encoded, p.pos_base, vals, out, old, sum); break;
      case 4: scatter_same_dtype<4>(f.manifest.enc, p.pos_width, encoded, p.pos_base, vals, out, old, sum); break;
      default: scatter_same_dtype<8>(f.manifest.enc, p.pos_width, encoded, p.pos_base, vals, out, old, sum); break;
    }
    return {};
  }

  // A promoted values tensor: every value must come back to the param's dtype exactly (it round-trips),
  // checked for all of them before the first write.
  if (!castable(f.values_type, p.type))
    return error(errc::delta_dtype_mismatch, label + ": __values__ dtype does not convert to " +
                                                 std::string(torch_name(p.type)));
  alignas(8) std::array<std::byte, 8> narrow{}, wide{};
  for (uint64_t i = 0; i < count; ++i) {
    const std::byte* v = vals + i * veb;
    if (!cast_element(f.values_type, v, p.type, narrow.data()) ||
        !cast_element(p.type, narrow.data(), f.values_type, wide.data()) || std::memcmp(wide.data(), v, veb) != 0)
      return error(errc::delta_value_not_representable,
                   label + ": value #" + std::to_string(i) + " is not exactly representable as " +
                       std::string(torch_name(p.type)));
  }
  for_each_position(f.manifest.enc, p.pos_width, encoded, [&](size_t i, uint64_t idx) {
    if (old != nullptr) std::memcpy(old + i * peb, out + idx * peb, peb);
    if (sum != nullptr) sum->remove(idx, sum_detail::element_bits(out + idx * peb, peb));
    cast_element(f.values_type, vals + i * veb, p.type, out + idx * peb);
    if (sum != nullptr) sum->add(idx, sum_detail::element_bits(out + idx * peb, peb));
  }, p.pos_base);
  return {};
}

}  // namespace deltasync
