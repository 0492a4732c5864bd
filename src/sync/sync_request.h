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
  // transport "nccl" only (docs/nccl.md): each file's byte size, in broadcast order, and the group's name.
  std::vector<uint64_t> sizes;
  std::string group;
  std::string base_url;            // transport "http": the file server ("http://host:port[/prefix]")
  // Set only by recovery / catch-up replaying a full-model anchor (never parsed from a request): the files
  // must then overwrite every element of every tensor, and their base version is not checked.
  bool anchor = false;
  // Set only by recovery / catch-up (never parsed from a request): per listed file, what its version's publish
  // marker says (sync/publish_marker.h). The receiver refuses the sync (errc::delta_checksum_mismatch, rolled
  // back like any other refusal) when a file's size differs, before anything is read, or when its whole-file
  // XXH3-64 differs, checked in the pipeline on the bytes it applies (no second read). Empty: not checked.
  struct expected_file {
    uint64_t bytes = 0;
    uint64_t xxh3_64 = 0;
  };
  std::vector<expected_file> expect;
};

struct request_limits {
  size_t max_files = 4096;
  size_t max_name_bytes = 255;
};

// POST /sync: {"version": N, "base_version": M, "transport": "disk"|"nccl"|"http", "dir": "...", "files": [...]}.
// Both routes refuse a 'files' list naming one file twice (errc::bad_request), before anything is opened.
// With "transport": "nccl" also "sizes": [bytes per file] (required, one per file) and "group" (optional).
// "transport": "http" adds "base_url": the receiver pulls base_url/dir/file (docs/bench.md).
// Errors: errc::bad_request naming the field.
result<sync_request> parse_sync_request(std::string_view json, const request_limits& limits = {});

// POST /update_weights_from_disk (SGLang-compatible, as slime #1806 drives it):
// {"model_path": DIR, "load_format": "delta", "weight_version": "N", "files": [...]}. model_path is the
// version directory (absolute, or relative to the delta dir); it must lie inside `delta_dir`, which must be
// canonical (absolute, no symlink: serve resolves it once at start-up); an absolute model_path is compared in
// its canonical form.
result<sync_request> parse_sglang_request(std::string_view json, const std::string& delta_dir,
                                          const request_limits& limits = {});

// Resolves dir/file under delta_dir to absolute paths, refusing (errc::forbidden_path) absolute names,
// "..", empty names, and symlinks that lead outside delta_dir (checked with realpath); a file that does
// not exist is errc::not_found naming it.
result<std::vector<std::string>> resolve_sync_files(const std::string& delta_dir, const sync_request& req);

// One file of a sync, opened (O_PATH) and confined to the delta dir.
struct sync_file {
  std::string path;       // delta_dir/dir/file, for messages
  std::string open_path;  // "/proc/self/fd/N": re-opens exactly the inode checked here (with O_DIRECT if wanted)
  uint64_t bytes = 0;     // from fstat of that inode
  int fd = -1;            // the O_PATH fd, owned by sync_files
};

// The files of one sync, held open for its duration so that nothing swapped into the delta dir after the
// check (a symlink, a rename) is read instead. Move-only; closes the fds.
class sync_files {
 public:
  sync_files() = default;
  sync_files(sync_files&& o) noexcept : files_(std::move(o.files_)) { o.files_.clear(); }
  sync_files& operator=(sync_files&& o) noexcept;
  sync_files(const sync_files&) = delete;
  sync_files& operator=(const sync_files&) = delete;
  ~sync_files();
  std::vector<sync_file>& files() noexcept { return files_; }
  const std::vector<sync_file>& files() const noexcept { return files_; }

 private:
  std::vector<sync_file> files_;
};

// Opens dir/file of every listed file relative to the delta dir's fd with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS) (io::open_beneath). Where openat2 is ENOSYS (kernel < 5.6, seccomp), or when
// use_openat2 is false (tests), falls back to a checked realpath with the same rule: the resolved path must
// equal delta_dir's real path joined with dir/file, i.e. no symlink anywhere below the delta dir.
// Errors: errc::forbidden_path for absolute names, "..", a file name with '/', a path escaping the delta dir
// or crossing a symlink below it; errc::not_found naming a missing file; errc::bad_request for something that
// is not a regular file; an errno error otherwise (EMFILE, EACCES).
result<sync_files> open_sync_files(const std::string& delta_dir, const sync_request& req, bool use_openat2 = true);

}  // namespace deltasync
