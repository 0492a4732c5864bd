// The compact encoding: block encoder, validating decoder, in-place apply and the entropy figures of reports.
// The format is defined in compact.h; this file says why where the code is not obvious.
#include "codec/compact.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <string>
#include <unordered_map>

#include "base/check.h"

namespace deltasync::compact {
namespace {

template <typename T>
constexpr uint32_t bits_of = 8 * sizeof(T);

// LSB-first bit writer over a buffer sized exactly for the block (the encoder knows each block's bit count
// before writing it, so nothing is written past the block and nothing is zero-filled twice).
struct bit_writer {
  std::byte* p;
  uint64_t acc = 0;
  uint32_t n = 0;
  // v < 2^bits, bits <= 32.
  inline void put(uint64_t v, uint32_t bits) noexcept {
    acc |= v << n;
    n += bits;
    if (n >= 32) {
      store_le<uint32_t>(p, static_cast<uint32_t>(acc));
      p += 4;
      acc >>= 32;
      n -= 32;
    }
  }
  inline void put_wide(uint64_t v, uint32_t bits) noexcept {  // bits <= 64
    if (bits <= 32) return put(v, bits);
    put(v & 0xFFFFFFFFu, 32);
    put(v >> 32, bits - 32);
  }
  void flush() noexcept {
    while (n > 0) {
      *p++ = static_cast<std::byte>(acc & 0xFF);
      acc >>= 8;
      n = n >= 8 ? n - 8 : 0;
    }
  }
};

inline void put_rice(bit_writer& w, uint64_t x, uint32_t k, uint32_t escape_bits, uint32_t escape_q) noexcept {
  const uint64_t q = x >> k;
  if (q < escape_q) {
    w.put(uint64_t{1} << q, static_cast<uint32_t>(q) + 1);
    if (k > 0) w.put(x & ((uint64_t{1} << k) - 1), k);
  } else {
    w.put(0, escape_q);
    w.put_wide(x, escape_bits);
  }
}

// LSB-first bit reader over one block. Bits of `buf` above `avail` are either the block's upcoming bits (the
// 8-byte refill loads ahead) or zero past the block's end, so shifting them down is always consistent.
struct bit_reader {
  const std::byte* p;
  const std::byte* end;
  uint64_t buf = 0;
  uint32_t avail = 0;
  inline void refill() noexcept {
    if (end - p >= 8) {
      buf |= load_le<uint64_t>(p) << avail;
      const uint32_t take = (63 - avail) >> 3;
      p += take;
      avail += take << 3;
    } else {
      while (avail <= 56 && p < end) {
        buf |= uint64_t{static_cast<uint8_t>(*p++)} << avail;
        avail += 8;
      }
    }
  }
  inline bool take(uint32_t bits, uint64_t& out) noexcept {  // bits <= 32, after a refill
    if (bits > avail) return false;
    out = bits == 0 ? 0 : (buf & ((uint64_t{1} << bits) - 1));
    buf = bits == 64 ? 0 : buf >> bits;
    avail -= bits;
    return true;
  }
  inline bool take_wide(uint32_t bits, uint64_t& out) noexcept {
    if (bits <= 32) {
      refill();
      return take(bits, out);
    }
    uint64_t lo = 0, hi = 0;
    refill();
    if (!take(32, lo)) return false;
    refill();
    if (!take(bits - 32, hi)) return false;
    out = lo | (hi << 32);
    return true;
  }
  inline bool rice(uint32_t k, uint32_t escape_bits, uint32_t escape_q, uint64_t& out) noexcept {
    refill();
    const uint32_t z = buf == 0 ? 64u : static_cast<uint32_t>(std::countr_zero(buf));
    if (z < escape_q) {
      if (z + 1 + k > avail) return false;
      buf >>= z + 1;
      avail -= z + 1;
      uint64_t r = 0;
      take(k, r);
      out = (uint64_t{z} << k) | r;
      return true;
    }
    if (avail < escape_q) return false;
    buf >>= escape_q;
    avail -= escape_q;
    return take_wide(escape_bits, out);
  }
  // The block ended exactly: every byte used and only zero padding (< 8 bits) left.
  bool at_end() const noexcept { return p == end && avail < 8 && buf == 0; }
};

struct k_choice {
  uint32_t k;
  uint64_t bits;
};

k_choice best_k(const uint64_t* x, size_t n, uint32_t escape_bits, uint32_t escape_q) noexcept {
  // A histogram of bit widths (widths past 33 counted as 33) gives an estimate of every k's cost, each value
  // taken as 3/4 of its width's top (integers only, so every encoder computes the same); the three k around the
  // estimate's best are then costed exactly. A mean would do for geometric data, but a few escaped outliers (a
  // weight crossing zero) pull the mean far above the bulk's best k.
  uint32_t hist[34] = {};
  for (size_t i = 0; i < n; ++i) ++hist[std::min<uint32_t>(static_cast<uint32_t>(std::bit_width(x[i])), 33)];
  uint32_t k_est = 0;
  uint64_t est_best = UINT64_MAX;
  for (uint32_t k = 0; k <= kMaxK; ++k) {
    uint64_t bits = 0;
    for (uint32_t b = 0; b < 34; ++b) {
      if (hist[b] == 0) continue;
      const uint64_t rep = b == 0 ? 0 : b == 1 ? 1 : uint64_t{3} << (b - 2);
      bits += hist[b] * rice_bits(rep, k, escape_bits, escape_q);
    }
    if (bits < est_best) est_best = bits, k_est = k;
  }
  const uint32_t lo = k_est == 0 ? 0 : k_est - 1;
  const uint32_t hi = std::min(k_est + 1, kMaxK);
  // The (up to) three candidates costed in one pass.
  const uint32_t k1 = std::min(lo + 1, hi), k2 = hi;
  uint64_t b0 = 0, b1 = 0, b2 = 0;
  for (size_t i = 0; i < n; ++i) {
    b0 += rice_bits(x[i], lo, escape_bits, escape_q);
    b1 += rice_bits(x[i], k1, escape_bits, escape_q);
    b2 += rice_bits(x[i], k2, escape_bits, escape_q);
  }
  k_choice best{lo, b0};
  if (b1 < best.bits) best = {k1, b1};
  if (b2 < best.bits) best = {k2, b2};
  return best;
}

template <typename T>
inline uint64_t zigzag_minus_one(T d) noexcept {
  using S = std::make_signed_t<T>;
  const S s = static_cast<S>(d);
  const T z = static_cast<T>(static_cast<T>(static_cast<T>(s) << 1) ^ static_cast<T>(s >> (bits_of<T> - 1)));
  return uint64_t{z} - 1;  // z >= 1: a changed element differs
}

template <typename T>
inline T from_code(uint64_t u) noexcept {
  const T z = static_cast<T>(u + 1);
  return static_cast<T>((z >> 1) ^ static_cast<T>(-static_cast<T>(z & 1)));
}

template <typename T>
void encode_t(std::span<const uint32_t> positions, byte_span old_values, byte_span new_values, byte_buffer& out,
              encode_stats* stats) {
  constexpr uint32_t w = bits_of<T>;
  const size_t n = positions.size();
  const uint32_t blocks = static_cast<uint32_t>((n + kBlockElems - 1) / kBlockElems);
  const size_t head = out.size();
  out.resize(head + kHeaderBytes + size_t{kDirEntryBytes} * blocks);
  std::byte* h = out.data() + head;
  h[0] = std::byte{kMagic};
  h[1] = std::byte{static_cast<uint8_t>(kLog2BlockElems)};
  h[2] = std::byte{static_cast<uint8_t>(sizeof(T))};
  h[3] = std::byte{0};
  store_le<uint32_t>(h + 4, static_cast<uint32_t>(n));
  if (stats != nullptr) stats->overhead_bits += 8 * (kHeaderBytes + uint64_t{kDirEntryBytes} * blocks);

  uint64_t gaps[kBlockElems], codes[kBlockElems];
  T diffs[kBlockElems];
  uint64_t next = 0;  // previous index + 1
  for (uint32_t b = 0; b < blocks; ++b) {
    const size_t first = size_t{b} * kBlockElems;
    const size_t m = std::min<size_t>(kBlockElems, n - first);
    const uint64_t base = next;
    bool dense = true;
    for (size_t i = 0; i < m; ++i) {
      const uint32_t idx = positions[first + i];
      DS_CHECK(idx >= next, "compact::encode: positions do not ascend");
      gaps[i] = idx - next;
      dense &= gaps[i] == 0;
      next = uint64_t{idx} + 1;
      const T o = load_le<T>(old_values.data() + (first + i) * sizeof(T));
      const T v = load_le<T>(new_values.data() + (first + i) * sizeof(T));
      DS_CHECK(o != v, "compact::encode: an unchanged element among the changes");
      diffs[i] = static_cast<T>(v - o);
      codes[i] = zigzag_minus_one<T>(diffs[i]);
    }
    const k_choice kp = dense ? k_choice{kModeSpecial, 0} : best_k(gaps, m, 32, kEscapeQ);
    k_choice kv = best_k(codes, m, w, kValueEscapeQ);
    if (uint64_t{w} * m <= kv.bits) kv = {kModeSpecial, uint64_t{w} * m};
    const uint64_t block_bytes = 2 + (kp.bits + kv.bits + 7) / 8;
    DS_CHECK(block_bytes <= UINT32_MAX, "compact::encode: block too large");
    store_le<uint32_t>(out.data() + head + kHeaderBytes + size_t{kDirEntryBytes} * b, static_cast<uint32_t>(base));
    store_le<uint32_t>(out.data() + head + kHeaderBytes + size_t{kDirEntryBytes} * b + 4,
                       static_cast<uint32_t>(block_bytes));
    const size_t at = out.size();
    out.resize(at + block_bytes);
    std::byte* p = out.data() + at;
    p[0] = std::byte{static_cast<uint8_t>(kp.k)};
    p[1] = std::byte{static_cast<uint8_t>(kv.k)};
    bit_writer bw{p + 2};
    for (size_t i = 0; i < m; ++i) {
      if (kp.k != kModeSpecial) put_rice(bw, gaps[i], kp.k, 32, kEscapeQ);
      if (kv.k != kModeSpecial)
        put_rice(bw, codes[i], kv.k, w, kValueEscapeQ);
      else
        bw.put_wide(uint64_t{diffs[i]}, w);
    }
    bw.flush();
    DS_CHECK(bw.p == p + block_bytes, "compact::encode: block size");
    if (stats != nullptr) {
      stats->position_bits += kp.bits;
      stats->value_bits += kv.bits;
      stats->overhead_bits += 8 * block_bytes - kp.bits - kv.bits;
    }
  }
}

error bad_block(uint32_t b, const char* what) {
  return error(errc::delta_bad_manifest, "compact stream: block " + std::to_string(b) + " " + what);
}

template <typename T>
status decode_t(byte_span stream, const stream_info& info, uint64_t numel, uint32_t* positions, T* diffs) {
  constexpr uint32_t w = bits_of<T>;
  constexpr uint64_t max_code = (w == 64 ? UINT64_MAX : (uint64_t{1} << w) - 1) - 1;  // zigzag + 1 fits w bits
  const std::byte* dir = stream.data() + kHeaderBytes;
  const std::byte* data = dir + size_t{kDirEntryBytes} * info.blocks;
  uint64_t next = 0;
  for (uint32_t b = 0; b < info.blocks; ++b) {
    const uint64_t base = load_le<uint32_t>(dir + size_t{kDirEntryBytes} * b);
    const uint32_t bytes = load_le<uint32_t>(dir + size_t{kDirEntryBytes} * b + 4);
    if (base != next) return bad_block(b, "does not start right after the previous block's last position");
    const size_t first = size_t{b} * kBlockElems;
    const size_t m = std::min<size_t>(kBlockElems, info.count - first);
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

template <typename T>
void apply_t(std::span<const uint32_t> positions, const std::byte* diffs, std::byte* dest, std::byte* old) {
  const size_t n = positions.size();
  for (size_t i = 0; i < n; ++i) {
    std::byte* at = dest + size_t{positions[i]} * sizeof(T);
    const T o = load_le<T>(at);
    if (old != nullptr) store_le<T>(old + i * sizeof(T), o);
    store_le<T>(at, static_cast<T>(o + load_le<T>(diffs + i * sizeof(T))));
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
    return error(errc::delta_bad_manifest,
                 "compact stream: " + std::to_string(stream.size()) + " bytes, shorter than its 8-byte header");
  const std::byte* h = stream.data();
  if (static_cast<uint8_t>(h[0]) != kMagic || static_cast<uint8_t>(h[1]) != kLog2BlockElems ||
      static_cast<uint8_t>(h[3]) != 0)
    return error(errc::delta_bad_manifest, "compact stream: bad magic or block size");
  stream_info info;
  info.elem_bytes = static_cast<uint8_t>(h[2]);
  // The header is untrusted: only the four element sizes the codec has codes for (decode's width switch
  // relies on it).
  if (info.elem_bytes != 1 && info.elem_bytes != 2 && info.elem_bytes != 4 && info.elem_bytes != 8)
    return error(errc::delta_bad_manifest,
                 "compact stream: element size " + std::to_string(info.elem_bytes) + " is not 1, 2, 4 or 8");
  if (info.elem_bytes != elem_bytes)
    return error(errc::delta_bad_manifest, "compact stream: element size " + std::to_string(info.elem_bytes) +
                                               ", the param's dtype has " + std::to_string(elem_bytes));
  info.count = load_le<uint32_t>(h + 4);
  if (info.count != count)
    return error(errc::delta_value_count_mismatch, "compact stream: holds " + std::to_string(info.count) +
                                                       " changes, the manifest says " + std::to_string(count));
  info.blocks = static_cast<uint32_t>((info.count + kBlockElems - 1) / kBlockElems);
  const uint64_t dir_end = kHeaderBytes + uint64_t{kDirEntryBytes} * info.blocks;
  if (dir_end > stream.size())
    return error(errc::delta_bad_manifest, "compact stream: its block directory runs past its bytes");
  uint64_t total = dir_end;
  for (uint32_t b = 0; b < info.blocks; ++b) {
    const uint32_t bytes = load_le<uint32_t>(h + kHeaderBytes + size_t{kDirEntryBytes} * b + 4);
    if (bytes < 2) return bad_block(b, "is shorter than its 2-byte header");
    total += bytes;
  }
  if (total != stream.size())
    return error(errc::delta_bad_manifest, "compact stream: blocks cover " + std::to_string(total) +
                                               " bytes of a " + std::to_string(stream.size()) + "-byte range");
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
  switch (elem_bytes) {
    case 1: st = decode_t<uint8_t>(stream, info, numel, positions.data(), reinterpret_cast<uint8_t*>(diffs.data())); break;
    case 2: st = decode_t<uint16_t>(stream, info, numel, positions.data(), reinterpret_cast<uint16_t*>(diffs.data())); break;
    case 4: st = decode_t<uint32_t>(stream, info, numel, positions.data(), reinterpret_cast<uint32_t*>(diffs.data())); break;
    default: st = decode_t<uint64_t>(stream, info, numel, positions.data(), reinterpret_cast<uint64_t*>(diffs.data())); break;
  }
  if (!st.ok()) {
    positions.clear();
    diffs.clear();
  }
  return st;
}

void apply_diffs(std::span<const uint32_t> positions, byte_span diffs, uint32_t elem_bytes, mutable_byte_span dest,
                 byte_buffer* old_values) {
  DS_CHECK(diffs.size() == positions.size() * elem_bytes, "compact::apply_diffs: sizes disagree");
  std::byte* old = nullptr;
  if (old_values != nullptr) {
    old_values->resize(diffs.size());
    old = old_values->data();
  }
  if (!positions.empty())
    DS_CHECK(uint64_t{positions.back()} * elem_bytes + elem_bytes <= dest.size(), "compact::apply_diffs: past dest");
  switch (elem_bytes) {
    case 1: return apply_t<uint8_t>(positions, diffs.data(), dest.data(), old);
    case 2: return apply_t<uint16_t>(positions, diffs.data(), dest.data(), old);
    case 4: return apply_t<uint32_t>(positions, diffs.data(), dest.data(), old);
    default: return apply_t<uint64_t>(positions, diffs.data(), dest.data(), old);
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
