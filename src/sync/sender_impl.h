// The Sender's state (struct sender::impl): the snapshot, and the sync in progress with its open buckets (one
// per dtype) and what it changed. sender_impl.cc defines the bucket machinery (a bucket flushed as the next
// file, the publish marker, the end of a sync, the snapshot commit); sender.cc drives it (seed, begin, add,
// finish). Not a public header: nothing outside src/sync/sender*.cc includes it.
//
// Threading: like the sender, one thread drives it.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/file_lock.h"
#include "sync/gpu_sender_path.h"
#include "sync/publish_marker.h"
#include "sync/sender.h"

namespace deltasync {
namespace sender_detail {

using steady = std::chrono::steady_clock;

inline double seconds_since(steady::time_point t0) {
  return std::chrono::duration<double>(steady::now() - t0).count();
}

}  // namespace sender_detail

struct sender::impl {
  struct snapshot_tensor {
    dtype type = dtype::BF16;
    std::vector<uint64_t> shape;
    byte_buffer bytes;
    bool on_gpu = false;  // the bytes live in `gpu` (device or pinned host memory)
    std::optional<digest128> sum;  // additive digest of `bytes` (host tensors; computed at first need)
  };
  // What a sync changed in one tensor, kept until the push is acknowledged. Full mode keeps the whole new
  // tensor in `values` (whole = true) instead of positions 0..n-1.
  struct pending_change {
    dtype type = dtype::BF16;
    std::vector<uint64_t> shape;
    bool whole = false;
    std::vector<uint32_t> positions;
    byte_buffer values;
    std::optional<digest128> new_sum;  // the snapshot's additive digest once this change is committed
  };

  sender_options options;
  push_transport* transport = nullptr;
  // Held from begin() to the end of the sync (disk transport): one sender at a time writes into a delta dir,
  // so a second trainer publishing there cannot replace this sync's version dir or its marker.
  io::file_lock dir_lock;
  std::unique_ptr<gpu_sender_path> gpu;  // created by the first device tensor
  std::unordered_map<std::string, snapshot_tensor> snapshot;

  // The sync in progress.
  bool active = false;
  uint64_t version = 0;
  std::string dir;  // {delta_dir}/weight_v{N:06d}
  // One open bucket per dtype: a bucket mixing BF16 and F32 would promote every BF16 value to F32 and double
  // its value bytes. Together the open buckets stay under buffer_bytes (plus one tensor): when they reach
  // it, the largest is flushed.
  struct bucket {
    explicit bucket(encoding enc) : builder(enc) {}
    delta_bucket_builder builder;
    native_fields native;
    bool on_gpu = false;  // its tensors are in the device bucket of its dtype (gpu_sender_path), not in `builder`
  };
  std::map<dtype, bucket> buckets;
  uint32_t flushes = 0;
  std::set<std::string> added;
  std::unordered_map<std::string, pending_change> pending;
  std::vector<publish_marker::file> written;  // what the publish marker will list
  bool write_failed = false;  // a file could not be written: the dir is removed whatever keep_files says
  sync_report report;
  sync_report last;
  // transport "nccl": the flushes of the sync in progress (broadcast at finish) and the group's owner.
  std::vector<nccl_file> nccl_files;
  std::unique_ptr<nccl_pusher> pusher;
  bool nccl() const noexcept { return options.transport == "nccl"; }

  // Scratch reused across add() calls.
  std::vector<uint32_t> positions;
  byte_buffer values;

  uint64_t open_payload_bytes() const noexcept {
    uint64_t n = 0;
    for (const auto& [type, b] : buckets) n += payload_bytes(type, b);
    return n;
  }
  uint64_t payload_bytes(dtype type, const bucket& b) const {
    return b.on_gpu ? gpu->bucket_payload_bytes(type) : b.builder.payload_bytes();
  }
  bool bucket_empty(dtype type, const bucket& b) const {
    return b.on_gpu ? gpu->bucket_empty(type) : b.builder.empty();
  }

  // A host tensor joins a device bucket: its tensors move to the host builder (same file either way).
  status to_host(dtype type, bucket& b);

  // Writes one bucket as the next file and empties it. A device bucket's file is built on the device and
  // streamed GPU -> pinned -> file (disk), or comes back as host bytes (NCCL, and deltas_zstd to compress).
  status flush(dtype type, bucket& b);
  status flushed(const std::string& name, uint64_t bytes, uint64_t hash, sender_detail::steady::time_point t0);

  // The publish marker, last: every file it lists is already durable under its final name.
  status write_marker();

  void remove_dir();

  // Ends the sync: drops the files unless asked to keep them (or nobody was pushed to), forgets pending
  // changes.
  void end_sync(bool keep);

  void commit();
};

}  // namespace deltasync
