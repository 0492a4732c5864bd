// The slime #1806 delta file (DESIGN.md "Wire formats"): one safetensors file per bucket flush holding
// `__positions__` (U8: every param's encoded positions, concatenated) and `__values__` (the new values of
// every changed element, in manifest order, in the params' dtype or a promoted one), plus `__metadata__`
// {encoding, current_version, checksum, params}. Pure: no I/O.
//
// The native format (DESIGN.md "Native format") is the same container with five more metadata keys:
//   format           "deltasync-native/1"
//   base_version     decimal: the version the receiver must hold for the file to apply
//   version          decimal: the version the sync produces; equals current_version
//   payload_xxh3_64  16 lowercase hex: XXH3-64 of the uncompressed data section, i.e. the bytes of
//                    __positions__ followed by those of __values__, as stored
//   tensor_xxh3_128  a JSON object {param name: 32 lowercase hex}: XXH3-128 of each param's full NEW tensor,
//                    one for exactly the params of this file (verified by the receiver after apply)
// and one optional key (added later; a reader that does not know it ignores it, as it ignores any unknown key):
//   tensor_sum128    a JSON object {param name: 32 lowercase hex}: the additive digest (codec/sum_digest.h) of
//                    the param's full NEW tensor, for some or all of the file's params (no other names). A
//                    receiver that keeps these digests checks them after apply in O(changed elements) instead
//                    of hashing the tensor; for the params without one it checks tensor_xxh3_128 as before.
// A file without `format` is a slime file; the reader ignores native keys there. A slime file written by
// deltasync (`publish --format slime`, native_fields::slime) carries three more keys of its own, which slime's
// receiver ignores (it reads its keys by name) and ours verifies when they are present:
//   deltasync_base_version     decimal: as base_version above (< current_version)
//   deltasync_tensor_xxh3_128  as tensor_xxh3_128 above
//   deltasync_tensor_sum128    optional, as tensor_sum128 above
// The first two come together or not at all (delta_bad_metadata); the reader puts them in
// delta_file::slime_claims, and delta_file::claims() gives whichever of the two a file has.
//
// The `compact` encoding (native files only; codec/compact.h, docs/codec.md) replaces the two tensors with
// one, `__compact__` (U8): each param's compact stream, back to back. A param's pos_start/pos_end are its
// stream's byte range there, pos_width is 1, and val_start/val_end still count its changed elements (there is
// no __values__); its values are differences against the receiver's current tensor, so such a file applies
// only on its base_version. checksum = H(__compact__); payload_xxh3_64 hashes __compact__.
//
// The streamable native layout, "deltasync-native/2" (written by delta_bucket_builder when
// native_fields::records is set; the Sender's host path sets it): the same metadata keys plus
//   values_dtype     the safetensors dtype name of every value ("BF16", ...)
// and ONE tensor, `__records__` (U8), holding one record per param in manifest order: its encoded positions,
// zero padding to the values dtype's size, then its values. A param's pos_start/pos_end are byte offsets into
// __records__ and its val_start/val_end element offsets (of values_dtype) into it; records may not overlap
// (pos_end <= val_start * size, and the next record starts at or after val_end * size). So each param's
// bytes are contiguous and a reader can apply it as soon as they are in, while later records still arrive.
// Its checksum is delta_checksum(records, values_dtype, records) and payload_xxh3_64 the XXH3-64 of
// __records__. delta_file::positions and ::values then both view __records__. "deltasync-native/1" files
// are read as before.
//
// Writing: delta_bucket_builder collects params, then finish() produces the file bytes.
// Reading: parse_delta_file() validates the container, manifest and checksum; apply_param() then scatters
// one param's values into its tensor (decoding positions on the fly, bounds-checked).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/memory_budget.h"
#include "base/result.h"
#include "codec/digest.h"
#include "codec/dtype.h"
#include "codec/safetensors.h"
#include "codec/tensor_hash.h"

namespace deltasync {

struct sum_delta;  // codec/sum_digest.h

enum class encoding : uint8_t { indices, deltas, deltas_zstd, compact };

std::string_view encoding_name(encoding e) noexcept;  // "indices" | "deltas" | "deltas_zstd" | "compact"
std::optional<encoding> encoding_from_name(std::string_view name) noexcept;

// One entry of the `params` manifest.
struct param_entry {
  std::string name;
  dtype type = dtype::BF16;
  std::vector<uint64_t> shape;
  uint64_t pos_start = 0, pos_end = 0;  // byte offsets into __positions__
  uint32_t pos_width = 4;               // 2 or 4; 1 for compact (a byte range)
  uint64_t val_start = 0, val_end = 0;  // element offsets into __values__
  // 0 for a param as its file lists it. A slice of a param's positions (the receiver splits a large param's
  // apply across workers: sync/receiver_stream.cc) narrows the ranges above and names here the smallest index
  // its positions may hold; the gap encodings count from it (it is the index after the previous slice's last).
  uint64_t pos_base = 0;
  // A slice of a compact param: blocks [block_first, block_end) of its stream (compact::decode_blocks), whose
  // changes val_start..val_end are; pos_start..pos_end still name the whole stream. block_end == 0: all of it.
  uint32_t block_first = 0, block_end = 0;

  uint64_t numel() const noexcept;  // product(shape); saturates at UINT64_MAX (parse_params_json refuses that)
  uint64_t changed() const noexcept { return val_end - val_start; }
};

struct delta_manifest {
  encoding enc = encoding::indices;
  uint64_t current_version = 0;
  checksum128 checksum = 0;
  std::vector<param_entry> params;
};

// The `params` JSON list <-> entries. parse_params validates types and that every range is well-formed
// (start <= end, pos range a multiple of pos_width), dtype a known torch name with whole-byte elements, and
// that product(shape) and its byte size fit 64 bits; cross-checks against the blobs happen in
// parse_delta_file. Keys other than the eight known ones are ignored (forward compatibility).
// Errors: delta_bad_manifest, delta_bad_pos_width (pos_width not 1, 2 or 4; 1 only for compact), delta_dtype_mismatch (sub-byte).
// The list is parsed as a stream (no JSON tree of it is built): memory is the entries kept, and nothing more is
// kept once an entry is refused. With `limits`, more than max_params entries is limit_exceeded, and a name
// that `known` rejects is delta_unknown_tensor, both reported as soon as they are met (a JSON syntax error
// anywhere still wins over either).
struct params_limits {
  uint64_t max_params = ~uint64_t{0};
  std::function<bool(std::string_view name)> known;  // empty: every name is accepted here
};
std::string params_to_json(const std::vector<param_entry>& params);
result<std::vector<param_entry>> parse_params_json(std::string_view json, const params_limits& limits = {});

// ---- positions ----

// Appends the encoded positions of one param (ascending element indices) and returns the width used:
// `indices` -> uint32 (width 4); `deltas` -> gaps g[0]=idx[0], g[k]=idx[k]-idx[k-1]-1 as uint16 when every
// gap <= 65535, else uint32. deltas_zstd encodes positions like `deltas`.
uint32_t encode_positions(encoding enc, std::span<const uint32_t> positions, byte_buffer& out);

// Decodes one param's positions into element indices (replacing `out`'s contents), checking each index <
// numel and that indices ascend strictly; `encoded.size() / pos_width` entries (for compact: the count and
// element size its stream header gives, the whole stream validated). Errors: delta_bad_pos_width,
// delta_bad_manifest (size not a multiple of the width), delta_position_out_of_range,
// delta_positions_not_ascending. On error `out` is empty.
// `base`: a slice's param_entry::pos_base (not for compact). check_positions: the same checks, nothing decoded.
status decode_positions(encoding enc, uint32_t pos_width, byte_span encoded, uint64_t numel,
                        std::vector<uint32_t>& out, uint64_t base = 0);
status check_positions(encoding enc, uint32_t pos_width, byte_span encoded, uint64_t numel);

// ---- writer ----

struct param_delta {
  std::string name;
  dtype type = dtype::BF16;
  std::vector<uint64_t> shape;
  std::span<const uint32_t> positions;  // ascending element indices
  byte_span values;                     // positions.size() elements of `type`
};

inline constexpr std::string_view kNativeFormatName = "deltasync-native/1";
inline constexpr std::string_view kNativeRecordsFormatName = "deltasync-native/2";

// What a native file carries beyond slime's format (given to the writer).
struct native_fields {
  uint64_t base_version = 0;
  std::map<std::string, digest128> tensor_digests;  // full new tensor, by param name; may hold more names
  std::map<std::string, digest128> tensor_sums;     // optional additive digests of the new tensors (tensor_sum128)
  bool records = false;  // write the streamable layout "deltasync-native/2" (builder only; see the top)
  // Write a slime file, not a native one: base_version and the digests go under slime-side keys
  // (deltasync_*, see the top) and there is no format, version or payload hash. Not for compact; ignores records.
  bool slime = false;
};

// Accumulates the params of one bucket flush. Not thread-safe; one builder per bucket.
class delta_bucket_builder {
 public:
  explicit delta_bucket_builder(encoding enc);

  // False (and nothing added) when the param's dtype cannot share __values__ with what the bucket holds
  // (see promote() in dtype.h): flush the bucket and add it to the next one.
  bool can_add(dtype type) const noexcept;
  // Asserts can_add(p.type), values/positions agreement and positions < numel < 2^32. A param with no
  // positions is skipped (slime lists only changed params). Not for compact (asserts): see add_compact.
  void add(const param_delta& p);
  // For the compact encoding: `old_values` are the elements the receiver holds at p.positions (the sender's
  // base), each different from its new value (asserted, like add's checks); the param's stream is encoded here.
  void add_compact(const param_delta& p, byte_span old_values);
  // For the compact encoding: a param whose stream was encoded elsewhere (the GPU encoder), `count` > 0 changes.
  // Asserts can_add(type) and that the stream's header and directory agree (compact::read_header).
  void add_compact_stream(const std::string& name, dtype type, const std::vector<uint64_t>& shape, uint64_t count,
                          byte_span stream);

  bool empty() const noexcept { return params_.empty(); }
  size_t param_count() const noexcept { return params_.size(); }
  uint64_t changed_elements() const noexcept { return value_count_; }
  // Bytes the file payload will take before zstd: positions + values (in the promoted dtype).
  uint64_t payload_bytes() const noexcept;

  // Builds the whole file (zstd-wrapped for deltas_zstd; the inner metadata then says "deltas_zstd", as slime
  // writes it) and resets the builder; on error the builder keeps its contents. An empty builder makes a
  // valid file with no params and empty BF16 __values__.
  // With `native`, the file is a native one (version = current_version); `native->tensor_digests` must hold
  // every param of the bucket (others are left out of the file) and base_version must be < current_version,
  // else errc::invalid_argument and the builder keeps its contents. compact needs `native` (invalid_argument
  // without: a difference against an unversioned base could apply to the wrong weights).
  result<byte_buffer> finish(uint64_t current_version, uint64_t data_alignment = 8,
                             const native_fields* native = nullptr);

 private:
  encoding enc_;
  std::optional<dtype> values_type_;
  std::vector<param_entry> params_;
  byte_buffer positions_;
  std::vector<std::pair<dtype, byte_buffer>> values_;  // per param, in its own dtype; cast at finish()
  uint64_t value_count_ = 0;
};

// The header (length prefix + JSON) of a delta file whose data section, __positions__ then __values__, was
// encoded elsewhere (the GPU encoder packs it on the device). For the same params, sizes and checksum the
// bytes equal the header delta_bucket_builder::finish writes, so header + payload is the same file (not for
// deltas_zstd, whose file is compressed whole). `params` carry their ranges. For a native file, `native`
// must hold a digest for every param and `payload_xxh3_64` is the XXH3-64 of the data section.
struct encoded_bucket {
  encoding enc = encoding::indices;
  uint64_t current_version = 0;
  std::vector<param_entry> params;
  uint64_t positions_bytes = 0;
  dtype values_type = dtype::BF16;
  uint64_t value_count = 0;
  checksum128 checksum = 0;
};
result<safetensors_layout> build_delta_header(const encoded_bucket& bucket, uint64_t data_alignment = 8,
                                              const native_fields* native = nullptr, uint64_t payload_xxh3_64 = 0);

// ---- reader ----

// The native metadata of a file, validated (see the top of this header).
struct native_info {
  uint64_t base_version = 0;
  uint64_t version = 0;
  uint64_t payload_xxh3_64 = 0;
  std::map<std::string, digest128, std::less<>> tensor_digests;
  std::map<std::string, digest128, std::less<>> tensor_sums;  // tensor_sum128, when the file has it
};

// A validated delta file. `positions` and `values` view either the caller's bytes or `storage` (the
// decompressed `deltas_zstd` payload). Move-only: a copy's views would still point into the original's
// storage.
struct delta_file {
  delta_file() = default;
  delta_file(delta_file&&) noexcept = default;
  delta_file& operator=(delta_file&&) noexcept = default;
  delta_file(const delta_file&) = delete;
  delta_file& operator=(const delta_file&) = delete;

  delta_manifest manifest;  // enc is deltas_zstd for any file that came in a zstd frame
  dtype values_type = dtype::BF16;
  byte_span positions;
  byte_span values;
  byte_buffer storage;
  memory_lease storage_lease;  // what `storage` holds of delta_read_limits::memory (a zstd file's payload)
  std::vector<std::pair<std::string, std::string>> metadata;  // every metadata key, as read
  std::optional<native_info> native;  // nullopt for a slime file
  // A slime file's deltasync_* keys (see the top), validated like a native file's: version = current_version,
  // payload_xxh3_64 = 0 (slime's checksum covers the payload). nullopt for a native file or a plain slime one.
  std::optional<native_info> slime_claims;
  // The base version and digests the file's writer claims, whichever format carries them; null when none.
  const native_info* claims() const noexcept {
    return native ? &*native : slime_claims ? &*slime_claims : nullptr;
  }
  bool records = false;  // "deltasync-native/2": positions and values both view __records__
};

struct delta_read_limits {
  uint64_t max_decompressed_bytes = 4ull << 30;
  uint64_t max_params = 1u << 20;
  bool verify_checksum = true;
  bool verify_payload_hash = true;  // native files' payload_xxh3_64
  // The budget a zstd file's decompressed payload is taken from (zstd_unwrap); the parsed file keeps it in
  // storage_lease. Null: no budget (still decompressed in bounded pieces).
  std::shared_ptr<memory_budget> memory;
  // When set, the manifest's names are checked while it is parsed (see params_limits::known): a file naming a
  // tensor the receiver does not hold is refused (delta_unknown_tensor) before the rest of its manifest is
  // kept. Called on the decoding thread.
  std::function<bool(std::string_view name)> known_tensor;
};

// Validates everything that can be checked without the target tensors: container, exactly the two
// tensors, metadata keys, encoding, manifest ranges within the blobs, values dtype castable to each
// param's dtype, and the checksum. The result may view `file` (keep it alive).
// A zstd frame (magic 28 B5 2F FD) is unwrapped first, up to limits.max_decompressed_bytes; its inner
// metadata may say "deltas" or "deltas_zstd"; "deltas_zstd" outside a frame is refused. Params' position and
// value ranges must follow manifest order without overlap; names must be unique. Positions themselves are
// decoded and checked by apply_param.
// A native file (metadata `format` present) must say "deltasync-native/1" and carry every native key, well
// formed: version == current_version, base_version < version, a digest for every param and none for other
// names (delta_bad_metadata otherwise). Its payload hash is verified right after the container and the
// native keys, before the manifest is read (delta_payload_hash_mismatch). A slime file's deltasync_* keys,
// when present, are held to the same rules (base below current_version, one digest per param, no other names).
// Errors: the st_* / zstd_* codes of the container, delta_missing_tensor,
// delta_bad_metadata, delta_unknown_encoding, delta_bad_manifest, delta_bad_pos_width, delta_manifest_bounds,
// delta_value_count_mismatch, delta_dtype_mismatch, delta_checksum_mismatch, delta_payload_hash_mismatch,
// limit_exceeded (max_params).
result<delta_file> parse_delta_file(byte_span file, const delta_read_limits& limits = {});

// Scatters one param's new values into `dest` (the whole tensor, row-major, of p.type and p.shape),
// decoding positions directly from the encoded blob and casting from `values_type` back to p.type exactly.
// Checks bounds, ascending order and (for a promoted __values__) that every value round-trips to p.type
// before writing anything: on error `dest` is untouched. Allocates nothing: positions are validated in one
// pass and decoded again while scattering. Errors: delta_shape_mismatch (dest size), delta_manifest_bounds,
// delta_bad_pos_width, delta_position_out_of_range, delta_positions_not_ascending,
// delta_value_count_mismatch, delta_dtype_mismatch, delta_value_not_representable.
// With `old_values`, the overwritten elements are saved there first (resized to changed() x element size, in
// position order), in the same pass: the undo record of a transactional apply at no extra memory traffic.
// With `sum`, the change of dest's additive digest (codec/sum_digest.h) is accumulated there, from the same
// visit of each element (nothing is added on error).
// With `compact_positions` (compact only), the decoded positions are left there (a slice's undo record).
status apply_param(const delta_file& f, const param_entry& p, mutable_byte_span dest,
                   byte_buffer* old_values = nullptr, sum_delta* sum = nullptr,
                   std::vector<uint32_t>* compact_positions = nullptr);

}  // namespace deltasync
