// The receiver's NCCL group membership: a group thread that owns the communicator, and the broadcast
// receiver that turns each announced file into read_pieces for the receiver pipeline.
#include "sync/nccl_member.h"

#include <boost/json.hpp>
#include <chrono>

#include "base/check.h"
#include "base/log.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"

namespace deltasync {

namespace json = boost::json;
using steady = std::chrono::steady_clock;

std::string_view nccl_state_name(nccl_state s) noexcept {
  switch (s) {
    case nccl_state::none: return "none";
    case nccl_state::joining: return "joining";
    case nccl_state::ready: return "ready";
    case nccl_state::receiving: return "receiving";
    case nccl_state::failed: return "failed";
  }
  return "?";
}

result<nccl_join_request> parse_nccl_join(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return error(errc::bad_request, "POST /nccl/init: the body must be a JSON object");
  const auto& o = v.as_object();
  auto get_int = [&](std::string_view key, bool required, int64_t lo, int64_t hi) -> result<std::optional<int64_t>> {
    const json::value* x = o.if_contains(key);
    if (!x) {
      if (required) return error(errc::bad_request, "POST /nccl/init: missing field '" + std::string(key) + "'");
      return std::optional<int64_t>{};
    }
    if (!x->is_int64() && !x->is_uint64())
      return error(errc::bad_request, "POST /nccl/init: '" + std::string(key) + "' must be an integer");
    const int64_t n = x->is_int64() ? x->as_int64() : static_cast<int64_t>(std::min<uint64_t>(x->as_uint64(), INT64_MAX));
    if (n < lo || n > hi)
      return error(errc::bad_request, "POST /nccl/init: '" + std::string(key) + "' = " + std::to_string(n) +
                                          " is outside " + std::to_string(lo) + ".." + std::to_string(hi));
    return std::optional<int64_t>{n};
  };
  nccl_join_request r;
  const json::value* id = o.if_contains("unique_id");
  if (!id || !id->is_string()) return error(errc::bad_request, "POST /nccl/init: missing field 'unique_id' (base64)");
  auto raw = gpu::base64_decode(id->as_string());
  if (!raw) return error(errc::bad_request, "POST /nccl/init: 'unique_id': " + raw.err().message);
  if (raw->size() != gpu::nccl_unique_id_bytes)
    return error(errc::bad_request, "POST /nccl/init: 'unique_id' decodes to " + std::to_string(raw->size()) +
                                        " bytes, not " + std::to_string(gpu::nccl_unique_id_bytes));
  std::copy(raw->begin(), raw->end(), r.id.begin());
  DS_ASSIGN_OR_RETURN(auto nranks, get_int("nranks", true, 2, 4096));
  r.nranks = static_cast<int>(*nranks);
  DS_ASSIGN_OR_RETURN(auto rank, get_int("rank", true, 1, r.nranks - 1));  // rank 0 is the sender
  r.rank = static_cast<int>(*rank);
  DS_ASSIGN_OR_RETURN(auto device, get_int("device", false, -1, 1023));
  r.device = device ? static_cast<int>(*device) : -1;
  DS_ASSIGN_OR_RETURN(auto chunk, get_int("chunk_bytes", false, 1, int64_t{4} << 30));
  if (chunk) r.chunk_bytes = static_cast<uint64_t>(*chunk);
  DS_ASSIGN_OR_RETURN(auto timeout, get_int("timeout_ms", false, 1, 3'600'000));
  if (timeout) r.timeout_ms = static_cast<uint32_t>(*timeout);
  const json::value* g = o.if_contains("group");
  if (!g || !g->is_string() || g->as_string().empty() || g->as_string().size() > 128)
    return error(errc::bad_request, "POST /nccl/init: 'group' must be a name of 1..128 characters");
  r.group = std::string(g->as_string());
  return r;
}

struct nccl_member::shared {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> tasks;  // guarded by mu
  bool stop = false;                        // guarded by mu
  bool busy = false;                        // a task is running; guarded by mu
  std::mutex chan_mu;                       // guards the pointer (the group thread alone uses the channel)
  std::unique_ptr<gpu::broadcast_channel> channel;
  std::atomic<bool> cancel{false};          // the member is going away: stop every wait
  bool alive = true;                        // loop thread: false once the member is destroyed
  // The join in progress (its init may wait for ranks that never come): a newer join, a leave or the
  // destructor cancels it instead of queueing behind it until its timeout. Guarded by mu.
  std::shared_ptr<std::atomic<bool>> join_cancel;

  void cancel_join() {
    std::lock_guard<std::mutex> lock(mu);
    if (join_cancel) join_cancel->store(true);
  }

  void abort_channel() {
    std::lock_guard<std::mutex> lock(chan_mu);
    if (channel) channel->abort();
  }
  // Group thread: drops the channel (aborted first when `abort`, else finalized, bounded).
  void drop_channel(bool abort) {
    std::unique_ptr<gpu::broadcast_channel> old;
    {
      std::lock_guard<std::mutex> lock(chan_mu);
      old = std::move(channel);
    }
    if (old && abort) old->abort();
  }
};

nccl_member::nccl_member(io::event_loop& loop, nccl_member_options options)
    : loop_(loop), options_(std::move(options)), sh_(std::make_shared<shared>()) {
  if (!options_.factory) options_.factory = gpu::open_nccl_channel;
  thread_ = std::thread([this] { thread_main(); });
}

nccl_member::~nccl_member() {
  sh_->cancel.store(true);
  sh_->cancel_join();
  sh_->abort_channel();
  {
    std::lock_guard<std::mutex> lock(sh_->mu);
    sh_->stop = true;
  }
  sh_->cv.notify_all();
  thread_.join();
  auto sh = sh_;
  loop_.run_sync([sh] { sh->alive = false; });
}

void nccl_member::post_task(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(sh_->mu);
    sh_->tasks.push_back(std::move(task));
  }
  sh_->cv.notify_all();
}

void nccl_member::thread_main() {
  auto sh = sh_;
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(sh->mu);
      sh->cv.wait_for(lock, std::chrono::milliseconds(options_.health_interval_ms),
                      [&] { return sh->stop || !sh->tasks.empty(); });
      if (sh->stop) break;
      if (!sh->tasks.empty()) {
        task = std::move(sh->tasks.front());
        sh->tasks.pop_front();
        sh->busy = true;
      }
    }
    if (task) {
      task();
      std::lock_guard<std::mutex> lock(sh->mu);
      sh->busy = false;
      continue;
    }
    // Idle: ask NCCL whether the group is still sound (a dead peer shows up here as an async error).
    gpu::broadcast_channel* ch = sh->channel.get();
    if (!ch) continue;
    if (auto h = ch->health(); !h) {
      DS_LOG(warn, "nccl", "group failed while idle: %s", h.err().describe().c_str());
      sh->drop_channel(true);
      std::string why = h.err().describe();
      loop_.post([this, sh, why] {
        if (!sh->alive) return;
        info_.state = nccl_state::failed;
        info_.last_error = why;
      });
    }
  }
  sh->drop_channel(true);
}

void nccl_member::join(nccl_join_request req, std::function<void(status)> done) {
  if (info_.state == nccl_state::receiving) return done(error(errc::busy, "a sync is receiving over the current group"));
  gpu::channel_params p;
  p.id = req.id;
  p.nranks = req.nranks;
  p.rank = req.rank;
  p.device = req.device >= 0 ? req.device : options_.device;
  p.chunk_bytes = req.chunk_bytes.value_or(options_.chunk_bytes);
  p.timeout_ms = req.timeout_ms.value_or(options_.timeout_ms);
  if (p.chunk_bytes > options_.max_chunk_bytes)
    return done(error(errc::limit_exceeded, "chunk_bytes " + std::to_string(p.chunk_bytes) + " exceeds this receiver's limit of " +
                                                std::to_string(options_.max_chunk_bytes)));
  // A new group replaces the old one, which is aborted now (its sender is gone or starting over), and an
  // older join still waiting for its ranks gives up.
  sh_->abort_channel();
  sh_->cancel_join();
  auto flag = std::make_shared<std::atomic<bool>>(false);
  {
    std::lock_guard<std::mutex> lock(sh_->mu);
    sh_->join_cancel = flag;
  }
  info_ = nccl_member_info{nccl_state::joining, req.group, p.rank, p.nranks, p.device, info_.syncs_received,
                           info_.bytes_received, ""};
  DS_LOG(info, "nccl", "joining group '%s' as rank %d of %d on device %d", req.group.c_str(), p.rank, p.nranks, p.device);
  auto sh = sh_;
  post_task([this, sh, p, flag, group = req.group, done = std::move(done)] {
    sh->drop_channel(true);
    if (sh->cancel.load()) flag->store(true);
    auto ch = options_.factory(p, *flag);
    status outcome;
    if (ch) {
      std::lock_guard<std::mutex> lock(sh->chan_mu);
      sh->channel = std::move(ch).value();
    } else {
      outcome = std::move(ch).err();
    }
    loop_.post([this, sh, group, outcome, done] {
      if (!sh->alive) return;
      if (info_.group == group && info_.state == nccl_state::joining) {
        info_.state = outcome ? nccl_state::ready : nccl_state::failed;
        if (!outcome) info_.last_error = outcome.err().describe();
      }
      done(outcome);
    });
  });
}

void nccl_member::leave(std::function<void(status)> done) {
  if (info_.state == nccl_state::receiving) return done(error(errc::busy, "a sync is receiving over the group"));
  const std::string group = info_.group;
  sh_->cancel_join();
  info_.state = nccl_state::none;
  info_.group.clear();
  info_.rank = -1;
  info_.nranks = 0;
  auto sh = sh_;
  post_task([this, sh, group, done = std::move(done)] {
    sh->drop_channel(false);
    loop_.post([sh, group, done] {
      if (!sh->alive) return;
      if (!group.empty()) DS_LOG(info, "nccl", "left group '%s'", group.c_str());
      done({});
    });
  });
}

// Receives one sync's files on the group thread and hands them to the loop as pool-buffer pieces.
class nccl_member::receive_source final : public piece_source {
 public:
  struct state {
    std::vector<uint64_t> sizes;
    io::buffer_pool* pool = nullptr;
    uint32_t timeout_ms = 60'000;
    std::atomic<bool> discard{false};
  };
  receive_source(nccl_member& m, std::shared_ptr<state> st) : m_(m), st_(std::move(st)) {}
  ~receive_source() override { st_->discard.store(true); }

  void start(std::function<void(io::read_piece)> on_piece, std::function<void(status)> on_done) override {
    nccl_member& m = m_;
    m.info_.state = nccl_state::receiving;
    auto sh = m.sh_;
    auto st = st_;
    io::event_loop* loop = &m.loop_;
    m.post_task([&m, sh, st, loop, on_piece = std::move(on_piece), on_done = std::move(on_done)] {
      uint64_t received = 0;
      status s = receive_all(*sh, *st, *loop, on_piece, received, m.options_.test_receive_delay_ms);
      const bool broken = sh->channel == nullptr || sh->channel->broken();
      if (broken) sh->drop_channel(true);
      loop->post([&m, sh, st, s, broken, received, on_done] {
        if (!sh->alive) return;
        m.info_.bytes_received += received;
        if (broken) {
          m.info_.state = nccl_state::failed;
          m.info_.last_error = s ? "the communicator broke" : s.err().describe();
        } else if (m.info_.state == nccl_state::receiving) {
          m.info_.state = nccl_state::ready;
          ++m.info_.syncs_received;
        }
        if (s && st->discard.load()) return on_done(error(errc::cancelled, "nccl receive drained (sync refused)"));
        on_done(s);
      });
    });
  }
  void cancel() override { st_->discard.store(true); }

 private:
  class host_sink final : public gpu::receive_sink {
   public:
    host_sink(state& st, io::event_loop& loop, const std::function<void(io::read_piece)>& on_piece, size_t file)
        : st_(st), loop_(loop), on_piece_(on_piece), file_(file) {}
    result<mutable_byte_span> host(uint64_t, size_t max) override {
      const auto deadline = steady::now() + std::chrono::milliseconds(st_.timeout_ms);
      for (;;) {
        if (st_.discard.load()) return mutable_byte_span{};
        cur_ = st_.pool->try_acquire();
        if (cur_) break;
        // Every buffer is held downstream (apply back-pressure): wait for one, bounded.
        if (steady::now() > deadline)
          return error(errc::timeout, "no I/O buffer came free within " + std::to_string(st_.timeout_ms) + " ms");
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      return cur_.span().first(std::min(max, cur_.size()));
    }
    status filled(uint64_t offset, size_t n) override {
      auto piece = std::make_shared<io::read_piece>();
      piece->file_index = file_;
      piece->offset = offset;
      piece->bytes = byte_span(cur_.data(), n);
      piece->buffer = std::move(cur_);
      piece->last_in_file = offset + n == st_.sizes[file_];
      loop_.post([on_piece = on_piece_, piece] { on_piece(std::move(*piece)); });
      return {};
    }

   private:
    state& st_;
    io::event_loop& loop_;
    const std::function<void(io::read_piece)>& on_piece_;
    size_t file_;
    io::buffer_handle cur_;
  };

  static status receive_all(shared& sh, state& st, io::event_loop& loop,
                            const std::function<void(io::read_piece)>& on_piece, uint64_t& received,
                            uint32_t test_delay_ms) {
    gpu::broadcast_channel* ch = sh.channel.get();
    if (!ch) return error(errc::cancelled, "the NCCL group is gone");
    for (size_t i = 0; i < st.sizes.size(); ++i) {
      if (st.sizes[i] == 0) {
        auto piece = std::make_shared<io::read_piece>();
        piece->file_index = i;
        piece->last_in_file = true;
        if (!st.discard.load()) loop.post([on_piece, piece] { on_piece(std::move(*piece)); });
        continue;
      }
      if (test_delay_ms) std::this_thread::sleep_for(std::chrono::milliseconds(test_delay_ms));
      host_sink sink(st, loop, on_piece, i);
      DS_TRY_STATUS(ch->receive(st.sizes[i], sink, sh.cancel));
      received += st.sizes[i];
    }
    return {};
  }

  nccl_member& m_;
  std::shared_ptr<state> st_;
};

result<std::unique_ptr<piece_source>> nccl_member::source(const sync_request& req, io::buffer_pool& pool) {
  if (info_.state == nccl_state::none || info_.group.empty())
    return error(errc::unsupported, "this receiver is in no NCCL group (POST /nccl/init first)");
  if (!req.group.empty() && req.group != info_.group)
    return error(errc::unsupported, "the sync is for NCCL group '" + req.group + "', this receiver is in '" +
                                        info_.group + "'");
  if (info_.state == nccl_state::failed)
    return error(errc::unsupported, "NCCL group '" + info_.group + "' failed (" + info_.last_error + "); join again");
  if (info_.state == nccl_state::receiving) return error(errc::busy, "a sync is already receiving over the group");
  auto st = std::make_shared<receive_source::state>();
  st->sizes = req.sizes;
  st->pool = &pool;
  st->timeout_ms = options_.timeout_ms;
  return std::unique_ptr<piece_source>(std::make_unique<receive_source>(*this, std::move(st)));
}

}  // namespace deltasync
