// The Sender's GPU side, for tensors given as device pointers (tensor_view device "cuda" or "cuda:N").
// seed() keeps the snapshot on the device when it fits under the device budget, else in pinned host memory
// (then the diff stages it back chunk by chunk, prefetching the next chunk while the current one is diffed).
// diff() runs the device diff + compaction and brings back only the changes (ascending uint32 positions and
// the new values) for the Sender's buckets, plus the device XXH3-128 of the new tensor for native files.
// commit() applies an acknowledged change to the snapshot (scatter on the device, or on the host copy).
//
// Threading: one thread (the Sender's). All device tensors of one sender live on one device.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "codec/digest.h"
#include "codec/dtype.h"

namespace deltasync {

class gpu_sender_path {
 public:
  // `device_budget_bytes`: device memory the snapshots may take (0: always pinned host memory).
  explicit gpu_sender_path(uint64_t device_budget_bytes);
  ~gpu_sender_path();
  gpu_sender_path(const gpu_sender_path&) = delete;
  gpu_sender_path& operator=(const gpu_sender_path&) = delete;

  // "cuda" or "cuda:N" -> N (0 for "cuda"); -1 for anything else.
  static int device_index(std::string_view device) noexcept;

  status seed(const std::string& name, const void* data, int device, dtype type, uint64_t numel);
  bool has(const std::string& name) const { return snaps_.count(name) != 0; }
  bool on_device(const std::string& name) const;
  // Errors: unsupported (no GPU), invalid_argument (unknown name, another device), CUDA errors.
  status diff(const std::string& name, const void* data, int device, std::vector<uint32_t>& positions,
              byte_buffer& values, digest128* digest);
  status commit(const std::string& name, const std::vector<uint32_t>& positions, byte_span values);

 private:
  struct state;
  struct snapshot;
  std::unique_ptr<state> st_;
  std::unordered_map<std::string, std::unique_ptr<snapshot>> snaps_;
};

}  // namespace deltasync
