// The Sender's GPU side, for tensors given as device pointers (tensor_view device "cuda" or "cuda:N").
// seed() keeps the snapshot on the device when it fits under the device budget, else in pinned host memory
// (then the diff stages it back chunk by chunk, prefetching the next chunk while the current one is diffed).
// diff() runs the device diff + compaction + position encoding and keeps the tensor's changes on the device
// (raw uint32 positions and values, until commit() or drop_pending()). For native files start_digest() takes
// the device XXH3-128 of the new tensor: it reads the tensor before returning, and the rest of the hash runs
// on side streams until await_digests() (the Sender calls it before building a file), so the digests of a
// sync's tensors overlap instead of each taking a 256 MiB tensor's 6.4 ms in turn. The encoded changes then go either into the device bucket of their dtype
// (bucket_last: the bucket's file is built on the device, bit-identical to delta_bucket_builder's) or back to
// the host (fetch: for a bucket that also holds host tensors). finish_bucket() builds the bucket's file on the
// device ([header | __positions__ | __values__], the slime checksum, payload hash and file hash computed
// there); write() streams it GPU -> pinned -> file through the io_uring writer, or the caller takes host bytes
// (the NCCL transport, and deltas_zstd, which is compressed on the host).
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
#include "codec/delta_format.h"
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
  // Diffs and encodes (positions as `enc` writes them); `changed` gets the change count. The changes stay
  // pending on the device until commit() / drop_pending().
  // Errors: unsupported (no GPU), invalid_argument (unknown name, another device), CUDA errors.
  status diff(const std::string& name, const void* data, int device, encoding enc, uint64_t& changed);
  // Starts the XXH3-128 of `name`'s new bytes at `data` (read before it returns); *dest gets the digest in
  // await_digests(), so `dest` must stay valid until then (or until drop_digests()).
  status start_digest(const std::string& name, const void* data, digest128* dest);
  status await_digests();
  // The additive digest (tensor_sum128) of `name`'s new bytes at `data`, computed now on the device.
  result<digest128> sum_digest(const std::string& name, const void* data);
  void drop_digests() noexcept;  // forgets every started digest without writing to its dest
  // The pending changes of `name`, copied to the host.
  status fetch(const std::string& name, std::vector<uint32_t>& positions, byte_buffer& values);
  // The compact stream (codec/compact.h) of the pending changes of `name`, encoded on the device against the
  // snapshot's values (what the receiver holds), copied to the host. Byte for byte the host encoder's stream.
  status encode_compact(const std::string& name, byte_buffer& stream);
  // Appends the last diff() (of `name`, with changes) to the device bucket of `type` (buckets hold one dtype).
  status bucket_last(dtype type, const std::string& name, const std::vector<uint64_t>& shape);
  uint64_t bucket_payload_bytes(dtype type) const;  // positions + values, as delta_bucket_builder counts them
  bool bucket_empty(dtype type) const;
  struct bucket_param {
    std::string name;
    std::vector<uint64_t> shape;
  };
  std::vector<bucket_param> bucket_params(dtype type) const;
  void bucket_clear(dtype type);

  // The file of the device bucket of `type` (emptied on success). With `to_host` the bytes come back in
  // `host` (zstd-wrapped for deltas_zstd); otherwise the file stays on the device for write().
  struct built_file {
    byte_buffer host;
    uint64_t bytes = 0;     // file size
    uint64_t xxh3_64 = 0;   // of the whole file (the publish marker's hash)
  };
  result<built_file> finish_bucket(dtype type, encoding enc, uint64_t version, uint64_t data_alignment,
                                   const native_fields* native, bool to_host);
  // Writes the last device-built file to `path` atomically (GPU -> pinned -> io_uring writer).
  status write(const std::string& path);

  status commit(const std::string& name);
  void drop_pending();

 private:
  struct state;
  struct snapshot;
  std::unique_ptr<state> st_;
  std::unordered_map<std::string, std::unique_ptr<snapshot>> snaps_;
};

}  // namespace deltasync
