// The receiver pipeline: one sync = validate the request and paths -> read the sync's files in pieces of
// chunk_bytes with read_workers reads in flight (io::chunked_reader) -> assemble each file -> decode and
// validate it on the worker pool -> apply (one file at a time IN LISTED ORDER, its params in parallel on every
// worker, with an undo log; each native tensor's XXH3-128 is checked right after its apply, while it is hot)
// -> verify what was not checked yet -> commit the version. Each file is read once.
// Streaming inside a file: once a plain file's header is in and valid, each param is applied as soon as its
// position and value ranges have arrived, while the rest of the file is still being read; the whole file is
// then checked (checksum / payload hash) before the next file applies, and a failure rolls everything back
// with the error the whole-file path gives (receiver_internal.h, file_slot). zstd frames apply whole.
// Order: when two files of one sync change the same element, the later-listed file's value is what the
// store holds after commit (and after a --recover replay): the result never depends on read timing.
//
// Transactional: any failure (bad request, missing file, invalid file, digest mismatch, I/O error) leaves the
// store bit-identical — applied params are rolled back from the undo log once nothing is in flight.
// One sync at a time: a second start_sync while one runs fails with errc::busy.
// GET /checksums (checksums()): the exact XXH3-128 of every tensor, hashed on the workers one tensor at a time
// between syncs and cached per tensor until a sync touches it (receiver_checksums.cc). It never refuses a
// sync: a sync that arrives while a tensor is being hashed starts as soon as that one tensor is done.
//
// Threading: construct, start_sync and every accessor on the loop thread; `done` runs on the loop thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/metrics.h"
#include "base/result.h"
#include "sync/piece_source.h"
#include "sync/sync_request.h"
#include "sync/weight_store.h"

namespace deltasync::io {
class event_loop;
class io_backend;
class buffer_pool;
class worker_pool;
}  // namespace deltasync::io

namespace deltasync {

class remote_file_opener;

struct receiver_options {
  std::string delta_dir;
  uint64_t chunk_bytes = 4ull << 20;      // --update-weight-delta-chunk-bytes
  uint32_t read_workers = 8;              // --update-weight-delta-read-workers
  uint64_t max_file_bytes = 8ull << 30;   // one delta file (and its decompressed payload)
  uint64_t max_sync_bytes = 64ull << 30;  // all files of one sync
  uint64_t max_decompressed_bytes = 8ull << 30;  // a deltas_zstd file's decompressed payload
  uint64_t max_params_per_file = 1u << 20;       // tensors (manifest params) in one delta file
  uint64_t max_manifest_bytes = 64ull << 20;     // a delta file's safetensors header (the manifest lives there)
  uint64_t max_undo_bytes = 16ull << 30;  // overwritten bytes kept for rollback
  uint64_t max_assembled_bytes = 4ull << 30;  // file bytes held between read and apply (back-pressure)
  // One sync's memory budget (serve --max-sync-memory-bytes): whole-file read buffers, decompressed zstd
  // payloads and the undo log are all taken from it before they are allocated. A file that does not fit
  // waits while other files are in flight (they give their bytes back once applied); with nothing left to
  // wait for, the sync is refused (413 naming the key) and rolled back.
  uint64_t max_sync_memory_bytes = 16ull << 30;
  request_limits limits;
  // Fault injection for tests only (serve reads env DELTASYNC_TEST_APPLY_DELAY_MS): each file's apply
  // first sleeps this long, so a test can hold a sync in flight deterministically.
  uint32_t test_apply_delay_ms = 0;
};

struct sync_stats {
  uint64_t version = 0;
  uint64_t base_version = 0;
  uint64_t files = 0;
  uint64_t changed_elements = 0;
  uint64_t bytes_read = 0;
  uint64_t params = 0;
  double read_ms = 0;    // first read issued -> last piece delivered
  double decode_ms = 0;  // summed over files (worker time)
  double apply_ms = 0;   // worker time: per file, its slowest job (whole) or its jobs summed (streamed)
  double verify_ms = 0;  // digests left to check after the last apply (most are checked inside apply)
  double total_ms = 0;   // request accepted -> committed
  uint64_t streamed_files = 0;  // files whose params were applied while the file was still arriving
  uint64_t split_params = 0;    // params whose apply was split across workers (weight_store::applies_slices)
  bool native = false;
};

class receiver {
 public:
  receiver(io::event_loop& loop, io::io_backend& backend, io::buffer_pool& pool, io::worker_pool& workers,
           weight_store& store, receiver_options options, metrics_registry* metrics);
  ~receiver();
  receiver(const receiver&) = delete;
  receiver& operator=(const receiver&) = delete;

  void start_sync(sync_request req, std::function<void(result<sync_stats>)> done);
  // Serves syncs of transport `name` (e.g. "nccl") from sources made by `factory` (docs/nccl.md). Such a
  // sync announces its files' sizes; one refused after its source exists still drains the announced bytes.
  void set_transport(std::string name, transport_source_factory factory);
  bool busy() const noexcept;  // a sync is in flight (or waits for the one tensor /checksums is hashing)
  // The XXH3-128 of every tensor in store order, all at one version (`version`): computed when asked (per
  // tensor on the workers, between syncs), cached until a sync touches the tensor. A sync in flight is waited
  // for; a sync that arrives meanwhile runs first, and what it touched is hashed again. Concurrent calls share
  // one pass. `done` runs on the loop thread; errc::busy only when the worker pool refuses the work.
  struct checksums_result {
    uint64_t version = 0;
    std::vector<digest128> digests;
  };
  void checksums(std::function<void(result<checksums_result>)> done);
  const std::optional<sync_stats>& last_sync() const noexcept { return last_; }
  const std::optional<error>& last_error() const noexcept { return last_error_; }
  weight_store& store() noexcept { return store_; }
  // Enables the HTTP pull transport ("transport": "http"): the opener fetches the files (src/http's
  // pull_opener). Null (the default) refuses such syncs as unsupported. Must outlive the receiver.
  void set_remote_opener(remote_file_opener* opener) noexcept { remote_ = opener; }
  bool pulls() const noexcept { return remote_ != nullptr; }
  // One whole small file base_url/dir/name (dir empty: base_url/name) over the pull transport (a version's
  // publish marker for catch-up, the Sender's fleet.json for serve --recover-from):
  // the same opener, allow-list, answer checks and retries as a pull sync's files; over max_bytes is
  // errc::limit_exceeded, a missing file errc::not_found. On the loop thread; done runs there (never inline
  // once the request went out). Needs no idle receiver: it reads into the pool, writes nothing.
  void fetch_remote_file(const std::string& base_url, const std::string& dir, const std::string& name,
                         uint64_t max_bytes, std::function<void(result<std::string>)> done);
  const receiver_options& options() const noexcept { return options_; }

  struct run;  // one sync in flight (receiver_internal.h)
  struct pipeline;  // its stages (receiver_stream.cc)

 private:
  void finish(std::shared_ptr<run> r);
  void refuse_draining(std::unique_ptr<piece_source> source, error e, std::function<void(result<sync_stats>)> done);
  void start_pipeline(std::shared_ptr<run> r, uint64_t cur);  // read -> decode -> apply, once r->reader is set
  void start_pull(sync_request req, std::function<void(result<sync_stats>)> done, uint64_t cur);
  void checksum_step();                     // next tensor of the /checksums pass, or its answer
  void touched(const std::vector<size_t>& tensors);  // a sync ended that wrote these: their digests are stale

  io::event_loop& loop_;
  io::io_backend& backend_;
  io::buffer_pool& pool_;
  io::worker_pool& workers_;
  weight_store& store_;
  receiver_options options_;
  remote_file_opener* remote_ = nullptr;
  std::shared_ptr<run> current_;
  std::map<std::string, transport_source_factory> transports_;
  std::optional<sync_stats> last_;
  std::optional<error> last_error_;
  // /checksums (receiver_checksums.cc). tensor_gen_[i] counts the syncs that wrote tensor i; a cached digest
  // is current while its generation equals it.
  struct cached_digest {
    uint64_t gen = 0;
    digest128 digest;
  };
  std::vector<uint64_t> tensor_gen_;
  std::vector<std::optional<cached_digest>> digest_cache_;
  std::vector<std::function<void(result<checksums_result>)>> checksum_waiters_;
  bool hashing_ = false;  // a worker is hashing one tensor: a sync that arrives now waits in deferred_
  std::optional<std::pair<sync_request, std::function<void(result<sync_stats>)>>> deferred_;
  struct counters;
  std::unique_ptr<counters> m_;
};

// The HTTP status DESIGN.md assigns to an error code (400, 403, 404, 409, 413, 422, 503, 500).
unsigned http_status_for(const error& e) noexcept;

}  // namespace deltasync
