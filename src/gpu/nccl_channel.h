// The NCCL transport's wire: one member's end of a broadcast group whose rank 0 is the sender. Bytes
// travel GPU to GPU with ncclBroadcast (root 0) through device staging buffers; NCCL and CUDA types stay
// inside nccl_channel.cc. Without NCCL (DELTASYNC_HAVE_NCCL == 0) every entry point reports
// errc::unsupported "NCCL transport not built".
//
// broadcast_channel is an interface so that src/sync's sequencing (who posts what when, failure paths) is
// tested on machines without GPUs against an in-process fake (tests/sync/fake_channel.h).
//
// Contract
// * Threading: one thread drives a channel at a time (NCCL communicators are not thread-safe); abort()
//   may be called from any thread and makes the driving thread's call return errc::cancelled soon.
// * Bounded waits: every call waits at most timeout_ms without progress (a chunk moved); then the
//   communicator is aborted (ncclCommAbort), the channel is broken and every later call fails at once.
//   The same happens on an NCCL async error (a peer died) and when `cancel` becomes true.
// * Chunking: a payload moves in ncclBroadcast calls of at most chunk_bytes; the sender and every
//   receiver must use the same chunk_bytes (the group's set-up carries it), so the calls pair up.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/bytes.h"
#include "base/result.h"

namespace deltasync::gpu {

inline constexpr size_t nccl_unique_id_bytes = 128;  // NCCL_UNIQUE_ID_BYTES
using nccl_unique_id = std::array<std::byte, nccl_unique_id_bytes>;

// Ok when this build has NCCL; errc::unsupported "NCCL transport not built" otherwise.
status nccl_available();
// Visible CUDA devices (0 when none), or an error when CUDA cannot be asked (stub: unsupported).
result<int> cuda_device_count();
// A fresh ncclUniqueId (rank 0 creates it and hands it to every other rank out of band).
result<nccl_unique_id> nccl_new_unique_id();
// Page-locks host memory for fast D2H/H2D copies with every device (cudaHostRegister, portable), using
// `device`'s context; unregister before unmapping it.
status cuda_host_register(void* addr, size_t bytes, int device = 0);
void cuda_host_unregister(void* addr) noexcept;

std::string base64_encode(byte_span bytes);
// Errors: errc::bad_request for characters outside the standard alphabet or a bad length.
result<byte_buffer> base64_decode(std::string_view text);

struct channel_params {
  nccl_unique_id id{};
  int nranks = 2;
  int rank = 0;
  int device = 0;                         // CUDA device of this member
  // Largest ncclBroadcast; identical on every member. Two staging buffers of this size per member. 256 MiB
  // reaches 0.93x of one raw ncclBroadcast on H200 NVLink, 64 MiB only 0.88x (bench/RESULTS.md).
  uint64_t chunk_bytes = 256ull << 20;
  uint32_t timeout_ms = 60'000;           // longest wait without progress
};

// Where received bytes go. The channel copies each received chunk out of device staging in pieces:
// host(offset, max) names host memory for the next bytes at `offset` (up to `max` of them; an empty span
// means "discard them": drained without a copy), filled(offset, n) says they are in. A device consumer
// (a device weight store) implements device() instead and gets the staging pointer itself, valid during
// the call; the channel then copies nothing to the host.
class receive_sink {
 public:
  virtual ~receive_sink() = default;
  virtual bool wants_device() const noexcept { return false; }
  virtual result<mutable_byte_span> host(uint64_t offset, size_t max) = 0;
  virtual status filled(uint64_t offset, size_t n) = 0;
  // Only when wants_device(): `dev` is device memory on the channel's device holding n bytes at offset.
  virtual status device(uint64_t /*offset*/, const void* /*dev*/, size_t /*n*/) {
    return error(errc::unsupported, "this sink takes host memory");
  }
};

class broadcast_channel {
 public:
  virtual ~broadcast_channel() = default;
  virtual int rank() const noexcept = 0;
  virtual int nranks() const noexcept = 0;
  virtual int device() const noexcept = 0;

  // Rank 0: broadcasts `bytes` (host memory: copied to device staging first, overlapped with the
  // broadcast of the previous chunk) to every other rank.
  virtual status send(byte_span bytes, const std::atomic<bool>& cancel) = 0;
  // Rank 0: broadcasts `n` bytes already in device memory on this channel's device (the GPU sender).
  virtual status send_device(const void* dev, uint64_t n, const std::atomic<bool>& cancel) = 0;
  // Other ranks: receives exactly `n` bytes of one send on the root, into staging, and hands them to the sink
  // (the copy out of chunk k overlaps the broadcast of chunk k+1). A sink error stops the copies but the
  // rest is still received and dropped, so the collective completes and the group stays usable; that
  // error is returned at the end.
  virtual status receive(uint64_t n, receive_sink& sink, const std::atomic<bool>& cancel) = 0;
  // Ok, or the asynchronous error NCCL reports (ncclCommGetAsyncError), or why the channel is broken.
  virtual status health() = 0;
  // Aborts the communicator (idempotent, any thread): waits in progress end with errc::cancelled.
  virtual void abort() noexcept = 0;
  virtual bool broken() const noexcept = 0;
};

// Joins the group (ncclCommInitRankConfig, non-blocking communicator, polled up to timeout_ms; every rank
// must call it with the same id). Blocks the calling thread: never call it on the event loop. `cancel`
// aborts a pending init. Errors: unsupported (no NCCL), invalid_argument (rank/nranks/device), timeout,
// cancelled, internal (NCCL's message).
using channel_factory =
    std::function<result<std::unique_ptr<broadcast_channel>>(const channel_params&, const std::atomic<bool>& cancel)>;
result<std::unique_ptr<broadcast_channel>> open_nccl_channel(const channel_params& p, const std::atomic<bool>& cancel);

}  // namespace deltasync::gpu
