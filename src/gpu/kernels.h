// The GPU path's kernels, behind a CUDA-free interface (device pointers are plain `void*`).
//
//   diff_encoder     bitwise diff of current vs snapshot tensors (element widths 1/2/4/8), stream-compacted in
//                    one pass over the data into ascending positions + values (per-tile block scans, no dense
//                    mask; see diff_method), then `indices` / `deltas` position encoding (uint16/uint32 per tensor from the
//                    largest gap) packed into a delta file's data section [__positions__ | __values__] on the
//                    device. One device-to-host copy of the per-tensor layout per bucket.
//   digester         XXH3-128 of device memory, equal to deltasync::xxh3_128 (libxxhash) bit for bit.
//   scatter_apply    new values (optionally in a promoted dtype, cast back exactly) into a device tensor at
//                    decoded positions, saving the overwritten values first.
//   decode_scatter   one param's raw encoded positions (`indices` / `deltas`, as the file holds them) decoded on
//                    the device (gap prefix sums), checked (order, bounds, the values' cast) and, only when every
//                    check passed, scattered as scatter_apply does; one small status word set comes back.
//   xor_hash         torch.hash_tensor (the slime checksum's H) of device memory, for BF16/F16/F32/F64/ints.
//   sum_digest       the additive per-tensor digest (tensor_sum128) of device memory.
//
// All of them queue work on the given stream; the calls that return host values synchronize it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/result.h"
#include "codec/delta_format.h"
#include "codec/digest.h"
#include "codec/dtype.h"
#include "gpu/gpu.h"

namespace deltasync::gpu {

// One tensor to diff. `current` is device memory; `snapshot` is device memory, or pinned host memory when
// snapshot_on_host (then the encoder stages it through the device in chunks, prefetching the next chunk while
// the current one is diffed).
struct diff_input {
  const void* current = nullptr;
  const void* snapshot = nullptr;
  uint64_t numel = 0;       // < 2^32 (positions are uint32)
  uint32_t elem_bytes = 2;  // 1, 2, 4 or 8
  bool snapshot_on_host = false;
};

// Where each tensor's encoded positions and values lie in the packed payload.
struct encoded_layout {
  std::vector<uint64_t> counts;      // changed elements per tensor
  std::vector<uint32_t> pos_width;   // 2 or 4 (4 for a tensor with no change)
  std::vector<uint64_t> pos_offset;  // byte offset of its positions in the payload
  std::vector<uint64_t> val_offset;  // element offset of its values in __values__
  uint64_t positions_bytes = 0;      // __positions__ size; __values__ follows it in the payload
  uint64_t values_bytes = 0;
  uint64_t payload_bytes() const noexcept { return positions_bytes + values_bytes; }
};

enum class diff_method { tile_compact, mask_two_pass, single_pass };

struct diff_encoder_options {
  // Changed elements the scratch holds per bucket before the encoder re-runs with a larger one.
  uint64_t initial_capacity = 1ull << 24;
  // Chunk size for snapshots held in pinned host memory (two device staging buffers of this size).
  uint64_t staging_chunk_bytes = 64ull << 20;
  // The kernels' shape: one 32 KiB tile (64 bytes per thread of each input) per block of 512 threads, with
  // registers capped for blocks_per_sm resident blocks a SM (3 or 4; 0: the method's best, 3 for tile_compact,
  // 4 for the others); single_pass also offers 256 threads x 8 blocks (block_threads = 256).
  int block_threads = 512;
  int blocks_per_sm = 0;
  // How changes are compacted (all three give the same bytes):
  //   tile_compact   (default) one pass over the data: each tile ranks its changes with a block scan and
  //                  writes them to a place taken with one atomicAdd; then a scan of the per-tile counts and
  //                  a copy of each tile's changes to its rank. No mask, no block waits for another.
  //   mask_two_pass  a streaming pass writes each 16-byte vector's change bits (1/16 of the input's bytes for
  //                  bf16, 1/8 for 1-byte elements), then a second kernel ranks the bits and gathers the values.
  //   single_pass    one kernel: block scan, decoupled look-back over the tiles' prefixes, writes at the final
  //                  ranks (block_threads and blocks_per_sm pick its shape).
  diff_method method = diff_method::tile_compact;
};

// Reusable scratch for diffing buckets on one stream. Not thread-safe.
class diff_encoder {
 public:
  explicit diff_encoder(diff_encoder_options options = {});
  ~diff_encoder();
  diff_encoder(const diff_encoder&) = delete;
  diff_encoder& operator=(const diff_encoder&) = delete;

  // Diffs every input (all of one element width), compacts and encodes: afterwards payload() holds the data
  // section of the delta file, bytes-identical to what delta_bucket_builder writes for the same tensors and
  // encoding (deltas_zstd encodes positions like deltas). Synchronizes `s` once (the layout's D2H).
  // Errors: invalid_argument (mixed widths, width not 1/2/4/8, numel >= 2^32), no_space, internal.
  result<encoded_layout> encode(std::span<const diff_input> inputs, encoding enc, stream& s);
  // The packed payload of the last encode(): layout.payload_bytes() bytes of device memory.
  const void* payload() const noexcept;
  // The last encode()'s compact changes before packing (device memory): uint32 element indices (local to each
  // tensor) and the values, tensor i's at ranks layout.val_offset[i] .. + layout.counts[i].
  const uint32_t* positions() const noexcept;
  const void* values() const noexcept;

 private:
  struct impl;
  impl* impl_;
};

// XXH3-128 of `bytes` bytes of device memory. Inputs of up to 240 bytes are hashed on the host (copied out);
// longer ones on the device (per-1-KiB-block accumulator sums in parallel, the scramble chain per block
// sequentially, 8 lanes). Synchronizes `s`. Not thread-safe (owns its scratch).
class digester {
 public:
  // max_sums_bytes bounds the scratch (64 bytes per KiB of input); longer inputs are hashed in several
  // launches, the chains carried between them.
  // max_pending_bytes bounds the sums of start()ed digests still in flight (64 bytes per KiB of input).
  explicit digester(uint64_t max_sums_bytes = 256ull << 20, uint64_t max_pending_bytes = 1ull << 30);
  ~digester();
  digester(const digester&) = delete;
  digester& operator=(const digester&) = delete;
  result<digest128> digest(const void* data, uint64_t bytes, stream& s);
  // XXH3-64 (deltasync::xxh3_64): for inputs over 240 bytes it is the low half of XXH3-128's merge.
  result<uint64_t> digest64(const void* data, uint64_t bytes, stream& s);
  // Several regions at once (their chains run in parallel): out[i] = digest of regions[i].
  status digest_many(std::span<const std::pair<const void*, uint64_t>> regions, std::span<digest128> out, stream& s);

  // Asynchronous form, for digests needed later (the Sender's per-tensor digests, needed at the bucket's
  // flush). start() reads the region now: the per-block sums and a copy of its last 1088 bytes are done when
  // it returns (it synchronizes `s`), so the caller may change the memory right after. Only the sequential
  // chain, over the digester's own copy, is left; it runs on one of the digester's streams, concurrently with
  // later start()s' chains. collect(ticket) waits for it and returns the digest (once per ticket). Regions
  // longer than one launch's sums (max_sums_bytes x 16) are hashed synchronously by start(). At most
  // max_pending_bytes of sums stay in flight: past that, start() first waits for the oldest chain.
  result<uint64_t> start(const void* data, uint64_t bytes, stream& s);
  result<digest128> collect(uint64_t ticket);
  // Waits for every started chain and forgets them (their results are not needed).
  void drop_pending() noexcept;

 private:
  struct impl;
  impl* impl_;
};

// Scatters `count` values into `dest` (numel elements of dest_type) at the uint32 positions in
// `positions` (device memory, ascending, each < numel: the caller validated them), reading values of
// `values_type` and casting to dest_type exactly. When `old_values` is given (count elements of dest_type),
// the overwritten elements are saved there first. The cast is checked: when any value does not round-trip to
// dest_type, nothing is written and the result is delta_value_not_representable. Synchronizes `s`.
// Supported casts: identity, and float-to-float among BF16, F16, F32, F64.
status scatter_apply(void* dest, dtype dest_type, uint64_t numel, const uint32_t* positions, uint64_t count,
                     const void* values, dtype values_type, void* old_values, stream& s);
// Writes `values` (count elements of `elem_bytes`) back at `positions` (the undo of scatter_apply).
status scatter_restore(void* dest, uint32_t elem_bytes, const uint32_t* positions, uint64_t count,
                       const void* values, stream& s);

// Scratch of decode_scatter / decode_positions_unchecked on one stream (grown as needed). Not thread-safe.
struct decode_scratch {
  device_buffer scan;    // 16 bytes per position (deltas: the steps g + 1, and their prefix sums)
  device_buffer cub;     // the scan's temporary storage
  device_buffer status;  // the status words on the device
  pinned_buffer host;    // their copy on the host
};
struct decode_scatter_args {
  encoding enc = encoding::indices;  // indices | deltas | deltas_zstd (positions as deltas)
  uint32_t pos_width = 4;            // 4 for indices; 2 or 4 for deltas
  const void* encoded = nullptr;     // device: count entries of pos_width bytes, little-endian, pos_width-aligned
  uint64_t count = 0;
  uint64_t numel = 0;                // the bound (the caller caps it at 2^32, as the host decoder does)
  void* dest = nullptr;              // device tensor of dest_type
  dtype dest_type = dtype::BF16;
  const void* values = nullptr;      // device: count elements of values_type
  dtype values_type = dtype::BF16;
  uint32_t* positions = nullptr;     // device: count uint32, the decoded positions (written even on refusal)
  void* old_values = nullptr;        // device: count elements of dest_type, the overwritten ones (may be null)
};
// What the device found, in the host decoder's terms (codec/positions.cc), so the caller can refuse with its
// exact errors: first_not_ascending (indices only) is the first k with idx[k] <= idx[k-1], else ~0; end is
// the last index (indices) or the 64-bit sum of every gap + 1 (deltas); first_bad_value the first value that
// does not round-trip to dest_type, else ~0. applied: every check passed and the values were written; when
// false, dest is untouched.
struct decode_status {
  uint64_t first_not_ascending = ~0ull;
  uint64_t end = 0;
  uint64_t first_bad_value = ~0ull;
  bool applied = false;
};
// Queues decode, checks and the gated scatter on `s`, then reads the status back (one 32-byte D2H) and
// synchronizes `s`. Errors (nothing queued): delta_dtype_mismatch for a cast the GPU does not do (the text of
// scatter_apply's), internal.
result<decode_status> decode_scatter(const decode_scatter_args& args, decode_scratch& scratch, stream& s);
// Decodes positions that were validated before (the undo of a decode_scatter). Queued on `s`; does not
// synchronize.
status decode_positions_unchecked(encoding enc, uint32_t pos_width, const void* encoded, uint64_t count,
                                  uint32_t* positions, decode_scratch& scratch, stream& s);

// The compact encoding (codec/compact.h) on a device tensor: dest[positions[i]] += diffs[i] mod 2^w on the raw
// bits of elements of `elem_bytes` (1, 2, 4, 8), saving the old element to old_values[i] first when it is not
// null. Positions must be validated (distinct, in range) by the caller. Queued on `s`; does not synchronize.
status add_apply(void* dest, uint32_t elem_bytes, const uint32_t* positions, uint64_t count, const void* diffs,
                 void* old_values, stream& s);
// out[i] = src[positions[i]] for elements of `elem_bytes`. Queued on `s`; does not synchronize.
status gather(const void* src, uint32_t elem_bytes, const uint32_t* positions, uint64_t count, void* out, stream& s);

// The compact stream on the device (gpu/compact_codec.cu), byte for byte the CPU codec's (codec/compact.h).
// Scratch kept between calls (grown as needed).
struct compact_scratch {
  device_buffer meta;  // per-block parameters, sizes, offsets, error flags
  pinned_buffer host;  // small device <-> host transfers
};
// Encodes `count` changes (device positions ascending, device old and new values of `elem_bytes` each, every
// new value different from its old one) into `out` (grown), setting out_bytes to the stream's size.
// Synchronizes `s` once (the stream's size comes back).
status compact_encode(const uint32_t* positions, const void* old_values, const void* new_values, uint64_t count,
                      uint32_t elem_bytes, device_buffer& out, uint64_t& out_bytes, compact_scratch& scratch,
                      stream& s);
// Decodes a stream whose bytes are both on the host (`host_stream`: header and directory are read there) and on
// the device (`device_stream`, the same bytes) into device positions and raw differences (count each), with
// every check compact::decode makes (then the same error, taken from the host decoder). Synchronizes `s`.
// The device buffer must hold kCompactStreamPad readable bytes past the stream (the bit reader's window).
inline constexpr uint64_t kCompactStreamPad = 16;
status compact_decode(byte_span host_stream, const void* device_stream, uint64_t count, uint64_t numel,
                      uint32_t elem_bytes, uint32_t* positions, void* diffs, compact_scratch& scratch, stream& s);

// torch.hash_tensor of `bytes` of device memory holding elements of `type` (U8/I8/I16/U16/I32/U32/I64/U64/
// BOOL, BF16, F16, F32, F64; others unsupported). Synchronizes `s`.
result<uint64_t> xor_hash(const void* data, uint64_t bytes, dtype type, stream& s);

// The additive digest (codec/sum_digest.h, `tensor_sum128`) of `bytes` of device memory holding elements of
// elem_bytes 1, 2, 4 or 8 (others: invalid_argument), equal to deltasync::sum_digest. Synchronizes `s`.
result<digest128> sum_digest(const void* data, uint64_t bytes, uint32_t elem_bytes, stream& s);

}  // namespace deltasync::gpu
