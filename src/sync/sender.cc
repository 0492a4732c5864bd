// The Sender: bitwise diff against a host snapshot, bucketed delta files written atomically, the pre-push
// hook, one /sync push to every receiver, and a snapshot that advances only after every receiver acked.
#include "sync/sender.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <set>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>

#include "base/check.h"
#include "codec/diff.h"
#include "codec/digest.h"
#include "io/sync_io.h"

extern char** environ;  // NOLINT: POSIX declares it nowhere in a header

namespace deltasync {
namespace {

namespace fs = std::filesystem;

// Positions are uint32 element indices.
constexpr uint64_t kMaxNumel = (uint64_t{1} << 32) - 1;

using steady = std::chrono::steady_clock;

double seconds_since(steady::time_point t0) {
  return std::chrono::duration<double>(steady::now() - t0).count();
}

std::string version_dir_name(uint64_t version) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "weight_v%06" PRIu64, version);
  return buf;
}

std::string file_name(uint32_t rank, uint32_t flush) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "rank%04" PRIu32 "_flush%06" PRIu32 ".safetensors", rank, flush);
  return buf;
}

// JSON string escaping for the /sync body; the names we send are our own, but a delta dir may hold anything.
std::string json_quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

// Runs `command` through /bin/sh -c with extra environment entries and waits for it. Returns the exit status
// (128 + signal when it was killed, as a shell reports it).
result<int> run_hook(const std::string& command, const std::vector<std::string>& extra_env) {
  std::vector<std::string> env_store;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    bool replaced = false;
    for (const auto& x : extra_env)
      if (entry.substr(0, x.find('=') + 1) == std::string_view(x).substr(0, x.find('=') + 1)) replaced = true;
    if (!replaced) env_store.emplace_back(entry);
  }
  for (const auto& x : extra_env) env_store.push_back(x);
  std::vector<char*> envp;
  envp.reserve(env_store.size() + 1);
  for (auto& s : env_store) envp.push_back(s.data());
  envp.push_back(nullptr);

  std::string sh = "/bin/sh", dash_c = "-c", cmd = command;
  char* argv[] = {sh.data(), dash_c.data(), cmd.data(), nullptr};
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, "/bin/sh", nullptr, nullptr, argv, envp.data());
  if (rc != 0) return errno_error(rc, "pre-push hook: spawn /bin/sh");
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) return errno_error(errno, "pre-push hook: waitpid");
  }
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
  return 255;
}

}  // namespace

struct sender::impl {
  struct snapshot_tensor {
    dtype type = dtype::BF16;
    std::vector<uint64_t> shape;
    byte_buffer bytes;
  };
  // What a sync changed in one tensor, kept until the push is acknowledged. Full mode keeps the whole new
  // tensor in `values` (whole = true) instead of positions 0..n-1.
  struct pending_change {
    dtype type = dtype::BF16;
    std::vector<uint64_t> shape;
    bool whole = false;
    std::vector<uint32_t> positions;
    byte_buffer values;
  };

  sender_options options;
  push_transport* transport = nullptr;
  std::unordered_map<std::string, snapshot_tensor> snapshot;

  // The sync in progress.
  bool active = false;
  uint64_t version = 0;
  std::string dir;  // {delta_dir}/weight_v{N:06d}
  // One open bucket per dtype: a bucket mixing BF16 and F32 would promote every BF16 value to F32 and double
  // its value bytes. Together the open buckets stay under buffer_bytes (plus one tensor): when they reach
  // it, the largest is flushed.
  struct bucket {
    explicit bucket(encoding enc) : builder(enc) {}
    delta_bucket_builder builder;
    native_fields native;
  };
  std::map<dtype, bucket> buckets;
  uint32_t flushes = 0;
  std::set<std::string> added;
  std::unordered_map<std::string, pending_change> pending;
  sync_report report;
  sync_report last;

  // Scratch reused across add() calls.
  std::vector<uint32_t> positions;
  byte_buffer values;

  uint64_t open_payload_bytes() const noexcept {
    uint64_t n = 0;
    for (const auto& [type, b] : buckets) n += b.builder.payload_bytes();
    return n;
  }

  // Writes one bucket as the next file and empties it.
  status flush(bucket& b) {
    auto t0 = steady::now();
    const native_fields* native = nullptr;
    if (options.format == wire_format::native) {
      b.native.base_version = report.base_version;
      native = &b.native;
    }
    DS_ASSIGN_OR_RETURN(byte_buffer file, b.builder.finish(version, options.data_alignment, native));
    b.native.tensor_digests.clear();
    report.diff_encode_s += seconds_since(t0);

    t0 = steady::now();
    const std::string name = file_name(options.rank, flushes);
    DS_TRY_STATUS(io::write_file_atomic(dir + "/" + name, file));
    report.write_s += seconds_since(t0);
    ++flushes;
    report.files.push_back(name);
    report.wire_bytes += file.size();
    return {};
  }

  void remove_dir() {
    if (dir.empty()) return;
    std::error_code ec;
    fs::remove_all(dir, ec);  // best effort: a leftover dir is replaced by the next begin() of its version
  }

  // Ends the sync: drops the files unless asked to keep them (or nobody was pushed to), forgets pending
  // changes.
  void end_sync(bool keep) {
    if (!keep) remove_dir();
    active = false;
    dir.clear();
    buckets.clear();
    added.clear();
    pending.clear();
  }

  void commit() {
    for (auto& [name, c] : pending) {
      auto it = snapshot.find(name);
      if (c.whole || it == snapshot.end()) {
        snapshot[name] = snapshot_tensor{c.type, std::move(c.shape), std::move(c.values)};
        continue;
      }
      auto st = scatter_apply(it->second.bytes, c.type, c.positions, c.values, c.type);
      DS_CHECK(st.ok(), "sender: a diff of the snapshot does not apply to it");
    }
  }
};

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
  if (t.device != "cpu")
    return error(errc::invalid_argument, "tensor '" + name + "': device '" + t.device + "' is not supported yet");
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

std::string shape_text(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

status sender::seed(const std::string& name, const tensor_view& t) {
  if (impl_->active) return error(errc::invalid_argument, "seed '" + name + "': a sync is in progress");
  DS_ASSIGN_OR_RETURN(uint64_t numel, checked_numel(name, t));
  const size_t nbytes = numel * element_bytes(t.type);
  const auto* p = static_cast<const std::byte*>(t.data);
  impl_->snapshot[name] = impl::snapshot_tensor{t.type, t.shape, byte_buffer(p, p + nbytes)};
  return {};
}

status sender::begin(uint64_t version) {
  impl& s = *impl_;
  if (s.active) return error(errc::invalid_argument, "begin(" + std::to_string(version) + "): sync " +
                                                        std::to_string(s.version) + " is still in progress");
  if (s.options.transport == "nccl") return error(errc::unsupported, "NCCL transport not built yet");
  if (s.options.transport != "disk")
    return error(errc::unsupported, "unknown transport '" + s.options.transport + "' (disk or nccl)");
  if (version <= snapshot_version_)
    return error(errc::invalid_argument, "sync version " + std::to_string(version) +
                                             " is not above the snapshot's version " +
                                             std::to_string(snapshot_version_));
  if (s.options.delta_dir.empty()) return error(errc::invalid_argument, "sender: no delta dir");
  if (!s.options.receivers.empty() && s.transport == nullptr)
    return error(errc::invalid_argument, "sender: receivers given but no push transport");
  if (s.options.buffer_bytes == 0) return error(errc::invalid_argument, "sender: buffer size 0");

  const std::string dir = s.options.delta_dir + "/" + version_dir_name(version);
  std::error_code ec;
  fs::remove_all(dir, ec);  // a stale dir of the same version (a crashed or refused earlier attempt)
  if (ec) return error(errc::io_error, "remove stale " + dir + ": " + ec.message());
  fs::create_directories(dir, ec);
  if (ec) return error(errc::io_error, "create " + dir + ": " + ec.message());

  s.active = true;
  s.version = version;
  s.dir = dir;
  s.flushes = 0;
  s.buckets.clear();
  s.added.clear();
  s.pending.clear();
  s.report = {};
  s.report.version = version;
  s.report.base_version = snapshot_version_;
  return {};
}

namespace {

// diff_tensor over a large tensor split into chunks diffed on several threads (memory-bound scans scale with
// cores), then concatenated in order, so the result equals one diff_tensor call.
void parallel_diff(byte_span before, byte_span now, uint32_t eb, std::vector<uint32_t>& positions, byte_buffer& values) {
  constexpr size_t kMinChunkBytes = size_t{8} << 20;
  const size_t threads = std::min<size_t>(8, std::max(1u, std::thread::hardware_concurrency()));
  const size_t chunks = std::min(threads, now.size() / kMinChunkBytes);
  if (chunks <= 1) {
    diff_tensor(before, now, eb, positions, values);
    return;
  }
  // Chunk boundaries on 64-byte multiples (a multiple of every element size), so block skipping still applies.
  const size_t step = (now.size() / chunks) & ~size_t{63};
  struct part {
    std::vector<uint32_t> pos;
    byte_buffer vals;
  };
  std::vector<part> parts(chunks);
  auto run = [&](size_t c) {
    const size_t begin = c * step;
    const size_t end = c + 1 == chunks ? now.size() : begin + step;
    diff_tensor(before.subspan(begin, end - begin), now.subspan(begin, end - begin), eb, parts[c].pos, parts[c].vals);
    const auto offset = static_cast<uint32_t>(begin / eb);
    for (auto& p : parts[c].pos) p += offset;
  };
  std::vector<std::future<void>> pending;
  for (size_t c = 1; c < chunks; ++c) pending.push_back(std::async(std::launch::async, run, c));
  run(0);
  for (auto& f : pending) f.get();
  for (auto& p : parts) {
    positions.insert(positions.end(), p.pos.begin(), p.pos.end());
    values.insert(values.end(), p.vals.begin(), p.vals.end());
  }
}

}  // namespace

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

  const auto t0 = steady::now();
  s.report.dense_bytes += now.size();
  s.positions.clear();
  s.values.clear();
  impl::pending_change change{t.type, t.shape, full, {}, {}};
  // The native per-tensor digest reads the tensor once more: for large tensors it runs on a second thread
  // while this one diffs (both are memory-bound scans; on two or more cores they overlap).
  const bool native = s.options.format == wire_format::native;
  std::future<digest128> digest;
  if (native && now.size() >= (4u << 20)) digest = std::async(std::launch::async, [now] { return xxh3_128(now); });
  if (full) {
    s.positions.resize(numel);
    for (uint64_t i = 0; i < numel; ++i) s.positions[i] = static_cast<uint32_t>(i);
    change.values.assign(now.begin(), now.end());
  } else {
    parallel_diff(snap->second.bytes, now, eb, s.positions, s.values);
  }
  if (s.positions.empty()) {
    if (digest.valid()) digest.wait();  // it reads the caller's buffer: finish before returning
    s.report.diff_encode_s += seconds_since(t0);
    return {};  // unchanged: nothing to ship, nothing to advance
  }

  impl::bucket& b = s.buckets.try_emplace(t.type, s.options.enc).first->second;
  DS_CHECK(b.builder.can_add(t.type), "sender: a single-dtype bucket refused its own dtype");
  const byte_span vals = full ? byte_span(change.values) : byte_span(s.values);
  b.builder.add(param_delta{name, t.type, t.shape, s.positions, vals});
  if (native) b.native.tensor_digests[name] = digest.valid() ? digest.get() : xxh3_128(now);
  s.report.changed_elements += s.positions.size();
  if (!full) {
    change.positions = s.positions;
    change.values = s.values;
  }
  s.pending[name] = std::move(change);
  s.report.diff_encode_s += seconds_since(t0);

  while (s.open_payload_bytes() >= s.options.buffer_bytes) {
    auto largest = s.buckets.begin();
    for (auto it = s.buckets.begin(); it != s.buckets.end(); ++it)
      if (it->second.builder.payload_bytes() > largest->second.builder.payload_bytes()) largest = it;
    DS_TRY_STATUS(s.flush(largest->second));
  }
  return {};
}

void sender::abort() {
  impl& s = *impl_;
  if (!s.active) return;
  s.end_sync(s.options.keep_files);
}

result<sync_report> sender::finish() {
  impl& s = *impl_;
  if (!s.active) return error(errc::invalid_argument, "finish: no sync begun");
  const bool keep = s.options.keep_files || s.options.receivers.empty();
  auto fail = [&](error e) -> result<sync_report> {
    s.last = s.report;
    s.end_sync(keep);
    return e;
  };

  // The last bucket; an empty one when nothing changed anywhere, so receivers still advance the version.
  for (auto& [type, b] : s.buckets) {
    if (b.builder.empty()) continue;
    auto st = s.flush(b);
    if (!st.ok()) return fail(std::move(st).err());
  }
  if (s.report.files.empty()) {
    impl::bucket empty(s.options.enc);
    auto st = s.flush(empty);
    if (!st.ok()) return fail(std::move(st).err());
  }

  if (!s.options.pre_push_hook.empty()) {
    const auto t0 = steady::now();
    auto rc = run_hook(s.options.pre_push_hook,
                       {"DELTASYNC_VERSION=" + std::to_string(s.version), "DELTASYNC_DIR=" + s.dir});
    s.report.hook_s = seconds_since(t0);
    if (!rc.ok()) return fail(std::move(rc).err());
    if (*rc != 0)
      return fail(error(errc::io_error, "pre-push hook exited " + std::to_string(*rc) + "; nothing pushed (sync " +
                                            std::to_string(s.version) + ")"));
  }

  if (!s.options.receivers.empty()) {
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
    s.report.receivers = s.transport->post_all(s.options.receivers, "/sync", body);
    s.report.push_s = seconds_since(t0);

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
                                                   " (snapshot kept at " + std::to_string(snapshot_version_) +
                                                   "): " + failures));
  }

  // Every receiver acknowledged: only now does the snapshot move (slime #2104).
  s.commit();
  snapshot_version_ = s.version;
  s.report.snapshot_advanced = true;
  s.last = s.report;
  s.end_sync(keep);
  return s.last;
}

}  // namespace deltasync
