// The Sender's GPU side: see gpu_sender_path.h.
#include "sync/gpu_sender_path.h"

#include <charconv>
#include <cstring>

#include "base/check.h"
#include "codec/delta_format.h"
#include "codec/diff.h"
#include "gpu/gpu.h"
#include "gpu/kernels.h"

namespace deltasync {

struct gpu_sender_path::snapshot {
  dtype type = dtype::BF16;
  uint64_t numel = 0;
  gpu::device_buffer dev;     // when on the device
  gpu::pinned_buffer host;    // otherwise
  bool on_device = false;
};

struct gpu_sender_path::state {
  uint64_t budget = 0;
  uint64_t used = 0;
  int device = -1;
  std::unique_ptr<gpu::stream> s;
  gpu::diff_encoder enc;
  gpu::digester dig;
  gpu::pinned_buffer out;
  gpu::device_buffer scratch;
};

gpu_sender_path::gpu_sender_path(uint64_t device_budget_bytes) : st_(std::make_unique<state>()) {
  st_->budget = device_budget_bytes;
}
gpu_sender_path::~gpu_sender_path() {
  if (st_->device >= 0) (void)gpu::set_device(st_->device);
  snaps_.clear();
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

status gpu_sender_path::diff(const std::string& name, const void* data, int device, std::vector<uint32_t>& positions,
                             byte_buffer& values, digest128* digest) {
  state& m = *st_;
  auto it = snaps_.find(name);
  if (it == snaps_.end()) return error(errc::invalid_argument, "tensor '" + name + "': no device snapshot");
  DS_TRY_STATUS(use_device(*this, m.device, device, m.s));
  const snapshot& sn = *it->second;
  const uint32_t eb = element_bytes(sn.type);
  gpu::diff_input in;
  in.current = data;
  in.snapshot = sn.on_device ? sn.dev.data() : sn.host.data();
  in.snapshot_on_host = !sn.on_device;
  in.numel = sn.numel;
  in.elem_bytes = eb;
  // `indices`: the payload is the positions as uint32 LE, then the values; the Sender's bucket re-encodes.
  DS_ASSIGN_OR_RETURN(gpu::encoded_layout layout, m.enc.encode({&in, 1}, encoding::indices, *m.s));
  const uint64_t count = layout.counts[0];
  if (digest != nullptr) {
    DS_ASSIGN_OR_RETURN(*digest, m.dig.digest(data, sn.numel * eb, *m.s));
  }
  positions.resize(count);
  values.resize(count * eb);
  if (count == 0) return {};
  DS_TRY_STATUS(gpu::grow(m.out, layout.payload_bytes()));
  DS_TRY_STATUS(gpu::copy_d2h(m.out.data(), m.enc.payload(), layout.payload_bytes(), *m.s));
  DS_TRY_STATUS(m.s->synchronize());
  std::memcpy(positions.data(), m.out.data(), count * 4);
  std::memcpy(values.data(), static_cast<const std::byte*>(m.out.data()) + layout.positions_bytes, count * eb);
  return {};
}

status gpu_sender_path::commit(const std::string& name, const std::vector<uint32_t>& positions, byte_span values) {
  state& m = *st_;
  auto it = snaps_.find(name);
  DS_CHECK(it != snaps_.end(), "gpu_sender_path::commit: unknown tensor");
  snapshot& sn = *it->second;
  const uint32_t eb = element_bytes(sn.type);
  if (!sn.on_device) {
    mutable_byte_span dest(static_cast<std::byte*>(sn.host.data()), sn.numel * eb);
    return scatter_apply(dest, sn.type, positions, values, sn.type);
  }
  DS_TRY_STATUS(gpu::set_device(m.device));
  const uint64_t pos_bytes = (positions.size() * 4 + 7) / 8 * 8;  // values stay 8-byte aligned
  DS_TRY_STATUS(gpu::grow(m.out, pos_bytes + values.size()));
  DS_TRY_STATUS(gpu::grow(m.scratch, pos_bytes + values.size()));
  auto* stage = static_cast<std::byte*>(m.out.data());
  std::memcpy(stage, positions.data(), positions.size() * 4);
  std::memcpy(stage + pos_bytes, values.data(), values.size());
  DS_TRY_STATUS(gpu::copy_h2d(m.scratch.data(), stage, pos_bytes + values.size(), *m.s));
  auto* dpos = m.scratch.as<uint32_t>();
  return gpu::scatter_apply(sn.dev.data(), sn.type, sn.numel, dpos, positions.size(),
                            m.scratch.as<std::byte>() + pos_bytes, sn.type, nullptr, *m.s);
}

}  // namespace deltasync
