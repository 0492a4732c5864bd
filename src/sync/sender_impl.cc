// The Sender's bucket machinery (struct sender::impl, declared in sync/sender_impl.h): a bucket moved from the
// device to the host builder, a bucket flushed as the next delta file (or NCCL buffer), the publish marker, the
// end of a sync and the snapshot commit after every receiver acknowledged.
#include "sync/sender_impl.h"

#include <chrono>
#include <filesystem>
#include <system_error>
#include <thread>
#include <utility>

#include "base/check.h"
#include "codec/diff.h"
#include "codec/digest.h"
#include "io/sync_io.h"
#include "sync/sender_util.h"

namespace deltasync {
namespace {

namespace fs = std::filesystem;

using sender_detail::seconds_since;
using sender_detail::steady;

}  // namespace

status sender::impl::to_host(dtype type, bucket& b) {
  if (!b.on_gpu) return {};
  std::vector<uint32_t> pos;
  byte_buffer vals;
  for (const auto& p : gpu->bucket_params(type)) {
    DS_TRY_STATUS(gpu->fetch(p.name, pos, vals));
    b.builder.add(param_delta{p.name, type, p.shape, pos, vals});
  }
  gpu->bucket_clear(type);
  b.on_gpu = false;
  return {};
}

status sender::impl::flush(dtype type, bucket& b) {
  auto t0 = steady::now();
  if (gpu) DS_TRY_STATUS(gpu->await_digests());  // device tensors' digests, started in add()
  const native_fields* native = nullptr;
  if (options.format == wire_format::native || options.slime_digests) {
    b.native.base_version = report.base_version;
    b.native.slime = options.format == wire_format::slime;
    native = &b.native;
  }
  const std::string name = file_name(options.rank, flushes);
  byte_buffer file;
  if (b.on_gpu) {
    const bool to_host = nccl() || options.enc == encoding::deltas_zstd;
    DS_ASSIGN_OR_RETURN(auto built, gpu->finish_bucket(type, options.enc, version, options.data_alignment, native, to_host));
    b.native.tensor_digests.clear();
    b.native.tensor_sums.clear();
    report.diff_encode_s += seconds_since(t0);
    if (!to_host) {
      t0 = steady::now();
      if (auto st = gpu->write(dir + "/" + name); !st) {
        write_failed = true;
        return st;
      }
      return flushed(name, built.bytes, built.xxh3_64, t0);
    }
    file = std::move(built.host);
  } else {
    b.native.records = options.native_records;
    DS_ASSIGN_OR_RETURN(file, b.builder.finish(version, options.data_alignment, native));
    b.native.tensor_digests.clear();
    b.native.tensor_sums.clear();
    report.diff_encode_s += seconds_since(t0);
  }

  t0 = steady::now();
  if (nccl()) {
    report.wire_bytes += file.size();
    nccl_files.push_back({name, std::move(file)});
    ++flushes;
    report.files.push_back(name);
    return {};
  }
  if (auto st = io::write_file_atomic(dir + "/" + name, file); !st) {
    write_failed = true;
    return st;
  }
  return flushed(name, file.size(), xxh3_64(file), t0);
}

status sender::impl::flushed(const std::string& name, uint64_t bytes, uint64_t hash, steady::time_point t0) {
  report.write_s += seconds_since(t0);
  ++flushes;
  report.files.push_back(name);
  report.wire_bytes += bytes;
  written.push_back(publish_marker::file{name, bytes, hash});
  if (options.test_flush_delay_ms)
    std::this_thread::sleep_for(std::chrono::milliseconds(options.test_flush_delay_ms));
  return {};
}

status sender::impl::write_marker() {
  publish_marker m;
  m.version = version;
  m.base_version = report.base_version;
  m.wire_format = options.format == wire_format::native ? "native" : "slime";
  m.encoding = std::string(encoding_name(options.enc));
  m.files = written;
  m.anchor = options.anchor_layout;
  const std::string text = serialize_publish_marker(m);
  const byte_span bytes(reinterpret_cast<const std::byte*>(text.data()), text.size());
  if (auto st = io::write_file_atomic(dir + "/" + std::string(kPublishMarkerName), bytes); !st) {
    write_failed = true;
    return st;
  }
  return {};
}

void sender::impl::remove_dir() {
  if (dir.empty()) return;
  std::error_code ec;
  fs::remove_all(dir, ec);  // best effort: a leftover dir is replaced by the next begin() of its version
}

void sender::impl::end_sync(bool keep) {
  if (gpu) gpu->drop_digests();  // an aborted sync's (a finished one awaited them all)
  if (!keep || write_failed) remove_dir();
  dir_lock.release();
  write_failed = false;
  written.clear();
  active = false;
  dir.clear();
  buckets.clear();
  added.clear();
  pending.clear();
  nccl_files.clear();
  if (gpu) gpu->drop_pending();
}

void sender::impl::commit() {
  for (auto& [name, c] : pending) {
    auto it = snapshot.find(name);
    if (it != snapshot.end() && it->second.on_gpu) {
      auto st = gpu->commit(name);
      DS_CHECK(st.ok(), "sender: a diff of the device snapshot does not apply to it");
      continue;
    }
    if (c.whole || it == snapshot.end()) {
      snapshot[name] = snapshot_tensor{c.type, std::move(c.shape), std::move(c.values)};
      continue;
    }
    auto st = scatter_apply(it->second.bytes, c.type, c.positions, c.values, c.type);
    DS_CHECK(st.ok(), "sender: a diff of the snapshot does not apply to it");
    it->second.sum = c.new_sum;  // nullopt when this sync did not keep it: recomputed at the next need
  }
}

}  // namespace deltasync
