// The Sender: bitwise diff against a host snapshot, bucketed delta files written atomically, the pre-push
// hook, one /sync push to every receiver; publishing is the commit point (the snapshot advances once the marker is
// durable; lagging receivers catch up from the kept chain), except over NCCL (every receiver must ack). Its
// state and bucket machinery (flush, publish marker, end of sync, commit) are in sync/sender_impl.{h,cc}.
#include "sync/sender.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <set>
#include <system_error>
#include <unordered_map>
#include <utility>

#include "base/check.h"
#include "base/log.h"
#include "codec/diff.h"
#include "codec/digest.h"
#include "codec/sum_digest.h"
#include "sync/parallel_sum.h"
#include "io/file_lock.h"
#include "sync/fleet_state.h"
#include "sync/gpu_sender_path.h"
#include "sync/publish_marker.h"
#include "sync/sender_impl.h"
#include "sync/sender_util.h"

namespace deltasync {
namespace {

namespace fs = std::filesystem;

// Positions are uint32 element indices.
constexpr uint64_t kMaxNumel = (uint64_t{1} << 32) - 1;

using sender_detail::seconds_since;
using sender_detail::steady;

}  // namespace

sender::sender(sender_options options, push_transport* transport) : impl_(std::make_unique<impl>()) {
  impl_->options = std::move(options);
  impl_->transport = transport;
}

sender::~sender() {
  if (impl_->active) abort();
}

const sync_report& sender::last_report() const noexcept { return impl_->last; }
bool sender::in_sync() const noexcept { return impl_->active; }

namespace {

result<uint64_t> checked_numel(const std::string& name, const tensor_view& t) {
  if (t.device != "cpu" && gpu_sender_path::device_index(t.device) < 0)
    return error(errc::invalid_argument, "tensor '" + name + "': device '" + t.device + "' is not cpu, cuda or cuda:N");
  const uint32_t eb = element_bytes(t.type);
  if (eb == 0 || t.type == dtype::C64)
    return error(errc::invalid_argument,
                 "tensor '" + name + "': dtype " + std::string(deltasync::name(t.type)) + " cannot be synced");
  uint64_t n = 1;
  for (uint64_t d : t.shape)
    if (__builtin_mul_overflow(n, d, &n))
      return error(errc::limit_exceeded, "tensor '" + name + "': shape overflows 64 bits");
  if (n > kMaxNumel)
    return error(errc::limit_exceeded, "tensor '" + name + "': " + std::to_string(n) +
                                           " elements exceed 32-bit positions");
  if (n > 0 && t.data == nullptr) return error(errc::invalid_argument, "tensor '" + name + "': no data");
  return n;
}

}  // namespace

status sender::seed(const std::string& name, const tensor_view& t) {
  if (impl_->active) return error(errc::invalid_argument, "seed '" + name + "': a sync is in progress");
  DS_ASSIGN_OR_RETURN(uint64_t numel, checked_numel(name, t));
  const size_t nbytes = numel * element_bytes(t.type);
  if (t.device != "cpu") {
    if (!impl_->gpu) impl_->gpu = std::make_unique<gpu_sender_path>(impl_->options.gpu_snapshot_budget_bytes);
    DS_TRY_STATUS(impl_->gpu->seed(name, t.data, gpu_sender_path::device_index(t.device), t.type, numel));
    impl_->snapshot[name] = impl::snapshot_tensor{t.type, t.shape, {}, true};
    return {};
  }
  const auto* p = static_cast<const std::byte*>(t.data);
  impl_->snapshot[name] = impl::snapshot_tensor{t.type, t.shape, byte_buffer(p, p + nbytes), false};
  return {};
}

status sender::begin(uint64_t version) {
  impl& s = *impl_;
  if (s.active) return error(errc::invalid_argument, "begin(" + std::to_string(version) + "): sync " +
                                                        std::to_string(s.version) + " is still in progress");
  if (s.options.transport != "disk" && s.options.transport != "nccl")
    return error(errc::unsupported, "unknown transport '" + s.options.transport + "' (disk or nccl)");
  if (version <= snapshot_version_)
    return error(errc::invalid_argument, "sync version " + std::to_string(version) +
                                             " is not above the snapshot's version " +
                                             std::to_string(snapshot_version_));
  if (s.options.delta_dir.empty() && !s.nccl()) return error(errc::invalid_argument, "sender: no delta dir");
  if (s.nccl() && s.options.receivers.empty())
    return error(errc::invalid_argument, "sender: the nccl transport needs receivers (it writes no files)");
  if (!s.options.receivers.empty() && s.transport == nullptr)
    return error(errc::invalid_argument, "sender: receivers given but no push transport");
  if (s.options.buffer_bytes == 0) return error(errc::invalid_argument, "sender: buffer size 0");
  if (s.options.enc == encoding::compact &&
      (s.options.format != wire_format::native || s.options.mode != update_mode::delta))
    return error(errc::invalid_argument,
                 "sender: the compact encoding needs the native format and delta mode (its values are differences "
                 "against the receiver's base)");

  const std::string dir =
      s.nccl() ? std::string() : s.options.delta_dir + "/" + version_dir_name(version, s.options.anchor_layout);
  if (!s.nccl()) {
    std::error_code ec;
    fs::create_directories(s.options.delta_dir, ec);
    if (ec) return error(errc::io_error, "create " + s.options.delta_dir + ": " + ec.message());
    DS_ASSIGN_OR_RETURN(s.dir_lock, io::file_lock::acquire(s.options.delta_dir + "/" + std::string(kSenderLockName),
                                                           "sync " + std::to_string(version) +
                                                               ": another sender is publishing into the delta dir"));
    if (!s.options.anchor_layout && version_published(s.options.delta_dir, version)) {
      s.dir_lock.release();
      return error(errc::version_conflict, "sync version " + std::to_string(version) + " was already published (" +
                                               dir + " holds a publish marker); a published version is never "
                                               "rewritten: publish under a new version number");
    }
    fs::remove_all(dir, ec);  // a stale dir of the same version (a crashed earlier attempt: no marker)
    if (!ec) fs::create_directories(dir, ec);
    if (ec) {
      s.dir_lock.release();
      return error(errc::io_error, "prepare " + dir + ": " + ec.message());
    }
  }

  s.active = true;
  s.version = version;
  s.dir = dir;
  s.flushes = 0;
  s.buckets.clear();
  s.added.clear();
  s.pending.clear();
  s.written.clear();
  s.write_failed = false;
  s.report = {};
  s.report.version = version;
  s.report.base_version = snapshot_version_;
  return {};
}

status sender::add(const std::string& name, const tensor_view& t) {
  impl& s = *impl_;
  if (!s.active) return error(errc::invalid_argument, "add '" + name + "': no sync begun");
  DS_ASSIGN_OR_RETURN(uint64_t numel, checked_numel(name, t));
  const uint32_t eb = element_bytes(t.type);
  const byte_span now(static_cast<const std::byte*>(t.data), numel * eb);
  const bool full = s.options.mode == update_mode::full;

  auto snap = s.snapshot.find(name);
  if (snap == s.snapshot.end() && !full)
    return error(errc::invalid_argument, "add '" + name + "': not in the snapshot (seed it first)");
  if (snap != s.snapshot.end() && (snap->second.type != t.type || snap->second.shape != t.shape))
    return error(errc::invalid_argument, "add '" + name + "': " + std::string(deltasync::name(t.type)) + " " +
                                             shape_text(t.shape) + " differs from the snapshot's " +
                                             std::string(deltasync::name(snap->second.type)) + " " +
                                             shape_text(snap->second.shape));
  if (!s.added.insert(name).second)
    return error(errc::invalid_argument, "add '" + name + "': added twice in sync " + std::to_string(s.version));

  const bool on_gpu = t.device != "cpu";
  if (on_gpu != (snap != s.snapshot.end() && snap->second.on_gpu)) {
    s.added.erase(name);
    return error(errc::invalid_argument, "add '" + name + "': on " + t.device + " but seeded on " +
                                             (on_gpu ? "the host" : "a GPU") + " (full mode needs host tensors)");
  }
  const auto t0 = steady::now();
  s.report.dense_bytes += now.size();
  s.positions.clear();
  s.values.clear();
  impl::pending_change change{t.type, t.shape, full, {}, {}};
  // The per-tensor digest (native files, and slime files with slime_digests) reads the tensor once more: for
  // large tensors it runs on a second thread while this one diffs (both are memory-bound scans; on two or more
  // cores they overlap).
  const bool native = s.options.format == wire_format::native || s.options.slime_digests;
  std::future<digest128> digest;
  if (native && !on_gpu && now.size() >= (4u << 20))
    digest = std::async(std::launch::async, [now] { return xxh3_128(now); });
  uint64_t gpu_changed = 0;
  if (on_gpu) {
    // Diffed and encoded on the device, where the changes stay.
    // compact is encoded on the host from the raw changes (fetch below), so the device keeps them as indices.
    const encoding dev_enc = s.options.enc == encoding::compact ? encoding::indices : s.options.enc;
    DS_TRY_STATUS(s.gpu->diff(name, t.data, gpu_sender_path::device_index(t.device), dev_enc, gpu_changed));
  } else if (full) {
    s.positions.resize(numel);
    for (uint64_t i = 0; i < numel; ++i) s.positions[i] = static_cast<uint32_t>(i);
    change.values.assign(now.begin(), now.end());
  } else {
    parallel_diff(snap->second.bytes, now, eb, s.positions, s.values);
  }
  if (s.positions.empty() && gpu_changed == 0) {
    if (digest.valid()) digest.wait();  // it reads the caller's buffer: finish before returning
    s.report.diff_encode_s += seconds_since(t0);
    return {};  // unchanged: nothing to ship, nothing to advance
  }

  impl::bucket& b = s.buckets.try_emplace(t.type, s.options.enc).first->second;
  DS_CHECK(b.builder.can_add(t.type), "sender: a single-dtype bucket refused its own dtype");
  const bool compact = s.options.enc == encoding::compact;
  if (on_gpu && b.builder.empty() && !compact) {
    DS_TRY_STATUS(s.gpu->bucket_last(t.type, name, t.shape));  // the bucket is built on the device
    b.on_gpu = true;
  } else if (compact && on_gpu) {
    // Encoded on the device, byte for byte what the host encoder writes; only the stream comes back.
    DS_TRY_STATUS(s.to_host(t.type, b));
    byte_buffer stream;
    DS_TRY_STATUS(s.gpu->encode_compact(name, stream));
    b.builder.add_compact_stream(name, t.type, t.shape, gpu_changed, stream);
  } else {
    if (on_gpu) DS_TRY_STATUS(s.gpu->fetch(name, s.positions, s.values));  // joins a host bucket
    DS_TRY_STATUS(s.to_host(t.type, b));
    const byte_span vals = full ? byte_span(change.values) : byte_span(s.values);
    if (compact) {
      // The receiver holds the snapshot's values; compact codes the new ones against them.
      byte_buffer old(s.positions.size() * eb);
      const std::byte* base = snap->second.bytes.data();
      for (size_t k = 0; k < s.positions.size(); ++k)
        std::memcpy(old.data() + k * eb, base + uint64_t{s.positions[k]} * eb, eb);
      b.builder.add_compact(param_delta{name, t.type, t.shape, s.positions, vals}, old);
    } else {
      b.builder.add(param_delta{name, t.type, t.shape, s.positions, vals});
    }
  }
  if (native && on_gpu) {
    // The device digest of the new tensor: read now, finished before the bucket's file is built (flush).
    DS_TRY_STATUS(s.gpu->start_digest(name, t.data, &b.native.tensor_digests[name]));
    const uint32_t sb = element_bytes(t.type);
    if (!full && (sb == 1 || sb == 2 || sb == 4 || sb == 8)) {
      // The additive digest, as the host path writes it (one pass over the device tensor, ~1 ms per GiB).
      DS_ASSIGN_OR_RETURN(b.native.tensor_sums[name], s.gpu->sum_digest(name, t.data));
    }
  } else if (native) {
    b.native.tensor_digests[name] = digest.valid() ? digest.get() : xxh3_128(now);
    const uint32_t sb = element_bytes(t.type);
    if (!full && (sb == 1 || sb == 2 || sb == 4 || sb == 8)) {
      // The additive digest of the new tensor from the snapshot's, in O(changed elements): the receiver
      // checks it instead of hashing the tensor (codec/sum_digest.h).
      impl::snapshot_tensor& old = snap->second;
      if (!old.sum) {  // the first time this tensor changes: one pass over it, on every core
        const sum_input whole{old.bytes, sb};
        old.sum = parallel_sum_digests({&whole, 1})[0];
      }
      digest128 next = *old.sum;
      sum_delta d;
      for (size_t k = 0; k < s.positions.size(); ++k) {
        const uint64_t at = uint64_t{s.positions[k]} * sb;
        d.change(s.positions[k], sum_detail::element_bits(old.bytes.data() + at, sb),
                 sum_detail::element_bits(s.values.data() + k * sb, sb));
      }
      d.apply(next);
      b.native.tensor_sums[name] = next;
      change.new_sum = next;
    }
  }
  s.report.changed_elements += on_gpu ? gpu_changed : s.positions.size();
  if (!full && !on_gpu) {
    change.positions = s.positions;
    change.values = s.values;
  }
  s.pending[name] = std::move(change);
  s.report.diff_encode_s += seconds_since(t0);

  while (s.open_payload_bytes() >= s.options.buffer_bytes) {
    auto largest = s.buckets.begin();
    for (auto it = s.buckets.begin(); it != s.buckets.end(); ++it)
      if (s.payload_bytes(it->first, it->second) > s.payload_bytes(largest->first, largest->second)) largest = it;
    DS_TRY_STATUS(s.flush(largest->first, largest->second));
  }
  return {};
}

void sender::abort() {
  impl& s = *impl_;
  if (!s.active) return;
  s.end_sync(s.options.keep_files);
}

result<sync_report> sender::finish_sync() {
  impl& s = *impl_;
  if (!s.active) return error(errc::invalid_argument, "finish: no sync begun");
  // Disk / pull: a published dir is kept for lagging receivers; retention prunes it (fleet_state.h).
  const bool keep = s.options.keep_files || s.options.receivers.empty() || !s.nccl();
  auto fail = [&](error e) -> result<sync_report> {
    s.last = s.report;
    s.end_sync(keep);
    return e;
  };

  // The last bucket; an empty one when nothing changed anywhere, so receivers still advance the version.
  for (auto& [type, b] : s.buckets) {
    if (s.bucket_empty(type, b)) continue;
    auto st = s.flush(type, b);
    if (!st.ok()) return fail(std::move(st).err());
  }
  if (s.report.files.empty()) {
    impl::bucket empty(s.options.enc);
    auto st = s.flush(dtype::BF16, empty);
    if (!st.ok()) return fail(std::move(st).err());
  }
  if (!s.nccl()) {  // NCCL syncs write no files, so no marker
    if (auto st = s.write_marker(); !st.ok()) return fail(std::move(st).err());
  }

  if (!s.options.pre_push_hook.empty()) {
    const auto t0 = steady::now();
    auto rc = run_hook(s.options.pre_push_hook,
                       {"DELTASYNC_VERSION=" + std::to_string(s.version), "DELTASYNC_DIR=" + s.dir});
    s.report.hook_s = seconds_since(t0);
    if (!rc.ok()) return fail(std::move(rc).err());
    if (*rc != 0) {
      s.write_failed = true;  // never published: the dir (and its marker) goes, whatever keep_files says
      return fail(error(errc::io_error, "pre-push hook exited " + std::to_string(*rc) + "; nothing pushed (sync " +
                                            std::to_string(s.version) + ")"));
    }
  }

  if (s.nccl()) {
    if (!s.pusher) s.pusher = std::make_unique<nccl_pusher>(s.options.nccl, *s.transport, s.options.receivers);
    const auto t0 = steady::now();
    if (auto g = s.pusher->ensure_group(); !g) {
      s.report.push_s = seconds_since(t0);
      return fail(error(g.err().code, "sync " + std::to_string(s.version) + " not sent (snapshot kept at " +
                                          std::to_string(snapshot_version_) + "): " + g.err().message));
    }
    std::string body = "{\"version\": " + std::to_string(s.version) +
                       ", \"base_version\": " + std::to_string(s.report.base_version) +
                       ", \"transport\": \"nccl\", \"group\": " + json_quote(s.options.nccl.group) +
                       ", \"dir\": " + json_quote(version_dir_name(s.version)) + ", \"files\": [";
    for (size_t i = 0; i < s.nccl_files.size(); ++i) body += (i ? ", " : "") + json_quote(s.nccl_files[i].name);
    body += "], \"sizes\": [";
    for (size_t i = 0; i < s.nccl_files.size(); ++i) body += (i ? ", " : "") + std::to_string(s.nccl_files[i].bytes.size());
    body += "]}";
    s.report.receivers = s.pusher->push(body, s.nccl_files);
    s.report.push_s = seconds_since(t0);
  } else if (!s.options.receivers.empty()) {
    std::string body = "{\"version\": " + std::to_string(s.version) +
                       ", \"base_version\": " + std::to_string(s.report.base_version) +
                       (s.options.pull_base_url.empty()
                            ? std::string(", \"transport\": \"disk\"")
                            : ", \"transport\": \"http\", \"base_url\": " + json_quote(s.options.pull_base_url)) +
                       ", \"dir\": " + json_quote(version_dir_name(s.version)) +
                       ", \"files\": [";
    for (size_t i = 0; i < s.report.files.size(); ++i) body += (i ? ", " : "") + json_quote(s.report.files[i]);
    body += "]}";
    const auto t0 = steady::now();
    s.report.receivers = s.transport->post_all(s.options.receivers, "/sync", body, std::max<uint64_t>(1, s.report.wire_bytes));
    s.report.push_s = seconds_since(t0);
  }
  // Disk / pull: the version is committed now (marker durable, hook passed), whatever the receivers answer;
  // except when EVERY receiver refused its files as invalid (422): nobody holds it and nobody could replay it,
  // so it is withdrawn (dir removed, snapshot kept: the next sync carries its changes, as over NCCL).
  bool withdrawn = !s.nccl() && !s.options.receivers.empty() &&
                   s.report.receivers.size() == s.options.receivers.size();
  for (const auto& o : s.report.receivers) withdrawn = withdrawn && o.http_status == 422;
  if (withdrawn) s.write_failed = true;
  const bool commit_point = !s.nccl() && !withdrawn;
  if (commit_point && !s.options.receivers.empty()) {
    auto fleet = load_fleet_state(s.options.delta_dir);
    if (!fleet) {
      DS_LOG(warn, "sender", "%s; starting a new fleet state", fleet.err().describe().c_str());
      fleet = fleet_state{};
    }
    for (const auto& url : s.options.receivers) fleet->acked.try_emplace(url, s.report.base_version);
    for (size_t i = 0; i < s.options.receivers.size() && i < s.report.receivers.size(); ++i)
      if (s.report.receivers[i].ok()) fleet->acked[s.options.receivers[i]] = s.version;
    fleet->published = s.version;
    if (auto st = save_fleet_state(s.options.delta_dir, *fleet); !st)
      DS_LOG(warn, "sender", "fleet state not saved: %s", st.err().describe().c_str());
    s.report.acked = fleet->acked;
    if (!s.options.keep_files)
      s.report.pruned = prune_published(s.options.delta_dir, fleet->min_acked(s.options.receivers, s.version), s.version);
  }
  if (commit_point) {
    s.commit();
    snapshot_version_ = s.version;
    s.report.snapshot_advanced = true;
  }
  if (!s.options.receivers.empty()) {
    std::string failures;
    size_t failed = 0;
    for (size_t i = 0; i < s.options.receivers.size(); ++i) {
      const push_outcome* o = i < s.report.receivers.size() ? &s.report.receivers[i] : nullptr;
      if (o != nullptr && o->ok()) continue;
      ++failed;
      if (!failures.empty()) failures += "; ";
      failures += "receiver " + s.options.receivers[i];
      if (o == nullptr)
        failures += " got no outcome";
      else if (o->http_status == 0)
        failures += " unreachable: " + o->transport_error;
      else
        failures += " answered " + std::to_string(o->http_status) + ": " + o->body;
    }
    if (failed > 0)
      return fail(error(errc::receiver_failed, std::to_string(failed) + " of " +
                                                   std::to_string(s.options.receivers.size()) +
                                                   " receivers failed sync " + std::to_string(s.version) +
                                                   (commit_point ? " (published: they catch up at the next push): "
                                                    : withdrawn ? " (every receiver refused its files: withdrawn, snapshot kept at " +
                                                                      std::to_string(snapshot_version_) + "): "
                                                                : " (snapshot kept at " + std::to_string(snapshot_version_) + "): ") +
                                                   failures));
  }

  if (!commit_point) {  // NCCL / withdrawn: every receiver acknowledged, only now does the snapshot move (slime #2104)
    s.commit();
    snapshot_version_ = s.version;
    s.report.snapshot_advanced = true;
  }
  s.last = s.report;
  s.end_sync(keep);
  return s.last;
}

}  // namespace deltasync
