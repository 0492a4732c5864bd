// The compact/2 validating decoder (whole streams and runs of blocks) and the in-place apply; compact/1 streams
// are decoded by compact_v1.cc. The format is defined in compact.h.
#include "codec/compact.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "base/check.h"
#include "codec/compact_bits.h"

namespace deltasync::compact {
namespace {

using namespace detail;
namespace cd = coder;

// A lane whose codes or bytes do not add up.
error bad_lane(uint32_t b, uint32_t l, const char* what) {
  return error(errc::delta_bad_manifest,
               "compact stream: block " + std::to_string(b) + " lane " + std::to_string(l) + " " + what);
}

// Blocks [b_lo, b_hi) into positions / diffs (block b's changes from (b - b_lo) x kBlockElems on); `next` is the
// index block b_lo must start at, and on success the index after the last decoded.
template <typename T>
status decode_t(byte_span stream, const stream_info& info, uint64_t numel, uint32_t b_lo, uint32_t b_hi, uint64_t& next,
                uint32_t* positions, T* diffs) {
  constexpr uint32_t w = bits_of<T>;
  constexpr uint64_t max_code = (w == 64 ? UINT64_MAX : (uint64_t{1} << w) - 1) - 1;  // zigzag + 1 fits w bits
  table t;
  t.nsym = info.nsym;
  std::copy(info.freqs, info.freqs + info.nsym, t.freq);
  t.finish();
  uint8_t lut[cd::kProbScale];
  for (uint32_t s = 0; s < t.nsym; ++s) std::memset(lut + t.cum[s], static_cast<int>(s), t.freq[s]);
  const std::byte* dir = stream.data() + info.dir_offset;
  const std::byte* data = dir + size_t{kDirEntryBytes} * info.blocks;
  for (uint32_t b = 0; b < b_lo; ++b) data += load_le<uint32_t>(dir + size_t{kDirEntryBytes} * b + 4);
  for (uint32_t b = b_lo; b < b_hi; ++b) {
    const uint64_t base = load_le<uint32_t>(dir + size_t{kDirEntryBytes} * b);
    const uint32_t bytes = load_le<uint32_t>(dir + size_t{kDirEntryBytes} * b + 4);
    if (base != next) return bad_block(b, "does not start right after the previous block's last position");
    const size_t first = size_t{b} * kBlockElems, out = size_t{b - b_lo} * kBlockElems;
    const uint32_t m = static_cast<uint32_t>(std::min<uint64_t>(kBlockElems, info.count - first));
    const uint32_t lanes = (m + kLaneElems - 1) / kLaneElems;
    const uint32_t kp = static_cast<uint8_t>(data[0]);
    if (kp > kMaxK && kp != kModeSpecial) return bad_block(b, "has a Rice parameter past 31");
    const std::byte* region = data + 1 + 2 * size_t{lanes};
    const std::byte* block_end = data + bytes;
    for (uint32_t l = 0; l < lanes; ++l) {
      const uint32_t size = load_le<uint16_t>(data + 1 + 2 * size_t{l});
      if (size < cd::kStateBytes || size > block_end - region) return bad_lane(b, l, "runs past its block");
      const std::byte* end = region + size;
      const std::byte* bits = region + cd::kStateBytes;
      uint32_t x = load24(region);
      if (x < cd::kStateLow) return bad_lane(b, l, "starts in a rANS state below 2^16");
      bit_reader r{bits, end};
      const std::byte* q = end;  // the rANS bytes, read backwards
      const uint32_t i0 = l * kLaneElems, i1 = std::min(m, i0 + kLaneElems);
      for (uint32_t i = i0; i < i1; ++i) {
        uint64_t g = 0;
        if (kp != kModeSpecial && !r.rice(kp, 32, kEscapeQ, g)) return bad_lane(b, l, "ends inside a position code");
        if (g > UINT32_MAX) return bad_lane(b, l, "has a gap wider than 32 bits");
        const uint64_t idx = next + g;
        if (idx >= numel)
          return error(errc::delta_position_out_of_range, "compact stream: position " + std::to_string(idx) +
                                                              " is past the tensor's " + std::to_string(numel) +
                                                              " elements");
        positions[out + i] = static_cast<uint32_t>(idx);
        next = idx + 1;
        const uint32_t s = lut[x & (cd::kProbScale - 1)];
        x = cd::decode_step(x, t.freq[s], t.cum[s]);
        while (x < cd::kStateLow) {
          if (q == bits) return bad_lane(b, l, "runs out of rANS bytes");
          x = (x << 8) | static_cast<uint8_t>(*--q);
        }
        uint64_t u = s;
        if (s >= cd::kDirectSymbols) {
          const uint32_t eb = cd::extra_bits_of(s);
          uint64_t extra = 0;
          if (!r.take_wide(eb, extra)) return bad_lane(b, l, "ends inside a value's bits");
          u = (uint64_t{1} << eb) | extra;
        }
        if (u > max_code) return bad_lane(b, l, "has a value code wider than the element");
        diffs[out + i] = from_code<T>(u);
      }
      if (x != cd::kStateLow) return bad_lane(b, l, "does not end in the rANS decoder's final state");
      // The bit stream must end exactly where the rANS bytes begin, padded with zero bits.
      const uint64_t used = 8 * static_cast<uint64_t>(r.p - bits) - r.avail;
      if (bits + (used + 7) / 8 != q) return bad_lane(b, l, "has bytes its codes do not use");
      if (used % 8 != 0 && (static_cast<uint8_t>(bits[used / 8]) >> (used % 8)) != 0)
        return bad_lane(b, l, "has non-zero padding bits");
      region = end;
    }
    if (region != block_end) return bad_block(b, "has bytes after its last lane");
    data = block_end;
  }
  return {};
}

error bad_header(const std::string& what) { return error(errc::delta_bad_manifest, "compact stream: " + what); }

// compact/2's value table at stream[8...]: its symbols and frequencies into `info`, its size to `bytes`.
status read_table(byte_span stream, stream_info& info, uint32_t& bytes) {
  const std::byte* p = stream.data() + kHeaderBytes;
  const size_t avail = stream.size() - kHeaderBytes;
  if (avail < 1) return bad_header("its value table is missing");
  info.nsym = static_cast<uint8_t>(p[0]);
  const uint32_t most = cd::max_symbol_for(8 * info.elem_bytes) + 1;
  if (info.count == 0 ? info.nsym != 0 : (info.nsym == 0 || info.nsym > most))
    return bad_header("its value table has " + std::to_string(info.nsym) + " symbols (" +
                      (info.count == 0 ? std::string("0 for no changes") : "1.." + std::to_string(most)) + " allowed)");
  size_t at = 1;
  uint32_t sum = 0;
  for (uint32_t s = 0; s < info.nsym; ++s) {
    if (at >= avail) return bad_header("its value table runs past its bytes");
    uint32_t f = static_cast<uint8_t>(p[at++]);
    if (f & 0x80) {
      if (at >= avail) return bad_header("its value table runs past its bytes");
      const uint32_t hi = static_cast<uint8_t>(p[at++]);
      if (hi == 0 || hi > (cd::kProbScale >> 7)) return bad_header("its value table has a malformed frequency");
      f = (f & 0x7F) | hi << 7;
    }
    info.freqs[s] = f;
    sum += f;
  }
  if (info.nsym > 0 && (sum != cd::kProbScale || info.freqs[info.nsym - 1] == 0))
    return bad_header("its value table's frequencies sum to " + std::to_string(sum) + ", not 2048, or end in 0");
  bytes = static_cast<uint32_t>(at);
  return {};
}

// dest[pos[i]] += diff[i], each variant its own loop (a branch per element on what to keep measured 12% slower
// when dest is in cache): saving the old value first (kSave), moving the digest in the same visit (kSum).
template <typename T, bool kSave, bool kSum>
void add_diffs(std::span<const uint32_t> positions, const std::byte* diffs, std::byte* dest, std::byte* old,
               sum_delta& sum) {
  const size_t n = positions.size();
  for (size_t i = 0; i < n; ++i) {
    std::byte* at = dest + size_t{positions[i]} * sizeof(T);
    const T o = load_le<T>(at);
    const T v = static_cast<T>(o + load_le<T>(diffs + i * sizeof(T)));
    if constexpr (kSave) store_le<T>(old + i * sizeof(T), o);
    store_le<T>(at, v);
    if constexpr (kSum) sum.change(positions[i], o, v);
  }
}

template <typename T>
void apply_t(std::span<const uint32_t> positions, const std::byte* diffs, std::byte* dest, std::byte* old,
             sum_delta* sum) {
  sum_delta unused;
  if (old == nullptr) {
    if (sum != nullptr)
      add_diffs<T, false, true>(positions, diffs, dest, old, *sum);
    else
      add_diffs<T, false, false>(positions, diffs, dest, old, unused);
    return;
  }
  add_diffs<T, true, false>(positions, diffs, dest, old, unused);
  if (sum == nullptr) return;
  // With the old values saved, the digest is a second, sequential pass over them: folded into the scatter its
  // arithmetic makes each iteration long enough that few of the scatter's cache misses overlap (4x slower at
  // 1% density into a tensor past the cache).
  for (size_t i = 0; i < positions.size(); ++i) {
    const T o = load_le<T>(old + i * sizeof(T));
    sum->change(positions[i], o, static_cast<T>(o + load_le<T>(diffs + i * sizeof(T))));
  }
}

}  // namespace

result<stream_info> read_header(byte_span stream, uint64_t count, uint32_t elem_bytes) {
  if (stream.size() < kHeaderBytes)
    return bad_header(std::to_string(stream.size()) + " bytes, shorter than its 8-byte header");
  const std::byte* h = stream.data();
  stream_info info;
  const uint8_t magic = static_cast<uint8_t>(h[0]);
  if (magic == kMagic && static_cast<uint8_t>(h[1]) == kLog2BlockElems && static_cast<uint8_t>(h[3]) == kLog2LaneElems)
    info.version = 2;
  else if (magic == kMagicV1 && static_cast<uint8_t>(h[1]) == kLog2BlockElemsV1 && static_cast<uint8_t>(h[3]) == 0)
    info.version = 1;
  else
    return bad_header("bad magic, block or lane size");
  info.elem_bytes = static_cast<uint8_t>(h[2]);
  // The header is untrusted: only the four element sizes the codec has codes for (decode's width switch
  // relies on it).
  if (info.elem_bytes != 1 && info.elem_bytes != 2 && info.elem_bytes != 4 && info.elem_bytes != 8)
    return bad_header("element size " + std::to_string(info.elem_bytes) + " is not 1, 2, 4 or 8");
  if (info.elem_bytes != elem_bytes)
    return bad_header("element size " + std::to_string(info.elem_bytes) + ", the param's dtype has " +
                      std::to_string(elem_bytes));
  info.count = load_le<uint32_t>(h + 4);
  if (count != kAnyCount && info.count != count)
    return error(errc::delta_value_count_mismatch, "compact stream: holds " + std::to_string(info.count) +
                                                       " changes, the manifest says " + std::to_string(count));
  uint32_t table_bytes = 0;
  if (info.version == 2) DS_TRY_STATUS(read_table(stream, info, table_bytes));
  info.dir_offset = kHeaderBytes + table_bytes;
  const uint64_t block_elems = info.version == 2 ? kBlockElems : kBlockElemsV1;
  info.blocks = static_cast<uint32_t>((info.count + block_elems - 1) / block_elems);
  const uint64_t dir_end = info.dir_offset + uint64_t{kDirEntryBytes} * info.blocks;
  if (dir_end > stream.size()) return bad_header("its block directory runs past its bytes");
  uint64_t total = dir_end;
  for (uint32_t b = 0; b < info.blocks; ++b) {
    const uint32_t bytes = load_le<uint32_t>(h + info.dir_offset + size_t{kDirEntryBytes} * b + 4);
    uint32_t least = 2;
    if (info.version == 2) {
      const uint64_t m = std::min<uint64_t>(block_elems, info.count - uint64_t{b} * block_elems);
      least = 1 + static_cast<uint32_t>((m + kLaneElems - 1) / kLaneElems) * (2 + cd::kStateBytes);
    }
    if (bytes < least) return bad_block(b, "is shorter than its header and lanes");
    total += bytes;
  }
  if (total != stream.size())
    return bad_header("blocks cover " + std::to_string(total) + " bytes of a " + std::to_string(stream.size()) +
                      "-byte range");
  return info;
}

namespace {

// The checks both decode entry points make before any code is read.
status check_numel(const stream_info& info, uint64_t& numel) {
  numel = std::min<uint64_t>(numel, uint64_t{1} << 32);  // positions are uint32
  if (info.count > numel)
    return error(errc::delta_position_out_of_range, "compact stream: " + std::to_string(info.count) +
                                                        " changes for a tensor of " + std::to_string(numel) +
                                                        " elements");
  return {};
}

template <typename T>
status decode_range_t(byte_span stream, const stream_info& info, uint64_t numel, uint32_t first, uint32_t end,
                      uint32_t* positions, std::byte* diffs) {
  uint64_t next = 0;
  if (first > 0) {
    // Block first - 1's last index is where block first must start: decoded into scratch, its own base taken
    // as given (the slice that holds it checks that).
    std::vector<uint32_t> p(kBlockElems);
    std::vector<T> d(kBlockElems);
    next = load_le<uint32_t>(stream.data() + info.dir_offset + size_t{kDirEntryBytes} * (first - 1));
    DS_TRY_STATUS(decode_t<T>(stream, info, numel, first - 1, first, next, p.data(), d.data()));
  }
  return decode_t<T>(stream, info, numel, first, end, next, positions, reinterpret_cast<T*>(diffs));
}

status decode_range(byte_span stream, const stream_info& info, uint64_t numel, uint32_t first, uint32_t end,
                    std::vector<uint32_t>& positions, byte_buffer& diffs) {
  const uint64_t from = uint64_t{first} * kBlockElems, to = std::min<uint64_t>(info.count, uint64_t{end} * kBlockElems);
  positions.resize(to - from);
  diffs.resize((to - from) * info.elem_bytes);
  status st;
  switch (info.elem_bytes) {
    case 1: st = decode_range_t<uint8_t>(stream, info, numel, first, end, positions.data(), diffs.data()); break;
    case 2: st = decode_range_t<uint16_t>(stream, info, numel, first, end, positions.data(), diffs.data()); break;
    case 4: st = decode_range_t<uint32_t>(stream, info, numel, first, end, positions.data(), diffs.data()); break;
    default: st = decode_range_t<uint64_t>(stream, info, numel, first, end, positions.data(), diffs.data()); break;
  }
  return st;
}

}  // namespace

status decode(byte_span stream, uint64_t count, uint64_t numel, uint32_t elem_bytes, std::vector<uint32_t>& positions,
              byte_buffer& diffs) {
  positions.clear();
  diffs.clear();
  DS_ASSIGN_OR_RETURN(stream_info info, read_header(stream, count, elem_bytes));
  DS_TRY_STATUS(check_numel(info, numel));
  status st;
  if (info.version == 1) {
    positions.resize(info.count);
    diffs.resize(info.count * elem_bytes);
    st = decode_v1(stream, info, numel, positions.data(), diffs.data());
  } else {
    st = decode_range(stream, info, numel, 0, info.blocks, positions, diffs);
  }
  if (!st.ok()) {
    positions.clear();
    diffs.clear();
  }
  return st;
}

status decode_blocks(byte_span stream, const stream_info& info, uint64_t numel, uint32_t first, uint32_t end,
                     std::vector<uint32_t>& positions, byte_buffer& diffs) {
  positions.clear();
  diffs.clear();
  DS_CHECK(info.version == 2 && first < end && end <= info.blocks, "compact::decode_blocks: not a run of blocks");
  DS_TRY_STATUS(check_numel(info, numel));
  auto st = decode_range(stream, info, numel, first, end, positions, diffs);
  if (!st.ok()) {
    positions.clear();
    diffs.clear();
  }
  return st;
}

void apply_diffs(std::span<const uint32_t> positions, byte_span diffs, uint32_t elem_bytes, mutable_byte_span dest,
                 byte_buffer* old_values, sum_delta* sum) {
  DS_CHECK(diffs.size() == positions.size() * elem_bytes, "compact::apply_diffs: sizes disagree");
  std::byte* old = nullptr;
  if (old_values != nullptr) {
    old_values->resize(diffs.size());
    old = old_values->data();
  }
  if (!positions.empty())
    DS_CHECK(uint64_t{positions.back()} * elem_bytes + elem_bytes <= dest.size(), "compact::apply_diffs: past dest");
  switch (elem_bytes) {
    case 1: return apply_t<uint8_t>(positions, diffs.data(), dest.data(), old, sum);
    case 2: return apply_t<uint16_t>(positions, diffs.data(), dest.data(), old, sum);
    case 4: return apply_t<uint32_t>(positions, diffs.data(), dest.data(), old, sum);
    default: return apply_t<uint64_t>(positions, diffs.data(), dest.data(), old, sum);
  }
}

}  // namespace deltasync::compact
