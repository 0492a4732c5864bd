// The `compact` encoding of one param's changes (docs/codec.md "compact"): positions as Rice-coded gaps, values
// as the Rice-coded difference, in the element's raw bits, between the new value and the value the receiver
// already holds. Pure: no I/O, no allocation beyond the caller's buffers.
//
// Stream of one param (all integers little-endian):
//   u8 magic 0xC1 | u8 log2(block elements) | u8 element bytes (1, 2, 4, 8) | u8 0 | u32 count n
//   directory: ceil(n / B) entries {u32 base, u32 block bytes}
//   blocks, back to back: u8 kp | u8 kv | LSB-first bit stream, zero-padded to a whole byte
// Block b holds elements [b*B, min(n, (b+1)*B)); `base` is the index its first gap counts from (0 for the first
// block, the previous block's last index + 1 after), so every block decodes on its own (in parallel, on the
// GPU, or as soon as its bytes have arrived). Per element, in order: the gap g = index - next (next = base, then
// previous index + 1) and the value code u = zigzag(new - old mod 2^w) - 1 (w = 8 x element bytes; new != old
// for a changed element, so zigzag >= 1). Each is Rice-coded with the block's parameter (kp for gaps, kv for
// values): q = x >> k as q zero bits and a one bit, then the low k bits; when q >= Q (24 for gaps, 16 for
// values), Q zero bits and x raw (32 bits for a gap, w bits for a value). kp = 0xFF: the block's positions are base, base + 1, ... (no gap
// bits). kv = 0xFF: values are raw w-bit differences (new - old), no Rice code. The encoder's choice of k is
// part of the format's definition (choose_k below), so the CPU and GPU encoders write the same bytes.
//
// Not idempotent: applying the stream twice, or to a tensor other than the sender's base, gives wrong values.
// The native format guards it with base_version and the per-tensor digests of the new tensor.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace deltasync::compact {

inline constexpr uint8_t kMagic = 0xC1;
inline constexpr uint32_t kLog2BlockElems = 11;  // 2048 changed elements per block
inline constexpr uint32_t kBlockElems = 1u << kLog2BlockElems;
inline constexpr uint32_t kHeaderBytes = 8;
inline constexpr uint32_t kDirEntryBytes = 8;
inline constexpr uint32_t kEscapeQ = 24;       // gap quotients from here on are escaped to the raw gap
inline constexpr uint32_t kValueEscapeQ = 16;  // value quotients from here on are escaped to the raw code
inline constexpr uint8_t kModeSpecial = 0xFF;  // kp: dense run; kv: raw differences
inline constexpr uint32_t kMaxK = 31;

// What an encode produced, for reports: bits spent on gaps, on values, and on the rest (headers, directory,
// block headers, padding); the three add up to 8 x the bytes appended.
struct encode_stats {
  uint64_t position_bits = 0;
  uint64_t value_bits = 0;
  uint64_t overhead_bits = 0;
};

// The Rice parameter the encoder uses for a block: from a histogram of the symbols' bit widths (w = min(33,
// bit_width(x)), each taken as 0, 1 or 3 << (w - 2)) the estimated cost of every k in [0, kMaxK] picks k_est;
// then the exact costs of k_est - 1 .. k_est + 1 (within range) decide; ties go to the smaller k everywhere.
// `escape_bits` is the raw width (32 for gaps, w for values). Exposed for the GPU encoder and the tests.
// `escape_q` is the escape threshold (kEscapeQ for gaps, kValueEscapeQ for values).
uint32_t choose_k(std::span<const uint64_t> symbols, uint32_t escape_bits, uint32_t escape_q = kEscapeQ) noexcept;
// Bits of one Rice code of x with parameter k (escape included).
inline uint64_t rice_bits(uint64_t x, uint32_t k, uint32_t escape_bits, uint32_t escape_q = kEscapeQ) noexcept {
  const uint64_t q = x >> k;
  return q < escape_q ? q + 1 + k : escape_q + escape_bits;
}

// Appends the stream of one param to `out`. `positions` ascend strictly (< 2^32); `old_values` and
// `new_values` hold positions.size() elements of `elem_bytes` (1, 2, 4 or 8) each, and differ at every
// position (asserted). Deterministic: the same inputs give the same bytes.
void encode(std::span<const uint32_t> positions, byte_span old_values, byte_span new_values, uint32_t elem_bytes,
            byte_buffer& out, encode_stats* stats = nullptr);

// The stream's fixed header, read and checked: magic, block size, `elem_bytes`, count == `count`, and that
// the directory and every block lie inside `stream` and cover it exactly.
struct stream_info {
  uint64_t count = 0;
  uint32_t elem_bytes = 0;
  uint32_t blocks = 0;
};
// Errors: delta_bad_manifest (header, sizes, directory), delta_value_count_mismatch (count).
result<stream_info> read_header(byte_span stream, uint64_t count, uint32_t elem_bytes);

// Decodes the whole stream into positions (ascending, each < numel) and the raw differences (new - old mod
// 2^w, elem_bytes each, little-endian), replacing both outputs' contents. Validates everything: header,
// directory, every code (no read past a block, no unused block bytes beyond the padding byte, block bases
// ascending past the previous block's last index, positions < numel, no zero difference).
// Errors: those of read_header, delta_bad_manifest (a malformed block), delta_position_out_of_range,
// delta_positions_not_ascending. On error the outputs are empty.
status decode(byte_span stream, uint64_t count, uint64_t numel, uint32_t elem_bytes, std::vector<uint32_t>& positions,
              byte_buffer& diffs);

// Applies a decoded stream in place: dest[pos[i]] += diff[i] (mod 2^w, on the raw bits), saving the old
// element into `old_values` (resized to count x elem_bytes) first when given. Positions must be valid for
// dest (decode checked them against numel = dest.size() / elem_bytes).
void apply_diffs(std::span<const uint32_t> positions, byte_span diffs, uint32_t elem_bytes, mutable_byte_span dest,
                 byte_buffer* old_values);

// The information content of a change set, for reports: log2 C(numel, n) bits for the positions (the
// empirical entropy of a set of n positions out of numel), and the order-0 empirical entropy of the value
// differences (bits, summed over the elements).
double position_entropy_bits(uint64_t numel, uint64_t n) noexcept;
double value_entropy_bits(byte_span diffs, uint32_t elem_bytes);

}  // namespace deltasync::compact
