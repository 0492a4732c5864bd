// The sender's NCCL transport: group set-up over HTTP, then per sync one POST /sync per receiver (each on
// its own thread) concurrent with the broadcasts on this thread.
#include "sync/nccl_push.h"

#include <atomic>
#include <future>
#include <thread>

#include "base/check.h"
#include "base/log.h"

namespace deltasync {

namespace {

// Answers after which the receiver is known to have drained every announced byte (receiver_transports.cc
// drains before refusing once a sync's source exists): they may arrive while rank 0 still broadcasts.
bool drained_refusal(unsigned http_status) { return http_status == 409 || http_status == 413 || http_status == 422; }

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (static_cast<unsigned char>(c) < 0x20) continue;  // our own names: never control characters
    out.push_back(c);
  }
  return out + "\"";
}

}  // namespace

nccl_pusher::nccl_pusher(nccl_sender_options options, push_transport& transport, std::vector<std::string> receivers)
    : options_(std::move(options)), transport_(transport), receivers_(std::move(receivers)) {
  if (!options_.factory) options_.factory = gpu::open_nccl_channel;
  if (!options_.new_id) options_.new_id = gpu::nccl_new_unique_id;
}

nccl_pusher::~nccl_pusher() { drop_group(); }

void nccl_pusher::drop_group() {
  if (!channel_) return;
  channel_->abort();
  channel_.reset();
}

status nccl_pusher::ensure_group() {
  if (channel_ && !channel_->broken()) return {};
  drop_group();
  if (receivers_.empty()) return error(errc::invalid_argument, "the nccl transport needs at least one receiver");
  DS_ASSIGN_OR_RETURN(gpu::nccl_unique_id id, options_.new_id());
  const std::string id64 = gpu::base64_encode(byte_span(id.data(), id.size()));
  const int nranks = static_cast<int>(receivers_.size()) + 1;

  // Every receiver's init and ours run at once: ncclCommInitRank returns only when all ranks joined.
  std::atomic<bool> cancel{false};
  std::vector<std::future<push_outcome>> posts;
  for (size_t i = 0; i < receivers_.size(); ++i) {
    const int device = i < options_.receiver_devices.size() ? options_.receiver_devices[i] : -1;
    std::string body = "{\"unique_id\": \"" + id64 + "\", \"nranks\": " + std::to_string(nranks) +
                       ", \"rank\": " + std::to_string(i + 1) + ", \"device\": " + std::to_string(device) +
                       ", \"group\": " + json_string(options_.group) +
                       ", \"chunk_bytes\": " + std::to_string(options_.chunk_bytes) +
                       ", \"timeout_ms\": " + std::to_string(options_.timeout_ms) + "}";
    posts.push_back(std::async(std::launch::async, [this, i, body = std::move(body), &cancel] {
      auto out = transport_.post_all({receivers_[i]}, "/nccl/init", body);
      push_outcome o = out.empty() ? push_outcome{receivers_[i], 0, "", "no outcome", 0} : out.front();
      if (!o.ok()) cancel.store(true);  // our own join would wait for this rank until the timeout
      return o;
    }));
  }
  gpu::channel_params p;
  p.id = id;
  p.nranks = nranks;
  p.rank = 0;
  p.device = options_.device;
  p.chunk_bytes = options_.chunk_bytes;
  p.timeout_ms = options_.timeout_ms;
  auto ch = options_.factory(p, cancel);
  if (!ch) cancel.store(true);
  std::string failures;
  for (size_t i = 0; i < posts.size(); ++i) {
    push_outcome o = posts[i].get();
    if (o.ok()) continue;
    failures += (failures.empty() ? "" : "; ") + receivers_[i] + " " +
                (o.http_status ? "answered " + std::to_string(o.http_status) + ": " + o.body : "unreachable: " + o.transport_error);
  }
  if (!failures.empty())
    return error(errc::receiver_failed, "NCCL group set-up failed (POST /nccl/init): " + failures);
  if (!ch) return error(ch.err().code, "NCCL group set-up: rank 0: " + ch.err().message);
  channel_ = std::move(ch).value();
  ++groups_built_;
  DS_LOG(info, "nccl", "group '%s' built (%d ranks, sender on device %d)", options_.group.c_str(), nranks, options_.device);
  return {};
}

std::vector<push_outcome> nccl_pusher::push(const std::string& sync_body, const std::vector<nccl_file>& files) {
  DS_CHECK(channel_ != nullptr, "nccl_pusher::push without a group (call ensure_group first)");
  std::atomic<bool> broadcasting{true};
  std::atomic<bool> cancel{false};
  std::vector<std::future<push_outcome>> posts;
  for (const auto& url : receivers_) {
    posts.push_back(std::async(std::launch::async, [this, url, &sync_body, &broadcasting, &cancel] {
      auto out = transport_.post_all({url}, "/sync", sync_body);
      push_outcome o = out.empty() ? push_outcome{url, 0, "", "no outcome", 0} : out.front();
      // An answer before our broadcasts ended, other than a drained refusal: that receiver is not taking
      // part, so waiting for it would only run into the timeout.
      if (broadcasting.load() && !o.ok() && !drained_refusal(o.http_status)) cancel.store(true);
      return o;
    }));
  }
  status sent;
  for (const auto& f : files) {
    if (f.bytes.empty()) continue;  // nothing on the wire for an empty file (the receiver skips it too)
    sent = channel_->send(f.bytes, cancel);
    if (!sent) {
      sent = error(sent.err().code, "broadcast of " + f.name + ": " + sent.err().message);
      break;
    }
  }
  broadcasting.store(false);
  if (!sent) {
    DS_LOG(warn, "nccl", "%s; dropping the group", sent.err().describe().c_str());
    drop_group();
  }
  std::vector<push_outcome> out;
  for (auto& p : posts) {
    push_outcome o = p.get();
    if (!sent && o.ok()) {
      // Cannot happen (the receiver needs every byte), but a broken broadcast must never count as acked.
      o.http_status = 0;
      o.transport_error = sent.err().describe();
    } else if (!sent && o.http_status == 0) {
      o.transport_error += " (" + sent.err().describe() + ")";
    }
    out.push_back(std::move(o));
  }
  // A receiver that failed for a reason other than a drained refusal may have left the group (or never
  // drained): rebuild it before the next sync rather than risk unmatched broadcasts.
  for (const auto& o : out)
    if (!o.ok() && !drained_refusal(o.http_status)) drop_group();
  return out;
}

}  // namespace deltasync
