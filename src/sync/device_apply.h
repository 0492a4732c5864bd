// The device apply engine shared by the two stores whose tensors live in CUDA memory: cuda_weight_store (its
// own allocations) and borrowed_weight_store (a caller's tensors). It takes one param of a parsed delta file
// as the file holds it and does the whole apply on the device:
//
//   * the param's raw bytes (encoded positions, values) go host -> device once, through a ring of pinned
//     staging slots (the copy into slot k+1 overlaps the H2D of slot k);
//   * `indices` / `deltas` positions are decoded there (gap prefix sums), checked there (strictly ascending,
//     in bounds) together with the values' cast, and scattered only when every check passed, saving the
//     overwritten values first (gpu::decode_scatter); a compact stream is decoded there too
//     (gpu::compact_decode);
//   * one 32-byte status comes back per param, from which the refusal is built with exactly the host
//     decoder's error code and text (codec decode_positions), so both stores refuse as they always did;
//   * the undo record keeps the encoded positions and the old values in device memory (an arena reused by
//     later syncs, bounded; past its bound or when the device is full, the record falls back to host memory).
//
// No work per element runs on the host. Errors name the tensor ("tensor \"x\": ...").
//
// Threading: apply() of distinct tensors may run on several threads at once: each call takes one of a few
// lanes (stream, staging ring, scratch). restore() runs with nothing else in flight (rollback).
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "base/result.h"
#include "sync/weight_store.h"

namespace deltasync {

struct device_apply_options {
  // Device memory the undo arena may hold (saved positions and old values of one sync); past it, records
  // keep their bytes on the host.
  uint64_t max_arena_bytes = 4ull << 30;
  // The previous path, kept as the benchmark's baseline: positions decoded on the host (codec
  // decode_positions), uploaded as uint32, old values copied back into a host undo record.
  bool host_decode = false;
};

// The checks every store makes before it touches tensor t (dtype, sub-byte dtype, shape, the param's ranges
// within the file's blobs, the undo limit), with the messages the stores have always given.
status check_param(const store_tensor& t, const delta_file& f, const param_entry& p, const undo_log& undo);

class device_apply_engine {
 public:
  // Lanes on `device` (made current). Errors: unsupported (no GPU), internal.
  static result<std::unique_ptr<device_apply_engine>> create(int device, device_apply_options options = {});
  ~device_apply_engine();
  device_apply_engine(const device_apply_engine&) = delete;
  device_apply_engine& operator=(const device_apply_engine&) = delete;

  int device() const noexcept { return device_; }
  // Between syncs only (no apply in flight).
  void set_options(const device_apply_options& o);

  // Applies param p of f to the device tensor `dest` described by t (store index `tensor`, kept in the record):
  // check_param, then the device decode, checks and scatter. On error dest is untouched and nothing was
  // recorded; on success one record (count > 0) is appended to `undo` and its bytes reserved.
  status apply(size_t tensor, void* dest, const store_tensor& t, const delta_file& f, const param_entry& p,
               undo_log& undo);
  // Writes a record's old values back into dest (the tensor it was applied to). Asserts on a device failure.
  void restore(void* dest, const store_tensor& t, const undo_log::record& rec);

  digest128 digest(const void* data, uint64_t bytes);
  status copy_h2d(void* dst, const void* src, uint64_t bytes);
  status copy_d2h(void* dst, const void* src, uint64_t bytes);
  status copy_d2d(void* dst, const void* src, uint64_t bytes);

  // Device bytes the undo arena holds now (benchmarks, tests).
  uint64_t arena_bytes() const;

 private:
  struct lane;
  class lane_lease;
  class arena;
  explicit device_apply_engine(int device, device_apply_options options);
  lane_lease take_lane();
  status apply_positions(size_t tensor, void* dest, const store_tensor& t, const delta_file& f, const param_entry& p,
                         undo_log::record& rec);
  status apply_host_decode(void* dest, const store_tensor& t, const delta_file& f, const param_entry& p,
                           undo_log::record& rec);
  status apply_compact(void* dest, const store_tensor& t, const delta_file& f, const param_entry& p,
                       undo_log::record& rec);

  int device_;
  device_apply_options options_;
  std::shared_ptr<arena> arena_;
  std::mutex lanes_mu_;
  std::condition_variable lanes_cv_;
  std::vector<std::unique_ptr<lane>> lanes_;
  std::vector<lane*> free_lanes_;  // guarded by lanes_mu_
};

}  // namespace deltasync
