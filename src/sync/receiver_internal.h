// The receiver's run state, shared by its source files (receiver.cc: the request; receiver_stream.cc: the
// pipeline from pieces to the store; receiver_commit.cc:
// verification, rollback and commit; receiver_transports.cc: the pull transport's open step and the draining
// refusal of pushed transports). Not a public header: nothing outside src/sync/receiver*.cc includes it.
//
// Threading: like the receiver, every field is owned by the loop thread; workers only touch the file they
// decode and the store during the applies of the head file (distinct tensors) or the verify / rollback.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/memory_budget.h"
#include "base/page_block.h"
#include "base/metrics.h"
#include "io/chunked_reader.h"
#include "sync/receiver.h"

namespace deltasync {

struct receiver::counters {
  metric_counter* syncs_ok = nullptr;
  metric_counter* syncs_failed = nullptr;
  metric_counter* bytes_read = nullptr;
  metric_counter* changed = nullptr;
  metric_gauge* version = nullptr;
  metric_histogram *read = nullptr, *decode = nullptr, *apply = nullptr, *verify = nullptr, *total = nullptr;
};

namespace receiver_detail {

// sync_request::expect (receiver.cc): every file's size against its publish marker's, before anything is read,
// and one file's bytes against the marker's XXH3-64, in the pipeline. Both succeed when nothing is expected.
status check_expected_sizes(const sync_request& req, const std::vector<uint64_t>& sizes,
                            const std::vector<std::string>& paths);
status check_expected_hash(const sync_request& req, size_t i, byte_span bytes, const std::string& path);

struct decoded_file {
  size_t index = 0;
  page_block bytes;  // delta_file views these (or its own storage)
  std::optional<delta_file> file;
  std::vector<size_t> tensors;  // store index per manifest param
  double decode_ms = 0;
};

// One listed file on its way from the source to the store (receiver_stream.cc). Files apply strictly in
// listed order (`run::head`): a later file's pieces are assembled and decoded meanwhile, never applied.
// Two paths:
// * streamed: the file is plain (not a zstd frame), its header came in before its last piece and passed
//   parse_delta_file without the payload checks and check_against_store. Each param is applied (on the
//   workers, in parallel) as soon as the received prefix covers its value range (__values__ follows
//   __positions__ in the file, so its positions are in too); a param error is held, not reported. Once the
//   whole file is in and every param has run, the file is parsed again, whole and with every check: its
//   error (checksum, payload hash, ...) wins over a held param error, so a file is refused for the same
//   reason as when it was applied whole.
// * whole: everything else (a zstd frame, a header that fails its checks, a file read in one piece, an
//   undo log that would pass its budget): decoded when complete, applied when it is the head file.
struct file_slot {
  page_block bytes;               // allocated at the first piece (the file's size; not zero-filled)
  bool allocated = false;
  uint64_t received = 0;          // a prefix: pieces of one file arrive in order
  bool complete = false;          // its last piece is in
  std::deque<io::read_piece> held;  // pieces waiting for assembly budget, in arrival order
  bool header_tried = false;      // the streamed path's header parse was started
  bool header_pending = false;
  bool decoding = false;          // whole path: its decode is in flight
  std::unique_ptr<decoded_file> d;  // streamed: from the header; whole: the decoded file
  bool stream = false;            // streamed path chosen (header passed)
  bool whole_ready = false;       // whole path: decoded and checked
  // The head file's apply.
  bool started = false;           // undo budget checked, first param dispatched
  size_t next_param = 0;          // streamed: params dispatched so far (a prefix of the manifest)
  size_t params_done = 0;
  size_t jobs_in_flight = 0;
  bool verifying = false;         // streamed: the final whole-file parse is in flight
  bool checked = false;           // streamed: the final whole-file parse passed
  std::optional<error> param_error;  // streamed: first param failure, reported after the final parse
  std::vector<size_t> matched;    // tensors whose native digest matched right after their apply
  double apply_ms = 0;
};

}  // namespace receiver_detail

struct receiver::run {
  sync_request req;
  std::function<void(result<sync_stats>)> done;
  sync_files opened;  // held open for the whole sync: what was checked is what is read
  std::vector<std::string> paths;
  std::vector<uint64_t> sizes;
  std::unique_ptr<piece_source> reader;  // disk (chunked_reader), HTTP pull or NCCL
  std::vector<receiver_detail::file_slot> slots;  // per listed file
  size_t head = 0;  // the file being applied: every earlier one is applied, no later one has started
  uint64_t current_version = 0;  // the store's version when the sync started
  uint64_t assembled_bytes = 0;
  size_t tasks = 0;  // worker jobs in flight
  bool reader_done = false;
  size_t files_applied = 0;
  std::optional<error> failure;
  undo_log undo;
  // The sync's memory budget (receiver_options::max_sync_memory_bytes) and what the read buffers and the undo
  // log hold of it; decompressed payloads hold theirs in delta_file::storage_lease.
  std::shared_ptr<memory_budget> memory;
  std::vector<memory_lease> read_leases;  // per file, taken at its first piece, given back once it is applied
  memory_lease undo_lease;
  std::map<size_t, digest128> expected;  // native: XXH3-128 digests of the new tensors (checked by hashing them)
  // native: additive digests (tensor_sum128) of the new tensors whose store keeps one: checked against
  // weight_store::sum() in O(1) each, instead of `expected` (a tensor is in one of the two maps).
  std::map<size_t, digest128> expected_sum;
  // Tensors whose digest matched right after their last apply (checked inside the apply job, while the
  // tensor is hot); finish() re-checks only the others.
  std::set<size_t> verified;
  std::vector<size_t> touched;  // tensors the sync's applies were dispatched to (their /checksums go stale)
  sync_stats stats;
  stopwatch total;
  bool finishing = false;
  // The source's callbacks capture the run; release() drops the source once the sync is over, which breaks
  // that reference cycle.
  void release() { reader.reset(); }
  explicit run(uint64_t max_undo) : undo(max_undo) {}
};

}  // namespace deltasync
