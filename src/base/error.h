// The project's error vocabulary: one std::error_category for every operating error deltasync reports.
// Errors are values (see result.h); every code has a stable name so logs, JSON bodies and tests can name it.
#pragma once

#include <string>
#include <string_view>
#include <system_error>

namespace deltasync {

// Grouped by the module that first reports them. Values are stable; append new ones at the end of a group.
enum class errc : int {
  ok = 0,
  // generic
  invalid_argument = 1,
  io_error,
  not_found,
  no_space,
  cancelled,
  timeout,
  limit_exceeded,
  unsupported,
  internal,
  too_many_open_files,  // EMFILE / ENFILE: the message names the limit to raise (HTTP 503)
  // safetensors container (one per rule the reference implementation enforces)
  st_too_small = 100,        // fewer than 8 bytes: no header length
  st_header_too_large,       // header length > 100,000,000
  st_header_out_of_bounds,   // 8 + header length > file size
  st_header_not_utf8,        // header bytes are not valid UTF-8
  st_header_bad_start,       // header does not start with '{'
  st_header_not_json,        // header is not valid JSON
  st_header_not_object,      // JSON is not an object, or an entry is not an object
  st_metadata_not_strings,   // __metadata__ is not an object of string values
  st_duplicate_tensor,       // the same tensor name appears twice
  st_bad_tensor_entry,       // missing/extra/mistyped dtype, shape or data_offsets
  st_unknown_dtype,          // dtype string not in the table
  st_size_overflow,          // product(shape) x element size overflows 64 bits
  st_bad_offsets,            // data_offsets begin > end
  st_size_mismatch,          // end - begin != product(shape) x element size
  st_misaligned_size,        // a sub-byte dtype whose bit count is not a whole number of bytes
  st_not_contiguous,         // a hole or overlap between tensors, or the first does not start at 0
  st_size_mismatch_file,     // the data section does not end exactly at the last tensor
  // zstd
  zstd_not_a_frame = 200,
  zstd_unknown_size,         // frame header does not declare its content size
  zstd_too_large,            // declared content size exceeds the caller's cap
  zstd_corrupt,              // decompression failed
  zstd_size_lie,             // decompressed size differs from the declared size
  // delta wire format
  delta_missing_tensor = 300,  // __positions__ or __values__ absent, or extra tensors present
  delta_bad_metadata,          // a metadata key missing or malformed
  delta_unknown_encoding,
  delta_bad_manifest,          // params JSON malformed
  delta_manifest_bounds,       // a param's pos/val range lies outside its tensor
  delta_bad_pos_width,
  delta_positions_not_ascending,
  delta_position_out_of_range,
  delta_value_count_mismatch,  // positions decode to a different count than val_end - val_start
  delta_checksum_mismatch,
  delta_dtype_mismatch,        // values dtype cannot be cast to the param's dtype, or store dtype differs
  delta_shape_mismatch,
  delta_unknown_tensor,
  delta_value_not_representable,
  delta_version_mismatch,
  delta_payload_hash_mismatch,   // native: xxh3-64 of the payload differs from the metadata
  delta_tensor_digest_mismatch,  // native: xxh3-128 of a tensor after apply differs from the sender's
  // service
  bad_request = 400,      // malformed request: HTTP 400
  unauthorized,           // missing or wrong bearer token: 401
  forbidden_path,         // a path escaping the delta dir: 403
  version_conflict,       // base_version != current version: 409
  body_too_large,         // request body over the limit: 413
  busy,                   // another sync in progress: 503
  receiver_failed,        // a receiver answered with an error (sender side)
  upstream_error,         // pull transport: the file server failed or answered an error: 502
  forbidden_url,          // pull transport: a base_url that no pull-allow entry covers: 403
};

const std::error_category& deltasync_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), deltasync_category()};
}

// The stable short name of a code, e.g. "st_not_contiguous".
std::string_view errc_name(errc e) noexcept;

// An operating error: a code plus a message that names the file, tensor or request concerned.
struct error {
  std::error_code code;
  std::string message;

  error() = default;
  error(errc e, std::string msg) : code(make_error_code(e)), message(std::move(msg)) {}
  error(std::error_code ec, std::string msg) : code(ec), message(std::move(msg)) {}

  bool is(errc e) const noexcept { return code == make_error_code(e); }
  // "<message> [<code name>]": the project code's name, or the errno's symbolic name (e.g. "EACCES") for a
  // system error, whose message already carries strerror's text.
  std::string describe() const;
  // The code's stable name (errc_name), or "system" for a code of another category (errno).
  std::string_view code_name() const noexcept;
};

// An error from errno, with a message naming what failed: "open /x/y: No such file or directory". The one
// place where a kernel result becomes an error: EMFILE and ENFILE become errc::too_many_open_files, whose
// message names the limit to raise (RLIMIT_NOFILE with its current value, or fs.file-max).
error errno_error(int err, std::string_view what);

}  // namespace deltasync

template <>
struct std::is_error_code_enum<deltasync::errc> : std::true_type {};
