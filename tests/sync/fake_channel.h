// An in-process stand-in for NCCL's broadcast groups, so the NCCL transport's sequencing and failure paths
// run on machines without GPUs. Same contract as gpu::broadcast_channel: each chunk of a send is a
// rendezvous (the root's send returns only once every other rank received it), joins wait for every rank,
// every wait is bounded by timeout_ms and the cancel flag, and a timeout, cancel or abort breaks the whole
// group (as ncclCommAbort leaves the other ranks without a peer); destroying a member without abort() does not.
//
// Faults: stall_rank makes that rank's receives never see data (a process that died or hangs); corrupt_next
// flips one byte of the next chunk broadcast (the payload checksums must catch it).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "gpu/nccl_channel.h"

namespace deltasync::testing {

class fake_world {
 public:
  std::atomic<int> joins{0};         // channels created
  std::atomic<int> stall_rank{-1};   // this rank's receives never progress
  std::atomic<bool> corrupt_next{false};
  std::atomic<uint64_t> bytes_broadcast{0};

  gpu::channel_factory factory() {
    return [this](const gpu::channel_params& p, const std::atomic<bool>& cancel) { return open(p, cancel); };
  }
  std::function<result<gpu::nccl_unique_id>()> id_source() {
    return [this]() -> result<gpu::nccl_unique_id> {
      gpu::nccl_unique_id id{};
      const uint64_t n = ++ids_;
      std::memcpy(id.data(), &n, sizeof n);
      return id;
    };
  }

 private:
  using clock = std::chrono::steady_clock;
  struct group {
    std::mutex mu;
    std::condition_variable cv;
    int nranks = 0;
    int joined = 0;
    bool aborted = false;
    std::vector<byte_buffer> chunks;
    std::vector<size_t> next;  // per rank: the next chunk it receives
  };

  class channel final : public gpu::broadcast_channel {
   public:
    channel(fake_world& w, std::shared_ptr<group> g, gpu::channel_params p) : w_(w), g_(std::move(g)), p_(p) {}
    // Like ncclCommDestroy, dropping one member does not disturb the others (they find out by timing out).
    ~channel() override = default;
    int rank() const noexcept override { return p_.rank; }
    int nranks() const noexcept override { return p_.nranks; }
    int device() const noexcept override { return p_.device; }
    bool broken() const noexcept override {
      std::lock_guard<std::mutex> lock(g_->mu);
      return g_->aborted;
    }
    void abort() noexcept override {
      std::lock_guard<std::mutex> lock(g_->mu);
      g_->aborted = true;
      g_->cv.notify_all();
    }
    status health() override {
      if (broken()) return error(errc::cancelled, "fake group aborted");
      return {};
    }

    status send(byte_span bytes, const std::atomic<bool>& cancel) override {
      if (p_.rank != 0) return error(errc::invalid_argument, "only rank 0 sends");
      for (uint64_t off = 0; off < bytes.size(); off += p_.chunk_bytes) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(p_.chunk_bytes, bytes.size() - off));
        std::unique_lock<std::mutex> lock(g_->mu);
        if (g_->aborted) return error(errc::cancelled, "fake group aborted");
        byte_buffer chunk(bytes.begin() + static_cast<std::ptrdiff_t>(off), bytes.begin() + static_cast<std::ptrdiff_t>(off + n));
        if (w_.corrupt_next.exchange(false)) chunk[chunk.size() / 2] ^= std::byte{0x40};
        g_->chunks.push_back(std::move(chunk));
        const size_t k = g_->chunks.size();
        g_->next[0] = k;
        g_->cv.notify_all();
        DS_TRY_STATUS(wait(lock, cancel, [&] {
          return std::all_of(g_->next.begin(), g_->next.end(), [k](size_t x) { return x >= k; });
        }, "broadcast"));
        w_.bytes_broadcast += n;
      }
      return {};
    }
    status send_device(const void*, uint64_t, const std::atomic<bool>&) override {
      return error(errc::unsupported, "fake channel: no device memory");
    }
    status receive(uint64_t n, gpu::receive_sink& sink, const std::atomic<bool>& cancel) override {
      status sink_error;
      for (uint64_t off = 0; off < n; off += p_.chunk_bytes) {
        const size_t len = static_cast<size_t>(std::min<uint64_t>(p_.chunk_bytes, n - off));
        byte_buffer chunk;
        {
          std::unique_lock<std::mutex> lock(g_->mu);
          const size_t k = g_->next[static_cast<size_t>(p_.rank)];
          DS_TRY_STATUS(wait(lock, cancel, [&] { return w_.stall_rank.load() != p_.rank && g_->chunks.size() > k; },
                             "receive"));
          chunk = g_->chunks[k];
        }
        if (chunk.size() != len) {
          abort();
          return error(errc::internal, "fake group: a broadcast of " + std::to_string(chunk.size()) +
                                           " bytes met a receive of " + std::to_string(len));
        }
        for (size_t pos = 0; pos < len && sink_error.ok();) {
          auto dst = sink.host(off + pos, len - pos);
          if (!dst) {
            sink_error = status(std::move(dst).err());
            break;
          }
          if (dst->empty()) break;
          const size_t m = std::min(dst->size(), len - pos);
          std::memcpy(dst->data(), chunk.data() + pos, m);
          if (auto s = sink.filled(off + pos, m); !s) sink_error = std::move(s);
          pos += m;
        }
        std::lock_guard<std::mutex> lock(g_->mu);
        ++g_->next[static_cast<size_t>(p_.rank)];
        g_->cv.notify_all();
      }
      return sink_error;
    }

    template <typename Pred>
    status wait(std::unique_lock<std::mutex>& lock, const std::atomic<bool>& cancel, Pred ready, const char* what) {
      const auto deadline = clock::now() + std::chrono::milliseconds(p_.timeout_ms);
      for (;;) {
        if (g_->aborted) return error(errc::cancelled, std::string("fake group aborted during ") + what);
        if (ready()) return {};
        if (cancel.load()) {
          g_->aborted = true;
          g_->cv.notify_all();
          return error(errc::cancelled, std::string("cancelled during ") + what);
        }
        if (clock::now() > deadline) {
          g_->aborted = true;
          g_->cv.notify_all();
          return error(errc::timeout, std::string("no progress for ") + std::to_string(p_.timeout_ms) + " ms during " + what);
        }
        g_->cv.wait_for(lock, std::chrono::milliseconds(5));
      }
    }

   private:
    fake_world& w_;
    std::shared_ptr<group> g_;
    gpu::channel_params p_;
  };

  result<std::unique_ptr<gpu::broadcast_channel>> open(const gpu::channel_params& p, const std::atomic<bool>& cancel) {
    std::shared_ptr<group> g;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto& slot = groups_[p.id];
      if (!slot) {
        slot = std::make_shared<group>();
        slot->nranks = p.nranks;
        slot->next.assign(static_cast<size_t>(p.nranks), 0);
      }
      g = slot;
    }
    auto ch = std::make_unique<channel>(*this, g, p);
    std::unique_lock<std::mutex> lock(g->mu);
    ++g->joined;
    g->cv.notify_all();
    DS_TRY_STATUS(ch->wait(lock, cancel, [&] { return g->joined >= g->nranks; }, "join"));
    lock.unlock();
    ++joins;
    return std::unique_ptr<gpu::broadcast_channel>(std::move(ch));
  }

  std::mutex mu_;
  std::map<gpu::nccl_unique_id, std::shared_ptr<group>> groups_;
  std::atomic<uint64_t> ids_{0};
};

}  // namespace deltasync::testing
