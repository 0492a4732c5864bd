// The `compact` encoding of one param's changes (docs/codec.md "compact"): positions as Rice-coded gaps, values
// as the rANS-coded difference, in the element's raw bits, between the new value and the value the receiver
// already holds. Pure: no I/O, no allocation beyond the caller's buffers.
//
// compact/2 (magic 0xC2, what encode writes). Stream of one param (all integers little-endian):
//   u8 magic 0xC2 | u8 log2(block elements) = 13 | u8 element bytes (1, 2, 4, 8) | u8 log2(lane elements) = 8
//   u32 count n
//   value table: u8 nsym (0 when n = 0), then nsym frequencies, each LEB128 in 1 or 2 bytes, summing to 2^11
//   directory: ceil(n / 8192) entries {u32 base, u32 block bytes}
//   blocks, back to back: u8 kp | lanes x u16 lane bytes | the lanes' regions, back to back
// Block b holds elements [8192 b, min(n, 8192 (b + 1))) in ceil(m / 256) lanes of 256 (the last may be shorter);
// `base` is the index the block's first gap counts from (0 for the first block, the previous block's last index
// + 1 after). A lane's region: its rANS decoder's initial state (3 bytes, in [2^16, 2^24)) | a LSB-first bit
// stream, zero-padded to a whole byte | the rANS bytes, which the decoder reads from the region's end backwards.
// Per element, in order: the gap g = index - next (next = base, then previous index + 1) Rice-coded with the
// block's kp (q = g >> kp as q zero bits and a one bit, then the low kp bits; q >= 24: 24 zero bits and g raw in
// 32 bits; kp = 0xFF: the block's positions are base, base + 1, ... and cost no bits) in the bit stream; the value
// code u = zigzag(new - old mod 2^w) - 1 (w = 8 x element bytes; >= 0 since a changed element differs) as a
// symbol (codec/compact_coder.h: u itself below 16, else 11 + its bit width) rANS-coded with the stream's table,
// then, for a symbol of 16 or more, u's bits below its leading one, raw, in the bit stream. The lane's decoder
// must end in state 2^16 with every byte of the region used. Lanes decode independently (the GPU decodes a
// block's 32 lanes at once; each lane's positions are offset by the lanes before it with one warp scan).
// The encoder's choices (kp by choose_k below, the table by coder::normalize) are part of the format's
// definition, so the CPU and GPU encoders write the same bytes.
//
// compact/1 (magic 0xC1, written by the first release of `compact`; still decoded): header 0xC1 | 11 | element
// bytes | 0 | u32 n, the same directory with blocks of 2048, each block u8 kp | u8 kv | one bit stream holding
// per element the Rice-coded gap and the Rice-coded u (kv; a quotient of 16 or more escapes to u raw in w bits;
// kv = 0xFF: raw w-bit differences).
//
// Not idempotent: applying the stream twice, or to a tensor other than the sender's base, gives wrong values.
// The native format guards it with base_version and the per-tensor digests of the new tensor.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "codec/compact_coder.h"
#include "codec/sum_digest.h"

namespace deltasync::compact {

inline constexpr uint8_t kMagic = 0xC2;
inline constexpr uint32_t kLog2BlockElems = 13;  // 8192 changed elements per block
inline constexpr uint32_t kBlockElems = 1u << kLog2BlockElems;
inline constexpr uint32_t kLog2LaneElems = 8;  // 256 changed elements per lane
inline constexpr uint32_t kLaneElems = 1u << kLog2LaneElems;
inline constexpr uint32_t kLanesPerBlock = kBlockElems / kLaneElems;  // 32: a warp decodes a block
inline constexpr uint8_t kMagicV1 = 0xC1;
inline constexpr uint32_t kLog2BlockElemsV1 = 11;  // compact/1: 2048 changed elements per block
inline constexpr uint32_t kHeaderBytes = 8;
inline constexpr uint32_t kDirEntryBytes = 8;
inline constexpr uint32_t kEscapeQ = 24;       // gap quotients from here on are escaped to the raw gap
inline constexpr uint32_t kValueEscapeQ = 16;  // compact/1: value quotients from here on escape to the raw code
inline constexpr uint8_t kModeSpecial = 0xFF;  // kp: dense run; compact/1's kv: raw differences
inline constexpr uint32_t kMaxK = 31;

// What an encode produced, for reports: bits spent on gaps (their Rice codes), on values (rANS bytes, the lanes'
// 3-byte states, the raw bits of large symbols), and on the rest (header, value table, directory, kp and lane
// tables, padding); the three add up to 8 x the bytes appended.
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

// The stream's fixed part, read and checked: magic (0xC2 or 0xC1), block and lane sizes, `elem_bytes`, count ==
// `count`, the value table (compact/2: nsym within the element's alphabet, canonical LEB128, frequencies summing
// to 2^11, the last one non-zero), and that the directory and every block lie inside `stream` and cover it
// exactly (compact/2: each block at least its kp and lane table, and 3 bytes per lane).
struct stream_info {
  uint64_t count = 0;
  uint32_t elem_bytes = 0;
  uint32_t blocks = 0;
  uint32_t version = 2;       // 2 (0xC2) or 1 (0xC1)
  uint32_t dir_offset = 0;    // byte offset of the directory
  uint32_t nsym = 0;          // compact/2: the value table's symbols
  uint32_t freqs[coder::kMaxSymbols] = {};
};
// Errors: delta_bad_manifest (header, sizes, directory), delta_value_count_mismatch (count; kAnyCount: any).
inline constexpr uint64_t kAnyCount = ~uint64_t{0};
result<stream_info> read_header(byte_span stream, uint64_t count, uint32_t elem_bytes);

// Decodes the whole stream (compact/2 or compact/1) into positions (ascending, each < numel) and the raw
// differences (new - old mod 2^w, elem_bytes each, little-endian), replacing both outputs' contents. Validates
// everything: header, table, directory, every code (no read past a lane or block, every lane ending in the rANS
// decoder's final state with its bit stream meeting its rANS bytes, zero padding, block bases ascending past the
// previous block's last index, positions < numel, value codes within the element).
// Errors: those of read_header, delta_bad_manifest (a malformed block), delta_position_out_of_range,
// delta_positions_not_ascending. On error the outputs are empty.
status decode(byte_span stream, uint64_t count, uint64_t numel, uint32_t elem_bytes, std::vector<uint32_t>& positions,
              byte_buffer& diffs);

// Decodes blocks [first, end) of the compact/2 stream `info` describes (read_header accepted it): the changes
// from first x kBlockElems on, with every check decode makes on those blocks. Block first's base is checked
// against block first - 1's last index, which is decoded (and not returned) to find it: so the runs that cover
// a stream, each decoded alone (a large param's apply split across workers), check together everything decode
// checks, with the same messages. first < end <= info.blocks. Errors and outputs on error: decode's.
status decode_blocks(byte_span stream, const stream_info& info, uint64_t numel, uint32_t first, uint32_t end,
                     std::vector<uint32_t>& positions, byte_buffer& diffs);

// Applies a decoded stream in place: dest[pos[i]] += diff[i] (mod 2^w, on the raw bits), saving the old
// element into `old_values` (resized to count x elem_bytes) first when given, and moving `sum` (the tensor's
// additive digest) from each old element to its new one when given: one visit of each element. Positions must
// be valid for dest (decode checked them against numel = dest.size() / elem_bytes).
void apply_diffs(std::span<const uint32_t> positions, byte_span diffs, uint32_t elem_bytes, mutable_byte_span dest,
                 byte_buffer* old_values, sum_delta* sum = nullptr);

// The information content of a change set, for reports: log2 C(numel, n) bits for the positions (the
// empirical entropy of a set of n positions out of numel), and the order-0 empirical entropy of the value
// differences (bits, summed over the elements).
double position_entropy_bits(uint64_t numel, uint64_t n) noexcept;
double value_entropy_bits(byte_span diffs, uint32_t elem_bytes);

}  // namespace deltasync::compact
