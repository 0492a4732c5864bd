// The NCCL broadcast channel: a non-blocking communicator (config.blocking = 0) so that no NCCL call can
// hang the driving thread; every wait is a poll of a CUDA event and ncclCommGetAsyncError with a deadline
// and a cancel flag, and a wait that runs out aborts the communicator (ncclCommAbort).
#include "gpu/nccl_channel.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cstring>
#include <chrono>
#include <mutex>
#include <thread>

#include "base/log.h"

namespace deltasync::gpu {
namespace {

using steady = std::chrono::steady_clock;

error cuda_error(cudaError_t e, const std::string& what) {
  return error(errc::internal, what + ": CUDA error " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

#define DS_CUDA(call, what)                                    \
  do {                                                         \
    cudaError_t ds_cuda_rc_ = (call);                          \
    if (ds_cuda_rc_ != cudaSuccess) return cuda_error(ds_cuda_rc_, what); \
  } while (0)

class nccl_channel final : public broadcast_channel {
 public:
  explicit nccl_channel(const channel_params& p) : p_(p) {}
  ~nccl_channel() override { close(); }

  int rank() const noexcept override { return p_.rank; }
  int nranks() const noexcept override { return p_.nranks; }
  int device() const noexcept override { return p_.device; }
  bool broken() const noexcept override { return broken_.load(); }
  void abort() noexcept override { abort_requested_.store(true); }

  status init(const std::atomic<bool>& cancel) {
    DS_CUDA(cudaSetDevice(p_.device), "cudaSetDevice(" + std::to_string(p_.device) + ")");
    DS_CUDA(cudaStreamCreateWithFlags(&bcast_stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    DS_CUDA(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    for (int b = 0; b < 2; ++b) {
      DS_CUDA(cudaEventCreateWithFlags(&bcast_done_[b], cudaEventDisableTiming), "cudaEventCreate");
      DS_CUDA(cudaEventCreateWithFlags(&copy_done_[b], cudaEventDisableTiming), "cudaEventCreate");
      DS_CUDA(cudaMalloc(&staging_[b], p_.chunk_bytes), "cudaMalloc staging of " + std::to_string(p_.chunk_bytes) + " bytes");
    }
    ncclUniqueId id;
    static_assert(sizeof(id.internal) == nccl_unique_id_bytes);
    std::memcpy(id.internal, p_.id.data(), nccl_unique_id_bytes);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&comm_, p_.nranks, id, p_.rank, &cfg);
    if (r != ncclSuccess && r != ncclInProgress) {
      auto e = nccl_error(r, "ncclCommInitRankConfig");
      mark_broken();
      return e;
    }
    return wait_state(cancel, "joining the NCCL group (rank " + std::to_string(p_.rank) + " of " +
                                  std::to_string(p_.nranks) + ")");
  }

  status send(byte_span bytes, const std::atomic<bool>& cancel) override {
    DS_TRY_STATUS(ready_as(true));
    const uint64_t chunk = p_.chunk_bytes;
    const uint64_t chunks = (bytes.size() + chunk - 1) / chunk;
    for (uint64_t k = 0; k < chunks; ++k) {
      const int b = static_cast<int>(k % 2);
      const uint64_t off = k * chunk;
      const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, bytes.size() - off));
      // staging[b] is free once the broadcast of chunk k-2 is done.
      if (k >= 2) DS_TRY_STATUS(wait_event(bcast_done_[b], cancel, "broadcast of a chunk"));
      DS_TRY_STATUS(cuda_check(cudaMemcpyAsync(staging_[b], bytes.data() + off, n, cudaMemcpyHostToDevice, copy_stream_), "H2D"));
      DS_TRY_STATUS(cuda_check(cudaEventRecord(copy_done_[b], copy_stream_), "cudaEventRecord"));
      DS_TRY_STATUS(cuda_check(cudaStreamWaitEvent(bcast_stream_, copy_done_[b], 0), "cudaStreamWaitEvent"));
      DS_TRY_STATUS(enqueue_broadcast(staging_[b], n, cancel));
      DS_TRY_STATUS(cuda_check(cudaEventRecord(bcast_done_[b], bcast_stream_), "cudaEventRecord"));
    }
    for (uint64_t k = chunks > 2 ? chunks - 2 : 0; k < chunks; ++k)
      DS_TRY_STATUS(wait_event(bcast_done_[k % 2], cancel, "broadcast of a chunk"));
    return {};
  }

  status send_device(const void* dev, uint64_t n, const std::atomic<bool>& cancel) override {
    DS_TRY_STATUS(ready_as(true));
    const auto* base = static_cast<const std::byte*>(dev);
    for (uint64_t off = 0; off < n; off += p_.chunk_bytes) {
      const size_t len = static_cast<size_t>(std::min<uint64_t>(p_.chunk_bytes, n - off));
      // In place at the root: send and receive buffers are the same.
      DS_TRY_STATUS(enqueue_broadcast(const_cast<std::byte*>(base + off), len, cancel));  // NOLINT: NCCL reads only
    }
    DS_TRY_STATUS(cuda_check(cudaEventRecord(bcast_done_[0], bcast_stream_), "cudaEventRecord"));
    return wait_event(bcast_done_[0], cancel, "broadcast");
  }

  status receive(uint64_t n, receive_sink& sink, const std::atomic<bool>& cancel) override {
    DS_TRY_STATUS(ready_as(false));
    const uint64_t chunk = p_.chunk_bytes;
    const uint64_t chunks = (n + chunk - 1) / chunk;
    status sink_error;
    auto copy_out = [&](uint64_t k) -> status {
      const int b = static_cast<int>(k % 2);
      const uint64_t off = k * chunk;
      const size_t len = static_cast<size_t>(std::min<uint64_t>(chunk, n - off));
      DS_TRY_STATUS(wait_event(bcast_done_[b], cancel, "receiving a chunk"));
      if (!sink_error.ok()) return {};  // draining: the bytes are dropped
      if (sink.wants_device()) {
        if (auto s = sink.device(off, staging_[b], len); !s) sink_error = std::move(s);
        return {};
      }
      size_t pos = 0;
      while (pos < len) {
        auto dst = sink.host(off + pos, len - pos);
        if (!dst) {
          sink_error = status(std::move(dst).err());
          return {};
        }
        if (dst->empty()) return {};  // the sink discards the rest of this chunk
        const size_t m = std::min(dst->size(), len - pos);
        DS_TRY_STATUS(cuda_check(cudaMemcpyAsync(dst->data(), static_cast<std::byte*>(staging_[b]) + pos, m,
                                                 cudaMemcpyDeviceToHost, copy_stream_), "D2H"));
        DS_TRY_STATUS(cuda_check(cudaEventRecord(copy_done_[b], copy_stream_), "cudaEventRecord"));
        DS_TRY_STATUS(wait_event(copy_done_[b], cancel, "copying a chunk to the host"));
        if (auto s = sink.filled(off + pos, m); !s) {
          sink_error = std::move(s);
          return {};
        }
        pos += m;
      }
      return {};
    };
    for (uint64_t k = 0; k < chunks; ++k) {
      const int b = static_cast<int>(k % 2);
      const size_t len = static_cast<size_t>(std::min<uint64_t>(chunk, n - k * chunk));
      // staging[b] was last used by chunk k-2, whose copy-out finished in the previous iteration.
      DS_TRY_STATUS(enqueue_broadcast(staging_[b], len, cancel));
      DS_TRY_STATUS(cuda_check(cudaEventRecord(bcast_done_[b], bcast_stream_), "cudaEventRecord"));
      if (k > 0) DS_TRY_STATUS(copy_out(k - 1));
    }
    if (chunks > 0) DS_TRY_STATUS(copy_out(chunks - 1));
    return sink_error;
  }

  status health() override {
    if (abort_requested_.load()) return error(errc::cancelled, "abort() was called");
    if (broken_) return error(errc::cancelled, "the NCCL communicator was aborted: " + broken_reason_);
    if (!comm_) return error(errc::internal, "no NCCL communicator");
    ncclResult_t ae = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(comm_, &ae);
    if (r != ncclSuccess) return nccl_error(r, "ncclCommGetAsyncError");
    if (ae != ncclSuccess && ae != ncclInProgress) return nccl_error(ae, "NCCL asynchronous error");
    return {};
  }

 private:
  status ready_as(bool root) {
    if (abort_requested_.load() && !broken_) {
      DS_CUDA(cudaSetDevice(p_.device), "cudaSetDevice");
      do_abort("abort() was called");
    }
    if (broken_) return error(errc::cancelled, "the NCCL communicator was aborted: " + broken_reason_);
    if ((p_.rank == 0) != root)
      return error(errc::invalid_argument, root ? "only rank 0 sends" : "rank 0 sends; it cannot receive");
    DS_CUDA(cudaSetDevice(p_.device), "cudaSetDevice");
    return {};
  }

  status cuda_check(cudaError_t e, const std::string& what) {
    if (e == cudaSuccess) return {};
    auto err = cuda_error(e, what);
    do_abort(err.message);
    return err;
  }

  error nccl_error(ncclResult_t r, const std::string& what) {
    std::string msg = what + ": " + ncclGetErrorString(r);
    if (comm_) {
      const char* last = ncclGetLastError(comm_);
      if (last && *last) msg += std::string(" (") + last + ")";
    }
    return error(r == ncclInvalidArgument || r == ncclInvalidUsage ? errc::invalid_argument : errc::internal, msg);
  }

  void mark_broken() { broken_.store(true); }

  void do_abort(const std::string& why) {
    if (broken_reason_.empty()) broken_reason_ = why;
    broken_.store(true);
    if (comm_) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
    }
  }

  // Polls until the communicator leaves ncclInProgress (non-blocking init and enqueue), bounded.
  status wait_state(const std::atomic<bool>& cancel, const std::string& what) {
    const auto deadline = steady::now() + std::chrono::milliseconds(p_.timeout_ms);
    for (;;) {
      ncclResult_t ae = ncclInProgress;
      ncclResult_t r = ncclCommGetAsyncError(comm_, &ae);
      if (r != ncclSuccess) ae = r;
      if (ae == ncclSuccess) return {};
      if (ae != ncclInProgress) {
        auto e = nccl_error(ae, what);
        do_abort(e.message);
        return e;
      }
      if (auto s = check_stop(cancel, deadline, what); !s) return s;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  status check_stop(const std::atomic<bool>& cancel, steady::time_point deadline, const std::string& what) {
    if (cancel.load() || abort_requested_.load()) {
      do_abort("cancelled while " + what);
      return error(errc::cancelled, "cancelled while " + what + "; the NCCL communicator was aborted");
    }
    if (steady::now() > deadline) {
      do_abort("timed out while " + what);
      return error(errc::timeout, "no progress for " + std::to_string(p_.timeout_ms) + " ms while " + what +
                                      "; the NCCL communicator was aborted");
    }
    return {};
  }

  status enqueue_broadcast(void* buf, size_t n, const std::atomic<bool>& cancel) {
    ncclResult_t r = ncclBroadcast(buf, buf, n, ncclUint8, 0, comm_, bcast_stream_);
    if (r == ncclSuccess) return {};
    if (r == ncclInProgress) return wait_state(cancel, "enqueueing a broadcast");
    auto e = nccl_error(r, "ncclBroadcast");
    do_abort(e.message);
    return e;
  }

  // Waits for a CUDA event while watching NCCL's async error, the cancel flag and the deadline.
  status wait_event(cudaEvent_t ev, const std::atomic<bool>& cancel, const std::string& what) {
    const auto deadline = steady::now() + std::chrono::milliseconds(p_.timeout_ms);
    for (unsigned spins = 0;; ++spins) {
      cudaError_t q = cudaEventQuery(ev);
      if (q == cudaSuccess) return {};
      if (q != cudaErrorNotReady) return cuda_check(q, what);
      ncclResult_t ae = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &ae) == ncclSuccess && ae != ncclSuccess && ae != ncclInProgress) {
        auto e = nccl_error(ae, what);
        do_abort(e.message);
        return e;
      }
      if (auto s = check_stop(cancel, deadline, what); !s) return s;
      if (spins > 64) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  void close() noexcept {
    cudaSetDevice(p_.device);
    if (comm_) {
      if (abort_requested_.load() || broken_.load()) {
        ncclCommAbort(comm_);
      } else {
        // Finalize flushes outstanding work; bounded like every wait, then destroy (or abort on timeout).
        const ncclResult_t fr = ncclCommFinalize(comm_);
        ncclResult_t ae = fr == ncclSuccess || fr == ncclInProgress ? ncclInProgress : fr;
        const auto deadline = steady::now() + std::chrono::milliseconds(std::min<uint32_t>(p_.timeout_ms, 10'000));
        while (ae == ncclInProgress && steady::now() < deadline) {
          if (ncclCommGetAsyncError(comm_, &ae) != ncclSuccess) break;
          if (ae == ncclInProgress) std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        if (ae == ncclSuccess)
          ncclCommDestroy(comm_);
        else
          ncclCommAbort(comm_);
      }
      comm_ = nullptr;
    }
    for (int b = 0; b < 2; ++b) {
      if (staging_[b]) cudaFree(staging_[b]);
      if (bcast_done_[b]) cudaEventDestroy(bcast_done_[b]);
      if (copy_done_[b]) cudaEventDestroy(copy_done_[b]);
    }
    if (bcast_stream_) cudaStreamDestroy(bcast_stream_);
    if (copy_stream_) cudaStreamDestroy(copy_stream_);
  }

  channel_params p_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t bcast_stream_ = nullptr, copy_stream_ = nullptr;
  cudaEvent_t bcast_done_[2] = {nullptr, nullptr}, copy_done_[2] = {nullptr, nullptr};
  void* staging_[2] = {nullptr, nullptr};
  std::atomic<bool> abort_requested_{false};
  std::atomic<bool> broken_{false};
  std::string broken_reason_;  // written by the driving thread only
};

}  // namespace

status nccl_available() { return {}; }

result<int> cuda_device_count() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) return 0;
  if (e != cudaSuccess) return cuda_error(e, "cudaGetDeviceCount");
  return n;
}

result<nccl_unique_id> nccl_new_unique_id() {
  ncclUniqueId id;
  ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess) return error(errc::internal, std::string("ncclGetUniqueId: ") + ncclGetErrorString(r));
  nccl_unique_id out;
  std::memcpy(out.data(), id.internal, nccl_unique_id_bytes);
  return out;
}

status cuda_host_register(void* addr, size_t bytes, int device) {
  DS_CUDA(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")");
  DS_CUDA(cudaHostRegister(addr, bytes, cudaHostRegisterPortable), "cudaHostRegister of " + std::to_string(bytes) + " bytes");
  return {};
}

void cuda_host_unregister(void* addr) noexcept { cudaHostUnregister(addr); }

result<std::unique_ptr<broadcast_channel>> open_nccl_channel(const channel_params& p, const std::atomic<bool>& cancel) {
  if (p.nranks < 1 || p.rank < 0 || p.rank >= p.nranks)
    return error(errc::invalid_argument, "NCCL group: rank " + std::to_string(p.rank) + " of " + std::to_string(p.nranks));
  if (p.chunk_bytes == 0 || p.chunk_bytes > (4ull << 30))
    return error(errc::invalid_argument, "NCCL group: chunk_bytes must be in 1..4 GiB");
  auto devices = cuda_device_count();
  if (!devices) return devices.err();
  if (p.device < 0 || p.device >= *devices)
    return error(errc::invalid_argument, "NCCL group: CUDA device " + std::to_string(p.device) + " does not exist (" +
                                             std::to_string(*devices) + " visible)");
  auto ch = std::make_unique<nccl_channel>(p);
  DS_TRY_STATUS(ch->init(cancel));
  DS_LOG(info, "nccl", "joined the group as rank %d of %d on device %d", p.rank, p.nranks, p.device);
  return std::unique_ptr<broadcast_channel>(std::move(ch));
}

}  // namespace deltasync::gpu
