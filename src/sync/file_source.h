// file_source: where a sync's file bytes come from. The receiver's pipeline (assemble -> decode -> apply
// queue) consumes pieces of pool buffers from one of these, whatever the transport:
// * the disk transport reads the delta dir with io::chunked_reader (make_disk_file_source);
// * the HTTP pull transport (POST /sync with "transport": "http") fetches the files with Range requests; its
//   implementation lives in src/http (http::pull_opener) and is handed to the receiver as a
//   remote_file_opener, so this module does not depend on the HTTP client.
//
// Contract of a file_source (= piece_source; the same as io::chunked_reader's):
// * Threading: start() and cancel() on the loop thread; on_piece and on_done run there.
// * Pieces of one file arrive in offset order (the first at offset 0), each in a pool buffer that the
//   consumer releases; an empty file is one empty piece. Files may interleave.
// * on_done runs once, after the last piece or with the first error (no piece follows it), once nothing
//   is in flight; the source may be destroyed from inside on_done or after it, not before.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "io/chunked_reader.h"
#include "sync/piece_source.h"

namespace deltasync {

// One interface for every transport's source (sync/piece_source.h); this header keeps the pull side's name.
using file_source = piece_source;

// The disk implementation: io::chunked_reader over `files`.
std::unique_ptr<file_source> make_disk_file_source(io::io_backend& backend, io::buffer_pool& pool,
                                                   std::vector<io::read_file_spec> files,
                                                   const io::chunked_reader_options& options);

// The names of a pull sync: dir and files must be plain relative names (no "..", no absolute path, files
// without '/'), the same rule as the disk transport; errc::forbidden_path otherwise. root_ok: an empty dir names
// base_url itself (receiver::fetch_remote_file of fleet.json; a sync's dir is never empty).
status check_remote_names(const std::string& dir, const std::vector<std::string>& files, bool root_ok = false);

// What a pull sync asks a remote_file_opener for: files `dir`/`files[i]` under base_url.
struct remote_fetch {
  std::string base_url;  // "http://host:port[/prefix]"
  std::string dir;       // the version dir, e.g. "weight_v000012"; empty: base_url itself (fleet.json, never a sync)
  std::vector<std::string> files;
  uint64_t chunk_bytes = 4ull << 20;  // bytes per request (capped at the pool's buffer size)
  uint32_t read_workers = 8;          // requests (connections) in flight
  uint64_t max_file_bytes = 8ull << 30;
};

struct remote_files {
  std::vector<uint64_t> sizes;  // per file, as the server announced
  std::vector<std::string> urls;
  std::unique_ptr<file_source> source;  // reads exactly `sizes` bytes of each file (any other length fails)
};

// Opens a remote sync: learns every file's size, then returns a source that fetches them into `pool`'s
// buffers. Threading: open() on the loop thread; done runs on the loop thread (never inline). Errors:
// errc::invalid_argument (a bad base URL), errc::not_found (a missing file), errc::upstream_error (a
// server that cannot be reached or answers an error), errc::limit_exceeded (a file over max_file_bytes),
// errc::forbidden_url (a base URL the opener is not allowed to fetch from).
class remote_file_opener {
 public:
  virtual ~remote_file_opener() = default;
  virtual void open(const remote_fetch& what, io::buffer_pool& pool, std::function<void(result<remote_files>)> done) = 0;
};

}  // namespace deltasync
