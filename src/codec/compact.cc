// The compact encoding: the compact/2 encoder (the validating decoder and in-place apply are
// compact_decode.cc, compact/1 streams compact_v1.cc) and the entropy figures of reports. The format is defined in compact.h and the
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
