// A receiver's membership in a sender's NCCL group (docs/nccl.md), and the piece source that receives a
// sync's files over it.
//
// One dedicated thread (the group thread) makes every call on the communicator: the join (collective: it
// blocks until every rank joined, so it must not run on the event loop), each sync's receives, the leave,
// and an idle health check every second (ncclCommGetAsyncError; a failure aborts the communicator and marks
// the group failed). State is owned by the loop thread and updated there by posts from the group thread.
//
// Threading: construct, join, leave, info, source on the loop thread; callbacks run there. The destructor
// (loop thread or after the loop stopped posting) aborts any communicator and joins the thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "base/result.h"
#include "gpu/nccl_channel.h"
#include "sync/piece_source.h"

namespace deltasync::io {
class event_loop;
class buffer_pool;
}  // namespace deltasync::io

namespace deltasync {

// POST /nccl/init's body: {"unique_id": base64, "nranks": n, "rank": r, "device": d, "group": name,
// "chunk_bytes": c (optional), "timeout_ms": t (optional)}. device -1 or absent: the receiver's own device.
struct nccl_join_request {
  gpu::nccl_unique_id id{};
  int nranks = 0;
  int rank = 0;
  int device = -1;
  std::string group;
  std::optional<uint64_t> chunk_bytes;
  std::optional<uint32_t> timeout_ms;
};
// Errors: errc::bad_request naming the field (rank 0 is the sender's: refused here).
result<nccl_join_request> parse_nccl_join(std::string_view json);

enum class nccl_state : uint8_t { none, joining, ready, receiving, failed };
std::string_view nccl_state_name(nccl_state s) noexcept;

struct nccl_member_info {
  nccl_state state = nccl_state::none;
  std::string group;
  int rank = -1, nranks = 0, device = -1;
  uint64_t syncs_received = 0;
  uint64_t bytes_received = 0;
  std::string last_error;
};

struct nccl_member_options {
  int device = 0;                       // serve --device
  uint64_t chunk_bytes = 256ull << 20;  // default when the init request names none
  uint32_t timeout_ms = 60'000;         // default longest wait without progress
  uint64_t max_chunk_bytes = 1ull << 30;
  uint32_t health_interval_ms = 1000;
  gpu::channel_factory factory;         // default: gpu::open_nccl_channel
  // Fault injection for tests only (serve reads env DELTASYNC_TEST_NCCL_RECEIVE_DELAY_MS): the group thread
  // sleeps this long before receiving each file, so a test can kill a receiver in the middle of a broadcast.
  uint32_t test_receive_delay_ms = 0;
};

class nccl_member {
 public:
  nccl_member(io::event_loop& loop, nccl_member_options options);
  ~nccl_member();
  nccl_member(const nccl_member&) = delete;
  nccl_member& operator=(const nccl_member&) = delete;

  // Joins (replacing any current group, which is aborted first). done(ok) once this rank is in; errors:
  // busy (a sync is receiving), what the channel factory says (timeout, cancelled, unsupported, ...).
  void join(nccl_join_request req, std::function<void(status)> done);
  // Leaves the group (destroys the communicator, bounded); ok when there was none. busy while receiving.
  void leave(std::function<void(status)> done);
  const nccl_member_info& info() const noexcept { return info_; }

  // The piece source of one nccl sync (the receiver's transport hook): receives req.sizes[i] bytes per
  // file, in order, into device staging and then into pool buffers (D2H). Errors: not joined / another
  // group's sync (errc::unsupported -> HTTP 400), the group failed, a sync already receiving (busy).
  result<std::unique_ptr<piece_source>> source(const sync_request& req, io::buffer_pool& pool);

 private:
  struct shared;  // state the group thread and the loop share (nccl_member.cc)
  class receive_source;
  void post_task(std::function<void()> task);
  void thread_main();

  io::event_loop& loop_;
  nccl_member_options options_;
  nccl_member_info info_;  // loop thread
  std::shared_ptr<shared> sh_;
  std::thread thread_;
};

}  // namespace deltasync
