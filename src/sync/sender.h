// The Sender (trainer side): per sync, diffs the current weights bitwise against its snapshot (what every
// receiver is known to hold), encodes changed positions + values per tensor into buckets of
// buffer_bytes, writes each bucket as one file through the atomic writer
// ({delta_dir}/weight_v{N:06d}/rank{R:04d}_flush{F:06d}.safetensors), runs the pre-push hook, then POSTs one
// /sync to every receiver concurrently and waits for all of them.
//
// Publishing is the commit point (docs/fleet.md; disk and HTTP pull transports): once a version's files and
// publish marker are durable and the pre-push hook passed, the snapshot advances to it whatever the receivers
// answered. slime #2104 (a receiver silently missing a change) is ruled out differently: the published
// version dirs above the lowest version any known receiver acknowledged are kept (sync/fleet_state.h keeps
// the per-receiver acknowledged versions in {delta_dir}/fleet.json), and a lagging receiver replays them
// before it applies the next push (sync/catch_up.h). The NCCL transport keeps no files, so there the snapshot
// still advances only when every receiver acknowledged.
//
// Files: every changed tensor lands whole in one bucket (a tensor's delta never splits across files). Each
// dtype has its own open bucket, so __values__ is never promoted (BF16 next to F32 would double the BF16
// values' bytes) and every file holds one dtype; when the open buckets together reach buffer_bytes, the
// largest is flushed (so buffered payload stays under buffer_bytes plus one tensor's). A sync with no change anywhere
// still writes one empty file, so receivers advance their version. Native files carry, per file, the
// XXH3-128 of every param they hold (the full new tensor).
// Full mode ships every element of every added tensor as a delta against nothing (positions 0..n-1);
// receivers apply it like any delta. Tensors not added in a sync are unchanged and not diffed.
// Retention: a published version dir is kept until every known receiver acknowledged it (or a later version);
// without keep_files, dirs at or below that lowest acknowledged version are then pruned, except the newest
// one. With no receivers (files only) every dir is kept. A version dir once published is never rewritten:
// begin() of a version whose dir holds a publish marker is refused. A sync that failed while writing
// (ENOSPC, an I/O error) removes its version dir whatever keep_files says: it is not a usable version.
// Publish marker: after the last file is written and durable, and before the hook and the push, finish()
// writes {dir}/published.json (sync/publish_marker.h) atomically. A dir without it was never fully
// published; crash recovery (sync/recovery.h) never applies one.
//
// Usage:   sender s(options, transport);  s.seed(name, view) for each tensor of the base checkpoint;
//          per sync: s.begin(N); s.add(name, view)...; auto report = s.finish();
// Threading: one thread drives a sender; finish() blocks that thread (never call it on the event loop).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "codec/delta_format.h"
#include "codec/dtype.h"
#include "sync/nccl_push.h"
#include "sync/push_transport.h"

namespace deltasync {

enum class wire_format : uint8_t { slime, native };
enum class update_mode : uint8_t { delta, full };

struct sender_options {
  std::string transport = "disk";  // "disk" or "nccl" (buckets broadcast to receivers: docs/nccl.md)
  update_mode mode = update_mode::delta;
  encoding enc = encoding::deltas;
  wire_format format = wire_format::native;
  // Native files from the host path use the streamable layout "deltasync-native/2" (codec/delta_format.h),
  // which receivers before it refuse as an unknown format; false writes "deltasync-native/1". Files packed on
  // the GPU are always native/1.
  bool native_records = true;
  // slime files carry the base version and each new tensor's digests under deltasync_* keys
  // (codec/delta_format.h), which slime's receiver ignores and ours verifies: a file computed against other
  // weights is refused and rolled back instead of applied. Costs a digest pass per changed tensor, as native
  // files do. False: slime's own keys only (--slime-plain).
  bool slime_digests = true;
  std::string delta_dir;
  std::vector<std::string> receivers;  // "http://host:port"; empty: write files only
  uint64_t buffer_bytes = 512ull << 20;  // --update-weight-buffer-size
  bool keep_files = false;               // --update-weight-delta-keep-files
  std::string pre_push_hook;             // shell command; non-zero exit aborts the push
  std::string pull_base_url;             // set: receivers pull the files from this file server ("transport": "http")
  uint32_t rank = 0;
  uint64_t data_alignment = 4096;        // data section alignment of written files (O_DIRECT)
  // Device tensors (tensor_view device "cuda[:N]"): snapshot bytes kept in GPU memory; past this (or when
  // the device is short of memory) snapshots go to pinned host memory.
  uint64_t gpu_snapshot_budget_bytes = ~uint64_t{0};
  nccl_sender_options nccl;              // transport "nccl" only
  // Full-model anchors (docs/fleet.md): finish() of every committed version that is a multiple of anchor_every
  // (0: never) also calls write_anchor(). Disk / pull transports, host tensors.
  uint64_t anchor_every = 0;
  // Internal (write_anchor's own sender): the version dir is anchor_v{N:06d} and its marker says "anchor".
  bool anchor_layout = false;
  // Fault injection for tests only (publish reads env DELTASYNC_TEST_FLUSH_DELAY_MS): sleep this long after
  // each file is written, so a test can kill the writer between two files deterministically.
  uint32_t test_flush_delay_ms = 0;
};

struct tensor_view {
  const void* data = nullptr;
  dtype type = dtype::BF16;
  std::vector<uint64_t> shape;
  std::string device = "cpu";  // "cpu", or "cuda" / "cuda:N" for device memory (a CUDA build)
};

struct sync_report {
  uint64_t version = 0;
  uint64_t base_version = 0;
  uint64_t changed_elements = 0;
  uint64_t dense_bytes = 0;
  uint64_t wire_bytes = 0;
  std::vector<std::string> files;  // names inside the version dir
  double diff_encode_s = 0, write_s = 0, hook_s = 0, push_s = 0;
  std::vector<push_outcome> receivers;
  bool snapshot_advanced = false;
  // Disk/pull transports with receivers: each known receiver's acknowledged version after this push (from
  // {delta_dir}/fleet.json), and the published version dirs this sync pruned (all acknowledged).
  std::map<std::string, uint64_t> acked;
  std::vector<uint64_t> pruned;
  // The full-model anchor finish() wrote for this version (sender_options::anchor_every), 0 when none; when
  // writing it failed (the sync itself stands), why.
  uint64_t anchor_version = 0;
  std::string anchor_error;
};

class sender {
 public:
  // `transport` may be null when options.receivers is empty.
  sender(sender_options options, push_transport* transport);
  ~sender();

  // Records what the receivers hold before the first sync (the base checkpoint; a host copy is kept), at
  // snapshot_version(). Seeding a name again replaces it. Refused while a sync is begun.
  status seed(const std::string& name, const tensor_view& t);
  void set_snapshot_version(uint64_t v) noexcept { snapshot_version_ = v; }
  // A restarted Sender (after seed()): the snapshot version becomes `version`, or when nullopt the newest
  // version published in the delta dir (the highest weight_vN holding a publish marker; 0 when none), and is
  // returned. When that version's dir holds a publish marker and native files, every seeded host tensor they
  // carry a tensor_xxh3_128 for must hash to it: otherwise errc::version_conflict naming the tensor (the seeded
  // checkpoint is not that version; the snapshot version is then 0 and no sync should begin). Errors also:
  // errc::invalid_argument (a sync in progress; nullopt without a delta dir), the marker's or a file's read or
  // parse error.
  result<uint64_t> resume(std::optional<uint64_t> version = std::nullopt);
  uint64_t snapshot_version() const noexcept { return snapshot_version_; }

  // Starts sync `version` (> snapshot_version()): creates {delta_dir}/weight_v{N:06d}/, removing a stale
  // one (no publish marker) first; a dir that holds a publish marker is errc::version_conflict (a published
  // version is never rewritten: use a new version number). Errors: errc::invalid_argument (a sync already begun, a version not above the snapshot's, no
  // delta_dir, receivers without a transport; nccl without receivers), errc::unsupported (a transport other
  // than "disk" or "nccl"), errc::io_error (the directory). The nccl transport writes no files: each flush is
  // kept in memory and broadcast by finish() (delta_dir is then only the name space of the version).
  status begin(uint64_t version);
  // Adds the current value of a tensor. Unknown names (not seeded) are refused in delta mode; in full mode
  // they join the snapshot when the sync commits. Errors (errc::invalid_argument): no sync begun, a name
  // added twice, dtype/shape differing from the snapshot, a non-"cpu" device, sub-byte dtypes;
  // errc::limit_exceeded: 2^32 or more elements (positions are uint32). The data is read during add()
  // (diffed and encoded right away); the caller may reuse its buffer after add returns.
  status add(const std::string& name, const tensor_view& t);
  // Flushes the last bucket, runs the hook (`/bin/sh -c CMD` with DELTASYNC_VERSION and DELTASYNC_DIR set;
  // a non-zero exit is errc::io_error "pre-push hook exited N" and nothing is pushed), POSTs /sync to every
  // receiver and waits for all of them. Disk/pull transports: once the marker is durable and the hook passed
  // the version is committed and the snapshot advances, whatever the receivers answered; receivers that did
  // not answer 200 make finish() return errc::receiver_failed naming each and what it said (the version is
  // still published: they catch up at the next push; report().snapshot_advanced is true), unless EVERY
  // receiver answered 422 (its files refused as invalid): the version is then withdrawn (dir removed,
  // snapshot kept, the next sync carries its changes). A hook failure
  // removes the version dir (it was never published) and keeps the snapshot. NCCL: any receiver failure keeps
  // the snapshot (the next sync carries the changes again). The sync ends either way; the report, with
  // per-receiver outcomes, is available from last_report() in both cases.
  result<sync_report> finish();
  // Writes a full-model anchor of the snapshot (what receivers hold at snapshot_version() = N):
  // {delta_dir}/anchor_v{N:06d}/ with native full-mode files (every element of every tensor, each tensor's
  // XXH3-128) and a publish marker saying "anchor": true. A receiver at any version below N catches up by
  // applying it, then the chain above N (sync/recovery.h), so older chains need not be kept: once it is
  // durable the older anchors are removed and, without keep_files and with receivers, every published
  // version dir at or below N except N's own. An anchor already there is kept as it is. Returns its dir.
  // Errors: errc::invalid_argument (a sync in progress, version 0, the nccl transport, no delta dir),
  // errc::unsupported (a device snapshot), the write's errors (the partial dir is removed).
  result<std::string> write_anchor();
  void set_anchor_every(uint64_t k) noexcept;
  // Drops the sync begun (files already written are removed unless keep_files).
  void abort();
  // The report of the last finish(), successful or not (outcomes of a failed push included).
  const sync_report& last_report() const noexcept;
  bool in_sync() const noexcept;

 private:
  result<sync_report> finish_sync();
  struct impl;
  std::unique_ptr<impl> impl_;
  uint64_t snapshot_version_ = 0;
};

}  // namespace deltasync
