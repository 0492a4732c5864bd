// The sender's side of the NCCL transport (docs/nccl.md): it owns rank 0 of a group with every receiver,
// sets the group up over HTTP (POST /nccl/init to each receiver while joining itself), and pushes a sync:
// POST /sync ("transport": "nccl", files and sizes) to every receiver, each on its own thread, while this
// thread broadcasts the files' bytes in order. Each POST answers only after that receiver applied (or refused)
// the sync, so the answers are collected after the broadcasts.
//
// Failure rules (no hang, bounded by timeout_ms and the push client's timeout):
// * a broadcast that errors or makes no progress for timeout_ms aborts the communicator;
// * an answer that arrives while broadcasts are still running and is not one of the "drained" refusals
//   (409, 413, 422: the receiver took every byte off the wire before answering) means that receiver is not
//   taking part: the broadcast is cancelled and the communicator aborted;
// * after an abort the group is rebuilt (new unique id, POST /nccl/init) at the next sync.
//
// Threading: one thread drives a pusher (the sender's).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "gpu/nccl_channel.h"
#include "sync/push_transport.h"

namespace deltasync {

struct nccl_sender_options {
  int device = 0;                      // this process's CUDA device (rank 0)
  std::vector<int> receiver_devices;   // per receiver; empty or -1: the receiver's own --device
  std::string group = "deltasync";
  uint64_t chunk_bytes = 256ull << 20;  // largest ncclBroadcast (sent in /nccl/init); 2x on each GPU as staging
  uint32_t timeout_ms = 60'000;        // longest wait without progress (both sides)
  gpu::channel_factory factory;        // default: gpu::open_nccl_channel (tests pass a fake)
  std::function<result<gpu::nccl_unique_id>()> new_id;  // default: gpu::nccl_new_unique_id
};

struct nccl_file {
  std::string name;
  byte_buffer bytes;  // the same safetensors bytes the disk transport writes
};

class nccl_pusher {
 public:
  nccl_pusher(nccl_sender_options options, push_transport& transport, std::vector<std::string> receivers);
  ~nccl_pusher();

  // Builds the group when there is none (first sync, or after a failure). Errors: receiver_failed naming each
  // receiver whose /nccl/init failed (the group is then dropped), or this rank's join error.
  status ensure_group();
  bool has_group() const noexcept { return channel_ != nullptr; }
  // POSTs `sync_body` to every receiver's /sync while broadcasting `files` in order. Returns one outcome per
  // receiver (a receiver whose answer came too early or never came is failed with a transport_error naming
  // the broadcast's error). The group is dropped when a broadcast failed.
  std::vector<push_outcome> push(const std::string& sync_body, const std::vector<nccl_file>& files);
  // Forgets the group (aborting the communicator); the next ensure_group() builds a new one.
  void drop_group();

 private:
  nccl_sender_options options_;
  push_transport& transport_;
  std::vector<std::string> receivers_;
  std::unique_ptr<gpu::broadcast_channel> channel_;
  uint64_t groups_built_ = 0;
};

}  // namespace deltasync
