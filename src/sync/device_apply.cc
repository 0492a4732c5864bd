// The device apply engine: see device_apply.h.
#include "sync/device_apply.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "base/check.h"
#include "codec/positions.h"
#include "gpu/gpu.h"
#include "gpu/kernels.h"

namespace deltasync {

namespace {

constexpr size_t kLanes = 4;
constexpr uint64_t kAlign = 16;
constexpr uint64_t kArenaBlockBytes = 64ull << 20;

uint64_t round_up(uint64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

std::string label_of(const store_tensor& t) { return "tensor \"" + t.name + "\""; }

std::string shape_string(const std::vector<uint64_t>& shape) {
  std::string out = "[";
  for (size_t k = 0; k < shape.size(); ++k) out += (k ? ", " : "") + std::to_string(shape[k]);
  return out + "]";
}

// Host -> device through a ring of pinned slots: while slot k's bytes cross PCIe, the next piece is copied
// into slot k + 1; a slot is refilled only once its last copy finished (its event).
class staging_ring {
 public:
  static constexpr size_t kSlots = 4;
  static constexpr uint64_t kSlotBytes = 8ull << 20;

  status upload(void* dst, const std::byte* src, uint64_t n, gpu::stream& s) {
    if (n == 0) return {};
    if (mem_.size() == 0) {
      DS_ASSIGN_OR_RETURN(mem_, gpu::pinned_buffer::allocate(kSlots * kSlotBytes));
    }
    auto* out = static_cast<std::byte*>(dst);
    while (n > 0) {
      const size_t k = next_;
      next_ = (next_ + 1) % kSlots;
      if (pending_[k]) DS_TRY_STATUS(done_[k].synchronize());
      const uint64_t c = std::min(n, kSlotBytes);
      std::byte* slot = mem_.as<std::byte>() + k * kSlotBytes;
      std::memcpy(slot, src, c);
      DS_TRY_STATUS(gpu::copy_h2d(out, slot, c, s));
      DS_TRY_STATUS(done_[k].record(s));
      pending_[k] = true;
      src += c;
      out += c;
      n -= c;
    }
    return {};
  }

 private:
  gpu::pinned_buffer mem_;
  gpu::event done_[kSlots];
  bool pending_[kSlots] = {};
  size_t next_ = 0;
};

// What a device undo record holds: its positions (encoded as the file had them, or decoded uint32 for a
// compact stream) and the overwritten values, in an arena slot that `slot` keeps alive.
struct device_saved {
  std::shared_ptr<void> slot;
  const std::byte* positions = nullptr;
  bool decoded = false;
  const std::byte* old_values = nullptr;
  uint64_t count = 0;
};

}  // namespace

status check_param(const store_tensor& t, const delta_file& f, const param_entry& p, const undo_log& undo) {
  const std::string label = label_of(t);
  if (p.type != t.type)
    return error(errc::delta_dtype_mismatch,
                 label + ": the delta holds " + std::string(name(p.type)) + ", the store " + std::string(name(t.type)));
  const uint32_t eb = element_bytes(t.type);
  if (eb == 0)
    return error(errc::delta_dtype_mismatch, label + ": sub-byte dtype " + std::string(name(t.type)) +
                                                 " cannot be delta-applied");
  if (p.shape != t.shape)
    return error(errc::delta_shape_mismatch,
                 label + ": the delta has shape " + shape_string(p.shape) + ", the store " + shape_string(t.shape));
  if (p.pos_start > p.pos_end || p.pos_end > f.positions.size())
    return error(errc::delta_manifest_bounds, label + ": positions range lies outside the file's __positions__");
  if (f.manifest.enc != encoding::compact) {
    const uint32_t veb = element_bytes(f.values_type);
    if (p.val_start > p.val_end || veb == 0 || p.val_end > f.values.size() / veb)
      return error(errc::delta_manifest_bounds, label + ": values range lies outside the file's __values__");
  }
  const uint64_t count = p.changed();
  const uint64_t undo_bytes = (p.pos_end - p.pos_start) + count * eb;
  if (undo.bytes() + undo_bytes > undo.max_bytes())
    return error(errc::limit_exceeded, label + ": recording " + std::to_string(count) +
                                           " overwritten elements would pass the undo limit of " +
                                           std::to_string(undo.max_bytes()) + " bytes");
  return {};
}

// Device memory for the undo records of a sync: bump allocation in blocks kept from sync to sync; when the
// last record of a sync goes (commit or rollback), everything is free again.
class device_apply_engine::arena {
 public:
  explicit arena(uint64_t max_bytes) : max_bytes_(max_bytes) {}

  // A slot of `bytes` at `at`, alive while the returned holder is; null when the arena would pass its bound or
  // the device has no room.
  std::shared_ptr<void> take(uint64_t bytes, std::byte*& at, const std::shared_ptr<arena>& self) {
    bytes = round_up(bytes);
    std::lock_guard lk(mu_);
    if (block_ >= blocks_.size() || used_ + bytes > blocks_[block_].size()) {
      size_t k = blocks_.empty() ? 0 : block_ + 1;
      while (k < blocks_.size() && blocks_[k].size() < bytes) ++k;
      if (k == blocks_.size()) {
        const uint64_t size = std::max(bytes, kArenaBlockBytes);
        if (held_ + size > max_bytes_) return nullptr;
        auto b = gpu::device_buffer::allocate(size);
        if (!b) return nullptr;
        held_ += size;
        blocks_.push_back(std::move(b).value());
      }
      block_ = k;
      used_ = 0;
    }
    at = blocks_[block_].as<std::byte>() + used_;
    used_ += bytes;
    ++live_;
    return std::shared_ptr<void>(at, [self](void*) { self->release(); });
  }
  uint64_t held() {
    std::lock_guard lk(mu_);
    return held_;
  }
  // A new bound applies to later blocks; blocks held already stay (they are reused, never freed).
  void set_max_bytes(uint64_t max_bytes) {
    std::lock_guard lk(mu_);
    max_bytes_ = max_bytes;
  }

 private:
  void release() {
    std::lock_guard lk(mu_);
    DS_CHECK(live_ > 0, "device undo arena: a slot released twice");
    if (--live_ == 0) block_ = used_ = 0;
  }

  std::mutex mu_;
  std::vector<gpu::device_buffer> blocks_;
  size_t block_ = 0;
  uint64_t used_ = 0, live_ = 0, held_ = 0;
  uint64_t max_bytes_;  // guarded by mu_
};

struct device_apply_engine::lane {
  gpu::stream s;
  gpu::digester dig;
  staging_ring ring;
  gpu::pinned_buffer staging;                  // the host-decode baseline's and the host-record fallback's
  gpu::device_buffer raw, positions, values, old;
  gpu::decode_scratch dec;
  gpu::compact_scratch compact;
};

class device_apply_engine::lane_lease {
 public:
  lane_lease(device_apply_engine& e, lane* l) : e_(e), l_(l) {}
  lane_lease(lane_lease&& o) noexcept : e_(o.e_), l_(std::exchange(o.l_, nullptr)) {}
  ~lane_lease() {
    if (l_ == nullptr) return;
    std::lock_guard lk(e_.lanes_mu_);
    e_.free_lanes_.push_back(l_);
    e_.lanes_cv_.notify_one();
  }
  lane* operator->() const noexcept { return l_; }

 private:
  device_apply_engine& e_;
  lane* l_;
};

device_apply_engine::device_apply_engine(int device, device_apply_options options)
    : device_(device), options_(options), arena_(std::make_shared<arena>(options.max_arena_bytes)) {
  for (size_t i = 0; i < kLanes; ++i) {
    lanes_.push_back(std::make_unique<lane>());
    free_lanes_.push_back(lanes_.back().get());
  }
}

device_apply_engine::~device_apply_engine() {
  (void)gpu::set_device(device_);
  lanes_.clear();
}

result<std::unique_ptr<device_apply_engine>> device_apply_engine::create(int device, device_apply_options options) {
  DS_TRY_STATUS(gpu::available());
  DS_TRY_STATUS(gpu::set_device(device));  // the lanes' streams and events belong to it
  return std::unique_ptr<device_apply_engine>(new device_apply_engine(device, options));
}

device_apply_engine::lane_lease device_apply_engine::take_lane() {
  (void)gpu::set_device(device_);  // the calling worker may be any thread
  std::unique_lock lk(lanes_mu_);
  lanes_cv_.wait(lk, [&] { return !free_lanes_.empty(); });
  lane* l = free_lanes_.back();
  free_lanes_.pop_back();
  return lane_lease(*this, l);
}

uint64_t device_apply_engine::arena_bytes() const { return arena_->held(); }

void device_apply_engine::set_options(const device_apply_options& o) {
  options_ = o;
  arena_->set_max_bytes(o.max_arena_bytes);
}

status device_apply_engine::apply(size_t tensor, void* dest, const store_tensor& t, const delta_file& f,
                                  const param_entry& p, undo_log& undo) {
  DS_TRY_STATUS(check_param(t, f, p, undo));
  const uint32_t eb = element_bytes(t.type);
  const byte_span encoded = f.positions.subspan(p.pos_start, p.pos_end - p.pos_start);
  const uint64_t count = p.changed();
  undo_log::record rec;
  rec.tensor = tensor;
  rec.elem_bytes = eb;
  rec.enc = f.manifest.enc;
  rec.pos_width = p.pos_width;
  status st = f.manifest.enc == encoding::compact ? apply_compact(dest, t, f, p, rec)
              : options_.host_decode              ? apply_host_decode(dest, t, f, p, rec)
                                                  : apply_positions(tensor, dest, t, f, p, rec);
  if (!st) return error(st.err().code, label_of(t) + ": " + st.err().message);
  if (!rec.device) rec.encoded_positions.assign(encoded.begin(), encoded.end());
  const bool reserved = undo.reserve(encoded.size() + count * eb);
  DS_CHECK(reserved, "undo_log::reserve failed after the capacity check");
  if (count != 0) undo.records().push_back(std::move(rec));
  return {};
}

status device_apply_engine::apply_positions(size_t, void* dest, const store_tensor& t, const delta_file& f,
                                            const param_entry& p, undo_log::record& rec) {
  const encoding enc = f.manifest.enc;
  const uint32_t w = p.pos_width;
  const byte_span encoded = f.positions.subspan(p.pos_start, p.pos_end - p.pos_start);
  const uint64_t count = p.changed();
  // What the host decoder checks before it reads an entry, with its messages (codec/positions.cc).
  if (!detail::width_valid(enc, w))
    return error(errc::delta_bad_pos_width, "pos_width " + std::to_string(w) + " is not valid for encoding " +
                                                std::string(encoding_name(enc)));
  if (encoded.size() % w != 0)
    return error(errc::delta_bad_manifest, "positions range of " + std::to_string(encoded.size()) +
                                               " bytes is not a multiple of pos_width " + std::to_string(w));
  const uint64_t n = encoded.size() / w;
  const uint64_t numel = std::min(t.numel, detail::kMaxNumel + 1);
  if (n > numel)
    return error(errc::delta_position_out_of_range, std::to_string(n) + " positions for a tensor of " +
                                                        std::to_string(numel) + " elements");
  if (n != count) {
    // parse_delta_file refuses this already; keep the host decoder's precedence all the same.
    std::vector<uint32_t> positions;
    DS_TRY_STATUS(decode_positions(enc, w, encoded, t.numel, positions));
    return error(errc::delta_value_count_mismatch, std::to_string(n) + " positions for " + std::to_string(count) +
                                                       " values");
  }
  if (count == 0) return {};
  const uint32_t eb = rec.elem_bytes;
  const uint32_t veb = element_bytes(f.values_type);
  auto l = take_lane();
  // Positions and values land 16-byte aligned in one device buffer, the raw bytes of the file.
  const uint64_t pos_room = round_up(encoded.size());
  DS_TRY_STATUS(gpu::grow(l->raw, pos_room + count * veb));
  DS_TRY_STATUS(gpu::grow(l->positions, count * 4));
  std::byte* raw = l->raw.as<std::byte>();
  DS_TRY_STATUS(l->ring.upload(raw, encoded.data(), encoded.size(), l->s));
  DS_TRY_STATUS(l->ring.upload(raw + pos_room, f.values.data() + p.val_start * veb, count * veb, l->s));
  // The undo record's bytes stay on the device: the encoded positions (copied) and the old values (saved by
  // the scatter itself).
  std::byte* slot = nullptr;
  std::shared_ptr<void> hold = arena_->take(pos_room + count * eb, slot, arena_);
  void* old = nullptr;
  if (hold) {
    DS_TRY_STATUS(gpu::copy_d2d(slot, raw, encoded.size(), l->s));
    old = slot + pos_room;
  } else {
    DS_TRY_STATUS(gpu::grow(l->old, count * eb));
    old = l->old.data();
  }
  gpu::decode_scatter_args a;
  a.enc = enc;
  a.pos_width = w;
  a.encoded = raw;
  a.count = count;
  a.numel = numel;
  a.dest = dest;
  a.dest_type = t.type;
  a.values = raw + pos_room;
  a.values_type = f.values_type;
  a.positions = l->positions.as<uint32_t>();
  a.old_values = old;
  auto decoded = gpu::decode_scatter(a, l->dec, l->s);
  if (!decoded) {
    (void)l->s.synchronize();  // the copy into the arena slot may still be queued: finish it before the slot goes
    return std::move(decoded).err();
  }
  const gpu::decode_status& ds = *decoded;
  if (!ds.applied) {
    // The host decoder's errors, in its order; then scatter_apply's.
    if (enc == encoding::indices) {
      if (ds.first_not_ascending != ~0ull)
        return error(errc::delta_positions_not_ascending, "indices do not ascend strictly");
      if (ds.end >= numel)
        return error(errc::delta_position_out_of_range, "index " + std::to_string(ds.end) + " is past the tensor's " +
                                                            std::to_string(numel) + " elements");
    } else if (ds.end - 1 >= numel) {
      return error(errc::delta_position_out_of_range, "gaps run past the tensor's " + std::to_string(numel) + " elements");
    }
    DS_CHECK(ds.first_bad_value != ~0ull, "decode_scatter refused without a reason");
    return error(errc::delta_value_not_representable, "value #" + std::to_string(ds.first_bad_value) +
                                                          " is not exactly representable as " +
                                                          std::string(name(t.type)));
  }
  if (hold) {
    auto saved = std::make_shared<device_saved>();
    saved->slot = std::move(hold);
    saved->positions = slot;
    saved->old_values = slot + pos_room;
    saved->count = count;
    rec.device = std::move(saved);
    return {};
  }
  // The arena is full: the old values go to the host record.
  DS_TRY_STATUS(gpu::grow(l->staging, count * eb));
  DS_TRY_STATUS(gpu::copy_d2h(l->staging.data(), old, count * eb, l->s));
  DS_TRY_STATUS(l->s.synchronize());
  rec.old_values.resize(count * eb);
  std::memcpy(rec.old_values.data(), l->staging.data(), count * eb);
  return {};
}

status device_apply_engine::apply_host_decode(void* dest, const store_tensor& t, const delta_file& f,
                                              const param_entry& p, undo_log::record& rec) {
  const uint64_t count = p.changed();
  const uint32_t eb = rec.elem_bytes;
  const uint32_t veb = element_bytes(f.values_type);
  std::vector<uint32_t> positions;
  DS_TRY_STATUS(decode_positions(f.manifest.enc, p.pos_width, f.positions.subspan(p.pos_start, p.pos_end - p.pos_start),
                                 t.numel, positions));
  if (positions.size() != count)
    return error(errc::delta_value_count_mismatch, std::to_string(positions.size()) + " positions for " +
                                                       std::to_string(count) + " values");
  if (count == 0) return {};
  auto l = take_lane();
  const uint64_t pos_bytes = count * 4, val_bytes = count * veb;
  DS_TRY_STATUS(gpu::grow(l->staging, pos_bytes + val_bytes));
  DS_TRY_STATUS(gpu::grow(l->positions, pos_bytes));
  DS_TRY_STATUS(gpu::grow(l->values, val_bytes));
  DS_TRY_STATUS(gpu::grow(l->old, count * eb));
  std::byte* stage = l->staging.as<std::byte>();
  std::memcpy(stage, positions.data(), pos_bytes);
  std::memcpy(stage + pos_bytes, f.values.data() + p.val_start * veb, val_bytes);
  DS_TRY_STATUS(gpu::copy_h2d(l->positions.data(), stage, pos_bytes, l->s));
  DS_TRY_STATUS(gpu::copy_h2d(l->values.data(), stage + pos_bytes, val_bytes, l->s));
  DS_TRY_STATUS(gpu::scatter_apply(dest, t.type, t.numel, l->positions.as<uint32_t>(), count, l->values.data(),
                                   f.values_type, l->old.data(), l->s));
  rec.old_values.resize(count * eb);
  DS_TRY_STATUS(gpu::copy_d2h(stage, l->old.data(), count * eb, l->s));
  DS_TRY_STATUS(l->s.synchronize());
  std::memcpy(rec.old_values.data(), stage, count * eb);
  return {};
}

status device_apply_engine::apply_compact(void* dest, const store_tensor& t, const delta_file& f,
                                          const param_entry& p, undo_log::record& rec) {
  // The stream crosses PCIe as it is (~1.2 bytes per change instead of 4 + eb), is decoded and validated on the
  // device, and only then added into the tensor.
  const uint64_t count = p.changed();
  if (count == 0) return {};
  const uint32_t eb = rec.elem_bytes;
  const byte_span encoded = f.positions.subspan(p.pos_start, p.pos_end - p.pos_start);
  auto l = take_lane();
  DS_TRY_STATUS(gpu::grow(l->raw, encoded.size() + gpu::kCompactStreamPad));
  DS_TRY_STATUS(gpu::grow(l->values, count * eb));
  DS_TRY_STATUS(l->ring.upload(l->raw.data(), encoded.data(), encoded.size(), l->s));
  std::byte* slot = nullptr;
  const uint64_t pos_room = round_up(count * 4);
  std::shared_ptr<void> hold = arena_->take(pos_room + count * eb, slot, arena_);
  uint32_t* positions = nullptr;
  void* old = nullptr;
  if (hold) {
    positions = reinterpret_cast<uint32_t*>(slot);
    old = slot + pos_room;
  } else {
    DS_TRY_STATUS(gpu::grow(l->positions, count * 4));
    DS_TRY_STATUS(gpu::grow(l->old, count * eb));
    positions = l->positions.as<uint32_t>();
    old = l->old.data();
  }
  DS_TRY_STATUS(gpu::compact_decode(encoded, l->raw.data(), count, t.numel, eb, positions, l->values.data(), l->compact,
                                    l->s));
  DS_TRY_STATUS(gpu::add_apply(dest, eb, positions, count, l->values.data(), old, l->s));
  if (hold) {
    DS_TRY_STATUS(l->s.synchronize());
    auto saved = std::make_shared<device_saved>();
    saved->slot = std::move(hold);
    saved->positions = slot;
    saved->decoded = true;
    saved->old_values = slot + pos_room;
    saved->count = count;
    rec.device = std::move(saved);
    return {};
  }
  DS_TRY_STATUS(gpu::grow(l->staging, count * eb));
  DS_TRY_STATUS(gpu::copy_d2h(l->staging.data(), old, count * eb, l->s));
  DS_TRY_STATUS(l->s.synchronize());
  rec.old_values.resize(count * eb);
  std::memcpy(rec.old_values.data(), l->staging.data(), count * eb);
  return {};
}

void device_apply_engine::restore(void* dest, const store_tensor& t, const undo_log::record& rec) {
  auto l = take_lane();
  if (rec.device) {
    const auto* d = static_cast<const device_saved*>(rec.device.get());
    const uint32_t* positions = reinterpret_cast<const uint32_t*>(d->positions);
    if (!d->decoded) {
      DS_CHECK(gpu::grow(l->positions, d->count * 4).ok(), "rollback: device scratch");
      DS_CHECK(gpu::decode_positions_unchecked(rec.enc, rec.pos_width, d->positions, d->count,
                                               l->positions.as<uint32_t>(), l->dec, l->s)
                   .ok(),
               "rollback: the device decode failed");
      positions = l->positions.as<uint32_t>();
    }
    DS_CHECK(gpu::scatter_restore(dest, rec.elem_bytes, positions, d->count, d->old_values, l->s).ok(),
             "rollback: scatter on the device failed");
    return;
  }
  // A record kept on the host (the arena was full, or the host-decode path): its positions go back to the
  // device as they are and are decoded there (a compact stream's on the host: it carries its own header).
  const uint64_t count = rec.old_values.size() / rec.elem_bytes;
  DS_CHECK(rec.old_values.size() == count * rec.elem_bytes, "undo record sizes disagree");
  DS_CHECK(gpu::grow(l->positions, count * 4).ok(), "rollback: device scratch");
  DS_CHECK(gpu::grow(l->old, rec.old_values.size()).ok(), "rollback: device scratch");
  // Pageable copies (rollback is rare): the runtime stages them.
  if (rec.enc == encoding::compact) {
    std::vector<uint32_t> positions;
    DS_CHECK(decode_positions(rec.enc, rec.pos_width, rec.encoded_positions, t.numel, positions).ok(),
             "undo record positions no longer decode");
    DS_CHECK(positions.size() == count, "undo record sizes disagree");
    DS_CHECK(gpu::copy_h2d(l->positions.data(), positions.data(), count * 4, l->s).ok(), "rollback: H2D");
  } else {
    DS_CHECK(rec.encoded_positions.size() == count * rec.pos_width, "undo record sizes disagree");
    DS_CHECK(gpu::grow(l->raw, rec.encoded_positions.size()).ok(), "rollback: device scratch");
    DS_CHECK(gpu::copy_h2d(l->raw.data(), rec.encoded_positions.data(), rec.encoded_positions.size(), l->s).ok(),
             "rollback: H2D");
    DS_CHECK(gpu::decode_positions_unchecked(rec.enc, rec.pos_width, l->raw.data(), count, l->positions.as<uint32_t>(),
                                             l->dec, l->s)
                 .ok(),
             "rollback: the device decode failed");
  }
  DS_CHECK(gpu::copy_h2d(l->old.data(), rec.old_values.data(), rec.old_values.size(), l->s).ok(), "rollback: H2D");
  DS_CHECK(gpu::scatter_restore(dest, rec.elem_bytes, l->positions.as<uint32_t>(), count, l->old.data(), l->s).ok(),
           "rollback: scatter on the device failed");
}

digest128 device_apply_engine::digest(const void* data, uint64_t bytes) {
  auto l = take_lane();
  auto d = l->dig.digest(data, bytes, l->s);
  DS_CHECK(d.ok(), "device digest failed");
  return *d;
}

status device_apply_engine::copy_h2d(void* dst, const void* src, uint64_t bytes) {
  if (bytes == 0) return {};
  auto l = take_lane();
  DS_TRY_STATUS(gpu::copy_h2d(dst, src, bytes, l->s));
  return l->s.synchronize();
}

status device_apply_engine::copy_d2h(void* dst, const void* src, uint64_t bytes) {
  if (bytes == 0) return {};
  auto l = take_lane();
  DS_TRY_STATUS(gpu::copy_d2h(dst, src, bytes, l->s));
  return l->s.synchronize();
}

status device_apply_engine::copy_d2d(void* dst, const void* src, uint64_t bytes) {
  if (bytes == 0) return {};
  auto l = take_lane();
  DS_TRY_STATUS(gpu::copy_d2d(dst, src, bytes, l->s));
  return l->s.synchronize();
}

}  // namespace deltasync
