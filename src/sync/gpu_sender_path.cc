// The Sender's GPU side: see gpu_sender_path.h.
#include "sync/gpu_sender_path.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <map>

#include "base/check.h"
#include "codec/delta_format.h"
#include "codec/diff.h"
#include "codec/zstd_frame.h"
#include "gpu/gpu.h"
#include "gpu/kernels.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "sync/gpu_delta_writer.h"

namespace deltasync {

struct gpu_sender_path::snapshot {
  dtype type = dtype::BF16;
  uint64_t numel = 0;
  gpu::device_buffer dev;     // when on the device
  gpu::pinned_buffer host;    // otherwise
  bool on_device = false;
  // The changes of the sync in progress: [uint32 positions, padded to 8 bytes | values], on the device.
  gpu::device_buffer pending;
  uint64_t pending_count = 0;
  bool has_pending = false;
};

namespace {
uint64_t pad8(uint64_t n) { return (n + 7) / 8 * 8; }

// A device bucket of one dtype: the tensors' encoded positions and values, appended in add() order.
struct device_bucket {
  std::vector<gpu_sender_path::bucket_param> params;
  std::vector<uint64_t> counts;
  std::vector<uint32_t> widths;
  gpu::device_buffer pos, vals;
  uint64_t pos_bytes = 0, val_bytes = 0;
};

// Copies n device bytes to the end of `b` (holding `used` bytes), growing it (contents kept).
status append_device(gpu::device_buffer& b, uint64_t used, const void* src, uint64_t n, gpu::stream& s) {
  if (n == 0) return {};
  if (used + n > b.size()) {
    DS_ASSIGN_OR_RETURN(gpu::device_buffer nb, gpu::device_buffer::allocate(std::max<uint64_t>(
                                                   {used + n, b.size() + b.size() / 2, uint64_t{1} << 20})));
    if (used > 0) DS_TRY_STATUS(gpu::copy_d2d(nb.data(), b.data(), used, s));
    DS_TRY_STATUS(s.synchronize());  // the old buffer is freed below
    b = std::move(nb);
  }
  return gpu::copy_d2d(static_cast<std::byte*>(b.data()) + used, src, n, s);
}
}  // namespace

struct gpu_sender_path::state {
  uint64_t budget = 0;
  uint64_t used = 0;
  int device = -1;
  std::unique_ptr<gpu::stream> s;
  gpu::diff_encoder enc;
  gpu::digester dig;
  std::vector<std::pair<uint64_t, digest128*>> digests;  // started: ticket -> where its digest goes
  gpu::pinned_buffer out;
  gpu::device_buffer scratch;
  // The compact encoder's output and scratch (encode_compact).
  gpu::device_buffer compact_out;
  gpu::compact_scratch compact;
  // The last diff(), for bucket_last().
  std::string last_name;
  uint64_t last_count = 0;
  uint32_t last_width = 4;
  uint64_t last_pos_bytes = 0, last_val_bytes = 0;
  std::map<dtype, device_bucket> buckets;
  gpu::device_buffer payload, file;  // the last finish_bucket()'s file, on the device
  uint64_t file_bytes = 0;
  // The writer's loop, backend and pinned pool, created by the first write().
  std::unique_ptr<io::event_loop> loop;
  std::unique_ptr<io::io_backend> backend;
  std::unique_ptr<io::buffer_pool> pool;
};

gpu_sender_path::gpu_sender_path(uint64_t device_budget_bytes) : st_(std::make_unique<state>()) {
  st_->budget = device_budget_bytes;
}
gpu_sender_path::~gpu_sender_path() {
  if (st_->device >= 0) (void)gpu::set_device(st_->device);
  snaps_.clear();
  st_->pool.reset();  // unpins its buffers; before the backend and the loop
  st_->backend.reset();
  st_->loop.reset();
  st_.reset();
}

int gpu_sender_path::device_index(std::string_view device) noexcept {
  if (device == "cuda") return 0;
  if (device.substr(0, 5) != "cuda:" || device.size() == 5) return -1;
  int n = -1;
  auto [p, ec] = std::from_chars(device.data() + 5, device.data() + device.size(), n);
  if (ec != std::errc() || p != device.data() + device.size() || n < 0) return -1;
  return n;
}

bool gpu_sender_path::on_device(const std::string& name) const {
  auto it = snaps_.find(name);
  return it != snaps_.end() && it->second->on_device;
}

namespace {
status use_device(gpu_sender_path&, int& current, int device, std::unique_ptr<gpu::stream>& s) {
  if (current >= 0 && current != device)
    return error(errc::invalid_argument, "the sender's device tensors must all be on one device (cuda:" +
                                             std::to_string(current) + " and cuda:" + std::to_string(device) + ")");
  DS_TRY_STATUS(gpu::available());
  DS_TRY_STATUS(gpu::set_device(device));
  current = device;
  if (!s) s = std::make_unique<gpu::stream>();
  return {};
}
}  // namespace

status gpu_sender_path::seed(const std::string& name, const void* data, int device, dtype type, uint64_t numel) {
  state& m = *st_;
  DS_TRY_STATUS(use_device(*this, m.device, device, m.s));
  const uint64_t nbytes = numel * element_bytes(type);
  auto snap = std::make_unique<snapshot>();
  snap->type = type;
  snap->numel = numel;
  if (auto old = snaps_.find(name); old != snaps_.end() && old->second->on_device) m.used -= old->second->dev.size();
  uint64_t free_bytes = 0, total = 0;
  DS_TRY_STATUS(gpu::memory_info(free_bytes, total));
  // Keep a quarter of the free memory for the trainer and the encoder's scratch.
  if (m.used + nbytes <= m.budget && nbytes <= free_bytes - free_bytes / 4) {
    DS_ASSIGN_OR_RETURN(snap->dev, gpu::device_buffer::allocate(nbytes));
    DS_TRY_STATUS(gpu::copy_d2d(snap->dev.data(), data, nbytes, *m.s));
    snap->on_device = true;
    m.used += nbytes;
  } else {
    DS_ASSIGN_OR_RETURN(snap->host, gpu::pinned_buffer::allocate(nbytes));
    DS_TRY_STATUS(gpu::copy_d2h(snap->host.data(), data, nbytes, *m.s));
  }
  DS_TRY_STATUS(m.s->synchronize());
  snaps_[name] = std::move(snap);
  return {};
}

status gpu_sender_path::start_digest(const std::string& name, const void* data, digest128* dest) {
  state& m = *st_;
  auto it = snaps_.find(name);
  if (it == snaps_.end()) return error(errc::invalid_argument, "tensor '" + name + "': no device snapshot");
  const snapshot& sn = *it->second;
  DS_ASSIGN_OR_RETURN(uint64_t ticket, m.dig.start(data, sn.numel * element_bytes(sn.type), *m.s));
  m.digests.emplace_back(ticket, dest);
  return {};
}

result<digest128> gpu_sender_path::sum_digest(const std::string& name, const void* data) {
  state& m = *st_;
  auto it = snaps_.find(name);
  if (it == snaps_.end()) return error(errc::invalid_argument, "tensor '" + name + "': no device snapshot");
  const snapshot& sn = *it->second;
  const uint32_t eb = element_bytes(sn.type);
  return gpu::sum_digest(data, sn.numel * eb, eb, *m.s);
}

status gpu_sender_path::await_digests() {
  state& m = *st_;
  for (auto& [ticket, dest] : m.digests) {
    auto d = m.dig.collect(ticket);
    if (!d.ok()) {
      drop_digests();
      return std::move(d).err();
    }
    *dest = *d;
  }
  m.digests.clear();
  return {};
}

void gpu_sender_path::drop_digests() noexcept {
  st_->dig.drop_pending();
  st_->digests.clear();
}

status gpu_sender_path::diff(const std::string& name, const void* data, int device, encoding enc, uint64_t& changed) {
  state& m = *st_;
  auto it = snaps_.find(name);
  if (it == snaps_.end()) return error(errc::invalid_argument, "tensor '" + name + "': no device snapshot");
  DS_TRY_STATUS(use_device(*this, m.device, device, m.s));
  snapshot& sn = *it->second;
  const uint32_t eb = element_bytes(sn.type);
  gpu::diff_input in;
  in.current = data;
  in.snapshot = sn.on_device ? sn.dev.data() : sn.host.data();
  in.snapshot_on_host = !sn.on_device;
  in.numel = sn.numel;
  in.elem_bytes = eb;
  DS_ASSIGN_OR_RETURN(gpu::encoded_layout layout, m.enc.encode({&in, 1}, enc, *m.s));
  const uint64_t count = layout.counts[0];
  changed = count;
  m.last_name = name;
  m.last_count = count;
  m.last_width = layout.pos_width[0];
  m.last_pos_bytes = layout.positions_bytes;
  m.last_val_bytes = layout.values_bytes;
  sn.has_pending = count > 0;
  sn.pending_count = count;
  if (count == 0) return {};
  // Kept for commit(): the raw positions (the scatter's input) and the values.
  DS_TRY_STATUS(gpu::grow(sn.pending, pad8(count * 4) + count * eb));
  auto* p = static_cast<std::byte*>(sn.pending.data());
  DS_TRY_STATUS(gpu::copy_d2d(p, m.enc.positions(), count * 4, *m.s));
  return gpu::copy_d2d(p + pad8(count * 4), m.enc.values(), count * eb, *m.s);
}

status gpu_sender_path::fetch(const std::string& name, std::vector<uint32_t>& positions, byte_buffer& values) {
  state& m = *st_;
  auto it = snaps_.find(name);
  DS_CHECK(it != snaps_.end(), "gpu_sender_path::fetch: unknown tensor");
  const snapshot& sn = *it->second;
  const uint64_t count = sn.has_pending ? sn.pending_count : 0;
  const uint32_t eb = element_bytes(sn.type);
  positions.resize(count);
  values.resize(count * eb);
  if (count == 0) return {};
  const uint64_t bytes = pad8(count * 4) + count * eb;
  DS_TRY_STATUS(gpu::grow(m.out, bytes));
  DS_TRY_STATUS(gpu::copy_d2h(m.out.data(), sn.pending.data(), bytes, *m.s));
  DS_TRY_STATUS(m.s->synchronize());
  std::memcpy(positions.data(), m.out.data(), count * 4);
  std::memcpy(values.data(), static_cast<const std::byte*>(m.out.data()) + pad8(count * 4), count * eb);
  return {};
}

status gpu_sender_path::encode_compact(const std::string& name, byte_buffer& stream) {
  state& m = *st_;
  auto it = snaps_.find(name);
  DS_CHECK(it != snaps_.end(), "gpu_sender_path::encode_compact: unknown tensor");
  const snapshot& sn = *it->second;
  const uint64_t count = sn.has_pending ? sn.pending_count : 0;
  const uint32_t eb = element_bytes(sn.type);
  const auto* pending = static_cast<const std::byte*>(sn.pending.data());
  const auto* positions = reinterpret_cast<const uint32_t*>(pending);
  // The old values: gathered from the snapshot where it lives (device), or staged from its pinned host copy.
  DS_TRY_STATUS(gpu::grow(m.scratch, std::max<uint64_t>(count * eb, 8)));
  if (count > 0) {
    if (sn.on_device) {
      DS_TRY_STATUS(gpu::gather(sn.dev.data(), eb, positions, count, m.scratch.data(), *m.s));
    } else {
      std::vector<uint32_t> host_pos(count);
      DS_TRY_STATUS(gpu::copy_d2h(host_pos.data(), positions, count * 4, *m.s));
      DS_TRY_STATUS(m.s->synchronize());
      DS_TRY_STATUS(gpu::grow(m.out, count * eb));
      const auto* base = static_cast<const std::byte*>(sn.host.data());
      auto* out = static_cast<std::byte*>(m.out.data());
      for (uint64_t k = 0; k < count; ++k) std::memcpy(out + k * eb, base + uint64_t{host_pos[k]} * eb, eb);
      DS_TRY_STATUS(gpu::copy_h2d(m.scratch.data(), m.out.data(), count * eb, *m.s));
    }
  }
  uint64_t bytes = 0;
  DS_TRY_STATUS(gpu::compact_encode(positions, m.scratch.data(), pending + pad8(count * 4), count, eb, m.compact_out,
                                    bytes, m.compact, *m.s));
  DS_TRY_STATUS(gpu::grow(m.out, bytes));
  DS_TRY_STATUS(gpu::copy_d2h(m.out.data(), m.compact_out.data(), bytes, *m.s));
  DS_TRY_STATUS(m.s->synchronize());
  stream.assign(static_cast<const std::byte*>(m.out.data()), static_cast<const std::byte*>(m.out.data()) + bytes);
  return {};
}

status gpu_sender_path::bucket_last(dtype type, const std::string& name, const std::vector<uint64_t>& shape) {
  state& m = *st_;
  DS_CHECK(name == m.last_name && m.last_count > 0, "gpu_sender_path::bucket_last: not the last diff");
  device_bucket& b = m.buckets[type];
  const auto* payload = static_cast<const std::byte*>(m.enc.payload());
  DS_TRY_STATUS(append_device(b.pos, b.pos_bytes, payload, m.last_pos_bytes, *m.s));
  DS_TRY_STATUS(append_device(b.vals, b.val_bytes, payload + m.last_pos_bytes, m.last_val_bytes, *m.s));
  b.pos_bytes += m.last_pos_bytes;
  b.val_bytes += m.last_val_bytes;
  b.params.push_back({name, shape});
  b.counts.push_back(m.last_count);
  b.widths.push_back(m.last_width);
  return {};
}

uint64_t gpu_sender_path::bucket_payload_bytes(dtype type) const {
  auto it = st_->buckets.find(type);
  return it == st_->buckets.end() ? 0 : it->second.pos_bytes + it->second.val_bytes;
}

bool gpu_sender_path::bucket_empty(dtype type) const {
  auto it = st_->buckets.find(type);
  return it == st_->buckets.end() || it->second.params.empty();
}

std::vector<gpu_sender_path::bucket_param> gpu_sender_path::bucket_params(dtype type) const {
  auto it = st_->buckets.find(type);
  return it == st_->buckets.end() ? std::vector<bucket_param>{} : it->second.params;
}

void gpu_sender_path::bucket_clear(dtype type) {
  auto it = st_->buckets.find(type);
  if (it == st_->buckets.end()) return;
  device_bucket& b = it->second;
  b.params.clear();
  b.counts.clear();
  b.widths.clear();
  b.pos_bytes = b.val_bytes = 0;  // the device buffers stay for the next bucket
}

result<gpu_sender_path::built_file> gpu_sender_path::finish_bucket(dtype type, encoding enc, uint64_t version,
                                                                   uint64_t data_alignment, const native_fields* native,
                                                                   bool to_host) {
  state& m = *st_;
  auto it = m.buckets.find(type);
  DS_CHECK(it != m.buckets.end() && !it->second.params.empty(), "gpu_sender_path::finish_bucket: empty bucket");
  device_bucket& b = it->second;
  DS_TRY_STATUS(gpu::set_device(m.device));
  gpu::encoded_layout layout;
  std::vector<device_param> params;
  uint64_t pos_off = 0, val_off = 0;
  for (size_t i = 0; i < b.params.size(); ++i) {
    params.push_back({b.params[i].name, type, b.params[i].shape});
    layout.counts.push_back(b.counts[i]);
    layout.pos_width.push_back(b.widths[i]);
    layout.pos_offset.push_back(pos_off);
    layout.val_offset.push_back(val_off);
    pos_off += b.counts[i] * b.widths[i];
    val_off += b.counts[i];
  }
  DS_CHECK(pos_off == b.pos_bytes && val_off * element_bytes(type) == b.val_bytes, "device bucket: sizes disagree");
  layout.positions_bytes = b.pos_bytes;
  layout.values_bytes = b.val_bytes;
  const uint64_t payload_bytes = layout.payload_bytes();
  // The data section, contiguous: the slime checksum and the native payload hash are taken over it.
  DS_TRY_STATUS(gpu::grow(m.payload, payload_bytes));
  auto* payload = static_cast<std::byte*>(m.payload.data());
  DS_TRY_STATUS(gpu::copy_d2d(payload, b.pos.data(), b.pos_bytes, *m.s));
  DS_TRY_STATUS(gpu::copy_d2d(payload + b.pos_bytes, b.vals.data(), b.val_bytes, *m.s));
  DS_ASSIGN_OR_RETURN(byte_buffer header, device_delta_header(enc, version, params, layout, payload, data_alignment,
                                                              native, m.dig, *m.s));
  built_file out;
  out.bytes = header.size() + payload_bytes;
  if (to_host) {
    out.host.resize(out.bytes);
    std::memcpy(out.host.data(), header.data(), header.size());
    DS_TRY_STATUS(gpu::copy_d2h(out.host.data() + header.size(), payload, payload_bytes, *m.s));
    DS_TRY_STATUS(m.s->synchronize());
    if (enc == encoding::deltas_zstd) {
      DS_ASSIGN_OR_RETURN(out.host, zstd_wrap(out.host, 1));
      out.bytes = out.host.size();
    }
  } else {
    // The whole file on the device, for its hash (the publish marker's) and the GPU -> pinned -> file stream.
    DS_TRY_STATUS(gpu::grow(m.file, out.bytes));
    auto* file = static_cast<std::byte*>(m.file.data());
    DS_TRY_STATUS(gpu::copy_h2d(file, header.data(), header.size(), *m.s));
    DS_TRY_STATUS(gpu::copy_d2d(file + header.size(), payload, payload_bytes, *m.s));
    DS_ASSIGN_OR_RETURN(out.xxh3_64, m.dig.digest64(file, out.bytes, *m.s));
    m.file_bytes = out.bytes;
  }
  bucket_clear(type);
  return out;
}

status gpu_sender_path::write(const std::string& path) {
  state& m = *st_;
  DS_TRY_STATUS(gpu::set_device(m.device));
  if (!m.pool) {
    m.loop = std::make_unique<io::event_loop>();
    io::io_backend_options bo;
    bo.quiet = true;
    DS_ASSIGN_OR_RETURN(m.backend, io::make_io_backend(*m.loop, bo));
    io::buffer_pool_options po;
    po.buffer_bytes = 16 << 20;
    po.max_total_bytes = 128 << 20;
    po.pin = [](void* p, size_t n) { return gpu::register_host(p, n); };
    po.unpin = [](void* p, size_t) { gpu::unregister_host(p); };
    DS_ASSIGN_OR_RETURN(m.pool, io::buffer_pool::create(*m.loop, m.backend.get(), po));
  }
  return write_device_file(*m.backend, *m.pool, path, {}, m.file.data(), m.file_bytes, *m.s);
}

status gpu_sender_path::commit(const std::string& name) {
  state& m = *st_;
  auto it = snaps_.find(name);
  DS_CHECK(it != snaps_.end(), "gpu_sender_path::commit: unknown tensor");
  snapshot& sn = *it->second;
  if (!sn.has_pending) return {};
  const uint32_t eb = element_bytes(sn.type);
  DS_TRY_STATUS(gpu::set_device(m.device));
  if (!sn.on_device) {
    std::vector<uint32_t> positions;
    byte_buffer values;
    DS_TRY_STATUS(fetch(name, positions, values));
    mutable_byte_span dest(static_cast<std::byte*>(sn.host.data()), sn.numel * eb);
    DS_TRY_STATUS(scatter_apply(dest, sn.type, positions, values, sn.type));
  } else {
    const auto* p = static_cast<const std::byte*>(sn.pending.data());
    DS_TRY_STATUS(gpu::scatter_apply(sn.dev.data(), sn.type, sn.numel, reinterpret_cast<const uint32_t*>(p),
                                     sn.pending_count, p + pad8(sn.pending_count * 4), sn.type, nullptr, *m.s));
  }
  sn.has_pending = false;
  return {};
}

void gpu_sender_path::drop_pending() {
  for (auto& [name, sn] : snaps_) sn->has_pending = false;
  for (auto& [type, b] : st_->buckets) {
    b.params.clear();
    b.counts.clear();
    b.widths.clear();
    b.pos_bytes = b.val_bytes = 0;
  }
}

}  // namespace deltasync
