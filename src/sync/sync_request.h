// A sync request as the receiver sees it (DESIGN.md "Receiver service contract"), parsed from either route's
// JSON, and the path checks that confine every file to the delta dir.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace deltasync {

struct sync_request {
  uint64_t version = 0;
  std::optional<uint64_t> base_version;  // absent on slime's SGLang-compatible route
  std::string transport = "disk";
  std::string dir;                 // relative to the delta dir, e.g. "weight_v000012"
  std::vector<std::string> files;  // names inside dir
  std::string base_url;            // transport "http": the file server ("http://host:port[/prefix]")
};

struct request_limits {
  size_t max_files = 4096;
  size_t max_name_bytes = 255;
};

// POST /sync: {"version": N, "base_version": M, "transport": "disk"|"nccl", "dir": "...", "files": [...]}.
// "transport": "http" adds "base_url": the receiver pulls base_url/dir/file (docs/bench.md).
// Errors: errc::bad_request naming the field.
result<sync_request> parse_sync_request(std::string_view json, const request_limits& limits = {});

// POST /update_weights_from_disk (SGLang-compatible, as slime #1806 drives it):
// {"model_path": DIR, "load_format": "delta", "weight_version": "N", "files": [...]}. model_path is the
// version directory (absolute, or relative to the delta dir); it must lie inside `delta_dir`.
result<sync_request> parse_sglang_request(std::string_view json, const std::string& delta_dir,
                                          const request_limits& limits = {});

// Resolves dir/file under delta_dir to absolute paths, refusing (errc::forbidden_path) absolute names,
// "..", empty names, and symlinks that lead outside delta_dir (checked with realpath); a file that does
// not exist is errc::not_found naming it.
result<std::vector<std::string>> resolve_sync_files(const std::string& delta_dir, const sync_request& req);

}  // namespace deltasync
