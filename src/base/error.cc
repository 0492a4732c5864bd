// The deltasync error category: names and messages for every errc.
#include "base/error.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>

namespace deltasync {
namespace {

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "deltasync"; }
  std::string message(int ev) const override { return std::string(errc_name(static_cast<errc>(ev))); }
  std::error_condition default_error_condition(int ev) const noexcept override {
    switch (static_cast<errc>(ev)) {
      case errc::not_found: return std::errc::no_such_file_or_directory;
      case errc::no_space: return std::errc::no_space_on_device;
      case errc::timeout: return std::errc::timed_out;
      case errc::cancelled: return std::errc::operation_canceled;
      case errc::invalid_argument: return std::errc::invalid_argument;
      default: return {ev, *this};
    }
  }
};

}  // namespace

const std::error_category& deltasync_category() noexcept {
  static const category c;
  return c;
}

std::string_view errc_name(errc e) noexcept {
  switch (e) {
#define DS_NAME(x) \
  case errc::x: return #x;
    DS_NAME(ok)
    DS_NAME(invalid_argument)
    DS_NAME(io_error)
    DS_NAME(not_found)
    DS_NAME(no_space)
    DS_NAME(cancelled)
    DS_NAME(timeout)
    DS_NAME(limit_exceeded)
    DS_NAME(unsupported)
    DS_NAME(internal)
    DS_NAME(too_many_open_files)
    DS_NAME(st_too_small)
    DS_NAME(st_header_too_large)
    DS_NAME(st_header_out_of_bounds)
    DS_NAME(st_header_not_utf8)
    DS_NAME(st_header_bad_start)
    DS_NAME(st_header_not_json)
    DS_NAME(st_header_not_object)
    DS_NAME(st_metadata_not_strings)
    DS_NAME(st_duplicate_tensor)
    DS_NAME(st_bad_tensor_entry)
    DS_NAME(st_unknown_dtype)
    DS_NAME(st_size_overflow)
    DS_NAME(st_bad_offsets)
    DS_NAME(st_size_mismatch)
    DS_NAME(st_misaligned_size)
    DS_NAME(st_not_contiguous)
    DS_NAME(st_size_mismatch_file)
    DS_NAME(zstd_not_a_frame)
    DS_NAME(zstd_unknown_size)
    DS_NAME(zstd_too_large)
    DS_NAME(zstd_corrupt)
    DS_NAME(zstd_size_lie)
    DS_NAME(delta_missing_tensor)
    DS_NAME(delta_bad_metadata)
    DS_NAME(delta_unknown_encoding)
    DS_NAME(delta_bad_manifest)
    DS_NAME(delta_manifest_bounds)
    DS_NAME(delta_bad_pos_width)
    DS_NAME(delta_positions_not_ascending)
    DS_NAME(delta_position_out_of_range)
    DS_NAME(delta_value_count_mismatch)
    DS_NAME(delta_checksum_mismatch)
    DS_NAME(delta_dtype_mismatch)
    DS_NAME(delta_shape_mismatch)
    DS_NAME(delta_unknown_tensor)
    DS_NAME(delta_value_not_representable)
    DS_NAME(delta_version_mismatch)
    DS_NAME(delta_payload_hash_mismatch)
    DS_NAME(delta_tensor_digest_mismatch)
    DS_NAME(bad_request)
    DS_NAME(unauthorized)
    DS_NAME(forbidden_path)
    DS_NAME(version_conflict)
    DS_NAME(body_too_large)
    DS_NAME(busy)
    DS_NAME(receiver_failed)
    DS_NAME(upstream_error)
    DS_NAME(forbidden_url)
#undef DS_NAME
  }
  return "unknown_error";
}

std::string error::describe() const {
  std::string out = message;
  out += " [";
  const bool is_errno = code.category() == std::generic_category() || code.category() == std::system_category();
  const char* sym = is_errno ? ::strerrorname_np(code.value()) : nullptr;
  if (code.category() == deltasync_category()) {
    out += errc_name(static_cast<errc>(code.value()));
  } else if (sym != nullptr) {
    out += sym;  // the message already says strerror's text: name the errno instead of repeating it
  } else {
    out += code.category().name();
    out += ' ';
    out += std::to_string(code.value());
  }
  out += "]";
  return out;
}

error errno_error(int err, std::string_view what) {
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(err);
  if (err == EMFILE) {
    struct rlimit lim {};
    msg += "; the process may hold ";
    msg += ::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY ? std::to_string(lim.rlim_cur) : "?";
    msg += " open files (RLIMIT_NOFILE): raise it (ulimit -n, systemd LimitNOFILE=) or lower max-files-per-sync / "
           "max-connections";
    return error(errc::too_many_open_files, std::move(msg));
  }
  if (err == ENFILE) {
    msg += "; the system-wide file table is full: raise fs.file-max (sysctl)";
    return error(errc::too_many_open_files, std::move(msg));
  }
  return error(std::error_code(err, std::generic_category()), std::move(msg));
}

std::string_view error::code_name() const noexcept {
  return code.category() == deltasync_category() ? errc_name(static_cast<errc>(code.value())) : "system";
}

}  // namespace deltasync
