// The receiver's run state, shared by its source files (receiver.cc: the pipeline; receiver_commit.cc:
// verification, rollback and commit; receiver_transports.cc: the pull transport's open step and the draining
// refusal of pushed transports). Not a public header: nothing outside src/sync/receiver*.cc includes it.
//
// Threading: like the receiver, every field is owned by the loop thread; workers only touch the file they
// decode and the store during the single apply (or verify / rollback) in flight.
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

struct decoded_file {
  size_t index = 0;
  byte_buffer bytes;  // delta_file views these (or its own storage)
  memory_lease read_lease;  // what `bytes` holds of the sync's memory budget
  std::optional<delta_file> file;
  std::vector<size_t> tensors;  // store index per manifest param
  double decode_ms = 0;
};

}  // namespace receiver_detail

struct receiver::run {
  sync_request req;
  std::function<void(result<sync_stats>)> done;
  sync_files opened;  // held open for the whole sync: what was checked is what is read
  std::vector<std::string> paths;
  std::vector<uint64_t> sizes;
  std::unique_ptr<piece_source> reader;  // disk (chunked_reader), HTTP pull or NCCL
  std::vector<byte_buffer> assembling;  // per file, allocated at its first piece
  std::deque<io::read_piece> held;      // pieces waiting for assembly budget, in arrival order
  uint64_t assembled_bytes = 0;
  std::deque<std::unique_ptr<receiver_detail::decoded_file>> apply_queue;
  bool applying = false;
  size_t tasks = 0;  // worker jobs in flight
  bool reader_done = false;
  size_t files_applied = 0;
  std::optional<error> failure;
  undo_log undo;
  // The sync's memory budget (receiver_options::max_sync_memory_bytes) and what the read buffers and the undo
  // log hold of it; decompressed payloads hold theirs in delta_file::storage_lease.
  std::shared_ptr<memory_budget> memory;
  std::vector<memory_lease> read_leases;  // per file, taken at its first piece, handed to its decoded_file
  memory_lease undo_lease;
  std::map<size_t, digest128> expected;  // native: digests of the new tensors
  // Tensors whose digest matched right after their last apply (checked inside the apply job, while the
  // tensor is hot); finish() re-checks only the others.
  std::set<size_t> verified;
  sync_stats stats;
  stopwatch total;
  bool finishing = false;
  // The stages (start_sync) capture the run and each other; release() empties them once the sync is over,
  // which breaks those reference cycles.
  std::shared_ptr<std::function<void(error)>> fail;
  std::shared_ptr<std::function<void()>> maybe_finish, pump_apply;
  std::shared_ptr<std::function<bool(io::read_piece&)>> accept_piece;
  void release() {
    reader.reset();
    if (fail) *fail = nullptr;
    if (maybe_finish) *maybe_finish = nullptr;
    if (pump_apply) *pump_apply = nullptr;
    if (accept_piece) *accept_piece = nullptr;
  }
  explicit run(uint64_t max_undo) : undo(max_undo) {}
};

}  // namespace deltasync
