// The compact encoding: the compact/2 encoder and validating decoder (compact/1 streams are decoded by
// compact_v1.cc), in-place apply and the entropy figures of reports. The format is defined in compact.h and the
// value coder's arithmetic in compact_coder.h; this file says why where the code is not obvious.
#include "codec/compact.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <unordered_map>

#include "base/check.h"
#include "codec/compact_bits.h"

namespace deltasync::compact {
namespace {

using namespace detail;
namespace cd = coder;

constexpr uint32_t kMaxTableBytes = 1 + 2 * cd::kMaxSymbols;

// The value table with its cumulative starts (cum[s] = sum of freq below s).
struct table {
  uint32_t nsym = 0;
  uint32_t freq[cd::kMaxSymbols] = {};
  uint32_t cum[cd::kMaxSymbols + 1] = {};
  void finish() noexcept {
    cum[0] = 0;
    for (uint32_t s = 0; s < nsym; ++s) cum[s + 1] = cum[s] + freq[s];
  }
};

size_t put_table(const table& t, std::byte* p) noexcept {
  size_t at = 0;
  p[at++] = static_cast<std::byte>(t.nsym);
  for (uint32_t s = 0; s < t.nsym; ++s) {
    const uint32_t f = t.freq[s];
    if (f < 0x80) {
      p[at++] = static_cast<std::byte>(f);
    } else {
      p[at++] = static_cast<std::byte>((f & 0x7F) | 0x80);
      p[at++] = static_cast<std::byte>(f >> 7);
    }
  }
  return at;
}

inline uint32_t load24(const std::byte* p) noexcept {
  return uint32_t{static_cast<uint8_t>(p[0])} | uint32_t{static_cast<uint8_t>(p[1])} << 8 |
         uint32_t{static_cast<uint8_t>(p[2])} << 16;
}

// Per-thread scratch: a block's gaps (32 KiB, too much for every thread's stack) and the param's symbols.
constexpr uint32_t kGroup = 4;                          // lanes rANS-coded at once
constexpr uint32_t kLaneRansCap = 2 * kLaneElems + 2;    // at most 11 bits per symbol, and the 2-byte store's slack

struct encode_scratch {
  uint32_t gaps[kBlockElems];
  std::byte rans[kGroup][kLaneRansCap];
  std::vector<uint8_t> syms;
};

// One rANS step, branch-free: the state's low two bytes are stored and the cursor moves by the bytes the
// renormalisation emits (0, 1 or 2).
inline uint32_t rans_step(uint32_t x, const cd::enc_symbol& s, std::byte*& out) noexcept {
  const uint32_t k = cd::renorm_bytes(x, s);
  store_le<uint16_t>(out, static_cast<uint16_t>(x));
  out += k;
  return cd::fold(x >> (8 * k), s);
}

// One lane's symbols [0, count) coded backwards into `buf`; its final state and the end of its bytes.
inline void rans_lane(const uint8_t* syms, uint32_t count, const cd::enc_symbol* es, std::byte* buf, uint32_t& state,
                      std::byte*& end) noexcept {
  uint32_t x = cd::kStateLow;
  for (uint32_t i = count; i-- > 0;) x = rans_step(x, es[syms[i]], buf);
  state = x;
  end = buf;
}

// G full lanes (kLaneElems symbols each, back to back from `syms`) coded at once, their chains interleaved.
template <uint32_t G>
inline void rans_lanes(const uint8_t* syms, const cd::enc_symbol* es, std::byte (*bufs)[kLaneRansCap],
                       uint32_t* state, std::byte** end) noexcept {
  uint32_t x[G];
  std::byte* out[G];
  for (uint32_t j = 0; j < G; ++j) x[j] = cd::kStateLow, out[j] = bufs[j];
  for (uint32_t i = kLaneElems; i-- > 0;)
    for (uint32_t j = 0; j < G; ++j) x[j] = rans_step(x[j], es[syms[j * kLaneElems + i]], out[j]);
  for (uint32_t j = 0; j < G; ++j) state[j] = x[j], end[j] = out[j];
}

template <typename T>
inline uint64_t code_at(const std::byte* ov, const std::byte* nv, size_t i) noexcept {
  return zigzag_minus_one<T>(static_cast<T>(load_le<T>(nv + i * sizeof(T)) - load_le<T>(ov + i * sizeof(T))));
}

template <typename T>
void encode_t(std::span<const uint32_t> positions, byte_span old_values, byte_span new_values, byte_buffer& out,
              encode_stats* stats) {
  const size_t n = positions.size();
  const uint32_t blocks = static_cast<uint32_t>((n + kBlockElems - 1) / kBlockElems);
  const std::byte* ov = old_values.data();
  const std::byte* nv = new_values.data();
  thread_local encode_scratch sc;
  if (sc.syms.size() < n) sc.syms.resize(n);
  uint8_t* syms = sc.syms.data();

  // The value table comes first in the stream, so the histogram takes a pass of its own; it keeps each
  // element's symbol, and the blocks below go back to the values only for the rare symbols with raw bits.
  table t;
  cd::enc_symbol es[cd::kMaxSymbols] = {};
  if (n > 0) {
    // Four sets of counters, summed after: the few common symbols would otherwise serialise on one counter.
    uint32_t sub[4][cd::kMaxSymbols] = {};
    const auto count = [&](size_t i, uint32_t* c) {
      DS_CHECK(load_le<T>(ov + i * sizeof(T)) != load_le<T>(nv + i * sizeof(T)),
               "compact::encode: an unchanged element among the changes");
      const uint32_t s = cd::symbol_of(code_at<T>(ov, nv, i));
      syms[i] = static_cast<uint8_t>(s);
      ++c[s];
    };
    size_t i = 0;
    for (; i + 4 <= n; i += 4) count(i, sub[0]), count(i + 1, sub[1]), count(i + 2, sub[2]), count(i + 3, sub[3]);
    for (; i < n; ++i) count(i, sub[0]);
    uint32_t counts[cd::kMaxSymbols];
    for (uint32_t s = 0; s < cd::kMaxSymbols; ++s) counts[s] = sub[0][s] + sub[1][s] + sub[2][s] + sub[3][s];
    t.nsym = cd::kMaxSymbols;
    while (counts[t.nsym - 1] == 0) --t.nsym;
    cd::normalize(counts, t.nsym, n, t.freq);
  }
  t.finish();
  for (uint32_t s = 0; s < t.nsym; ++s)
    if (t.freq[s] > 0) es[s] = cd::enc_symbol_of(t.freq[s], t.cum[s]);

  const size_t head = out.size();
  out.resize(head + kHeaderBytes + kMaxTableBytes);
  std::byte* h = out.data() + head;
  h[0] = std::byte{kMagic};
  h[1] = std::byte{static_cast<uint8_t>(kLog2BlockElems)};
  h[2] = std::byte{static_cast<uint8_t>(sizeof(T))};
  h[3] = std::byte{static_cast<uint8_t>(kLog2LaneElems)};
  store_le<uint32_t>(h + 4, static_cast<uint32_t>(n));
  const size_t table_bytes = put_table(t, h + kHeaderBytes);
  const size_t dir = head + kHeaderBytes + table_bytes;
  out.resize(dir + size_t{kDirEntryBytes} * blocks);
  uint64_t position_bits = 0, value_bits = 0;

  uint64_t next = 0;  // previous index + 1
  for (uint32_t b = 0; b < blocks; ++b) {
    const size_t first = size_t{b} * kBlockElems;
    const uint32_t m = static_cast<uint32_t>(std::min<size_t>(kBlockElems, n - first));
    const uint32_t lanes = (m + kLaneElems - 1) / kLaneElems;
    const uint8_t* bsyms = syms + first;
    const uint64_t base = next;
    uint64_t any_gap = 0, extra_bits = 0;
    width_counts widths = {};  // the gaps' bit widths, for best_k, counted on the way
    const auto gap = [&](uint32_t i, uint32_t* w) {
      const uint32_t idx = positions[first + i];
      DS_CHECK(idx >= next, "compact::encode: positions do not ascend");
      const uint32_t g = static_cast<uint32_t>(idx - next);
      sc.gaps[i] = g;
      any_gap |= g;
      ++w[std::bit_width(g)];  // <= 32
      next = uint64_t{idx} + 1;
      extra_bits += cd::extra_bits_of(bsyms[i]);
    };
    uint32_t e = 0;
    for (; e + 4 <= m; e += 4) gap(e, widths[0]), gap(e + 1, widths[1]), gap(e + 2, widths[2]), gap(e + 3, widths[3]);
    for (; e < m; ++e) gap(e, widths[0]);
    const k_choice kp = any_gap == 0 ? k_choice{kModeSpecial, 0} : best_k(sc.gaps, m, 32, kEscapeQ, widths);
    // At most: kp, the lane table, per lane its state and padding byte, per element a 56-bit gap code, 63 extra
    // bits and 2 rANS bytes (a symbol of frequency 1 adds 11 bits to the state).
    const size_t at = out.size();
    out.resize(at + 1 + 6 * size_t{lanes} + (kp.bits + extra_bits) / 8 + 2 * size_t{m} + 8);
    std::byte* p = out.data() + at;
    p[0] = std::byte{static_cast<uint8_t>(kp.k)};
    std::byte* cur = p + 1 + 2 * size_t{lanes};
    // rANS runs backwards over a lane so the decoder reads forwards. One lane's steps form a serial chain, so
    // kGroup lanes are coded at once into scratch, interleaved, and then laid out one by one: state, bit stream,
    // rANS bytes in the order they were emitted (the decoder takes them from the region's end).
    for (uint32_t g = 0; g < lanes; g += kGroup) {
      const uint32_t gl = std::min(kGroup, lanes - g);
      uint32_t state[kGroup];
      std::byte* rans_end[kGroup];
      if (gl == kGroup && (g + kGroup) * kLaneElems <= m) {
        rans_lanes<kGroup>(bsyms + g * kLaneElems, es, sc.rans, state, rans_end);
      } else {
        for (uint32_t j = 0; j < gl; ++j) {
          const uint32_t i0 = (g + j) * kLaneElems, i1 = std::min(m, i0 + kLaneElems);
          rans_lane(bsyms + i0, i1 - i0, es, sc.rans[j], state[j], rans_end[j]);
        }
      }
      for (uint32_t j = 0; j < gl; ++j) {
        const uint32_t l = g + j;
        const uint32_t i0 = l * kLaneElems, i1 = std::min(m, i0 + kLaneElems);
        std::byte* region = cur;
        bit_writer bw{region + cd::kStateBytes};
        uint64_t lane_extra = 0;
        for (uint32_t i = i0; i < i1; ++i) {
          if (kp.k != kModeSpecial) put_rice(bw, sc.gaps[i], kp.k, 32, kEscapeQ);
          const uint32_t eb = cd::extra_bits_of(bsyms[i]);
          if (eb > 0) {
            bw.put_wide(code_at<T>(ov, nv, first + i) & ((uint64_t{1} << eb) - 1), eb);
            lane_extra += eb;
          }
        }
        bw.flush();
        const size_t rans_bytes = static_cast<size_t>(rans_end[j] - sc.rans[j]);
        std::memcpy(bw.p, sc.rans[j], rans_bytes);
        cur = bw.p + rans_bytes;
        const uint32_t x = state[j];
        region[0] = static_cast<std::byte>(x & 0xFF);
        region[1] = static_cast<std::byte>((x >> 8) & 0xFF);
        region[2] = static_cast<std::byte>(x >> 16);
        const size_t lane_bytes = static_cast<size_t>(cur - region);
        DS_CHECK(lane_bytes <= UINT16_MAX, "compact::encode: lane too large");
        store_le<uint16_t>(p + 1 + 2 * size_t{l}, static_cast<uint16_t>(lane_bytes));
        value_bits += lane_extra + 8 * (cd::kStateBytes + rans_bytes);
      }
    }
    const size_t block_bytes = static_cast<size_t>(cur - p);
    DS_CHECK(block_bytes <= UINT32_MAX, "compact::encode: block too large");
    out.resize(at + block_bytes);
    store_le<uint32_t>(out.data() + dir + size_t{kDirEntryBytes} * b, static_cast<uint32_t>(base));
    store_le<uint32_t>(out.data() + dir + size_t{kDirEntryBytes} * b + 4, static_cast<uint32_t>(block_bytes));
    position_bits += kp.bits;
  }
  if (stats != nullptr) {
    stats->position_bits += position_bits;
    stats->value_bits += value_bits;
    stats->overhead_bits += 8 * (out.size() - head) - position_bits - value_bits;
  }
}

// A lane whose codes or bytes do not add up.
error bad_lane(uint32_t b, uint32_t l, const char* what) {
  return error(errc::delta_bad_manifest,
               "compact stream: block " + std::to_string(b) + " lane " + std::to_string(l) + " " + what);
}

template <typename T>
status decode_t(byte_span stream, const stream_info& info, uint64_t numel, uint32_t* positions, T* diffs) {
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
  uint64_t next = 0;
  for (uint32_t b = 0; b < info.blocks; ++b) {
    const uint64_t base = load_le<uint32_t>(dir + size_t{kDirEntryBytes} * b);
    const uint32_t bytes = load_le<uint32_t>(dir + size_t{kDirEntryBytes} * b + 4);
    if (base != next) return bad_block(b, "does not start right after the previous block's last position");
    const size_t first = size_t{b} * kBlockElems;
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
        positions[first + i] = static_cast<uint32_t>(idx);
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
        diffs[first + i] = from_code<T>(u);
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

uint32_t choose_k(std::span<const uint64_t> symbols, uint32_t escape_bits, uint32_t escape_q) noexcept {
  return best_k(symbols.data(), symbols.size(), escape_bits, escape_q).k;
}

void encode(std::span<const uint32_t> positions, byte_span old_values, byte_span new_values, uint32_t elem_bytes,
            byte_buffer& out, encode_stats* stats) {
  DS_CHECK(elem_bytes == 1 || elem_bytes == 2 || elem_bytes == 4 || elem_bytes == 8,
           "compact::encode: element size must be 1, 2, 4 or 8");
  DS_CHECK(old_values.size() == positions.size() * elem_bytes && new_values.size() == old_values.size(),
           "compact::encode: values and positions disagree");
  DS_CHECK(positions.size() <= UINT32_MAX, "compact::encode: more than 2^32 - 1 changes");
  switch (elem_bytes) {
    case 1: return encode_t<uint8_t>(positions, old_values, new_values, out, stats);
    case 2: return encode_t<uint16_t>(positions, old_values, new_values, out, stats);
    case 4: return encode_t<uint32_t>(positions, old_values, new_values, out, stats);
    default: return encode_t<uint64_t>(positions, old_values, new_values, out, stats);
  }
}

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
  if (info.count != count)
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

status decode(byte_span stream, uint64_t count, uint64_t numel, uint32_t elem_bytes, std::vector<uint32_t>& positions,
              byte_buffer& diffs) {
  positions.clear();
  diffs.clear();
  DS_ASSIGN_OR_RETURN(stream_info info, read_header(stream, count, elem_bytes));
  numel = std::min<uint64_t>(numel, uint64_t{1} << 32);  // positions are uint32
  if (info.count > numel)
    return error(errc::delta_position_out_of_range, "compact stream: " + std::to_string(info.count) +
                                                        " changes for a tensor of " + std::to_string(numel) +
                                                        " elements");
  positions.resize(info.count);
  diffs.resize(info.count * elem_bytes);
  status st;
  if (info.version == 1) {
    st = decode_v1(stream, info, numel, positions.data(), diffs.data());
  } else {
    switch (elem_bytes) {
      case 1: st = decode_t<uint8_t>(stream, info, numel, positions.data(), reinterpret_cast<uint8_t*>(diffs.data())); break;
      case 2: st = decode_t<uint16_t>(stream, info, numel, positions.data(), reinterpret_cast<uint16_t*>(diffs.data())); break;
      case 4: st = decode_t<uint32_t>(stream, info, numel, positions.data(), reinterpret_cast<uint32_t*>(diffs.data())); break;
      default: st = decode_t<uint64_t>(stream, info, numel, positions.data(), reinterpret_cast<uint64_t*>(diffs.data())); break;
    }
  }
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

double position_entropy_bits(uint64_t numel, uint64_t n) noexcept {
  if (n == 0 || n >= numel) return 0.0;
  // log2 C(N, n) through lgamma: exact to well under a bit for the sizes here.
  const double N = static_cast<double>(numel), k = static_cast<double>(n);
  return (std::lgamma(N + 1) - std::lgamma(k + 1) - std::lgamma(N - k + 1)) / std::log(2.0);
}

double value_entropy_bits(byte_span diffs, uint32_t elem_bytes) {
  const size_t n = elem_bytes == 0 ? 0 : diffs.size() / elem_bytes;
  if (n == 0) return 0.0;
  std::unordered_map<uint64_t, uint64_t> counts;
  for (size_t i = 0; i < n; ++i) {
    uint64_t v = 0;
    std::memcpy(&v, diffs.data() + i * elem_bytes, elem_bytes);
    ++counts[v];
  }
  double bits = 0.0;
  const double total = static_cast<double>(n);
  for (const auto& [v, c] : counts) bits -= static_cast<double>(c) * std::log2(static_cast<double>(c) / total);
  return bits;
}

}  // namespace deltasync::compact
