// The weight store over caller-owned memory: see borrowed_weight_store.h. Host tensors are applied with the
// codec's validated apply_param; CUDA tensors as cuda_weight_store does (positions decoded and validated on
// the host, then scattered on the device with the overwritten values saved for the undo log).
#include "sync/borrowed_weight_store.h"

#include <cstring>
#include <unordered_set>
#include <utility>

#include "base/check.h"
#include "codec/compact.h"
#include "gpu/gpu.h"
#include "gpu/kernels.h"

namespace deltasync {

namespace {

constexpr size_t kLanes = 4;

std::string label_of(const store_tensor& t) { return "tensor \"" + t.name + "\""; }

std::string shape_string(const std::vector<uint64_t>& shape) {
  std::string out = "[";
  for (size_t k = 0; k < shape.size(); ++k) out += (k ? ", " : "") + std::to_string(shape[k]);
  return out + "]";
}

}  // namespace

struct borrowed_weight_store::lane {
  gpu::stream s;
  gpu::digester dig;
  gpu::pinned_buffer staging;
  gpu::device_buffer positions, values, old;
};

class borrowed_weight_store::lane_lease {
 public:
  lane_lease(const borrowed_weight_store& store, lane* l) : store_(store), l_(l) {}
  lane_lease(lane_lease&& o) noexcept : store_(o.store_), l_(std::exchange(o.l_, nullptr)) {}
  ~lane_lease() {
    if (l_ == nullptr) return;
    std::lock_guard lk(store_.lanes_mu_);
    store_.free_lanes_.push_back(l_);
    store_.lanes_cv_.notify_one();
  }
  lane* operator->() const noexcept { return l_; }

 private:
  const borrowed_weight_store& store_;
  lane* l_;
};

borrowed_weight_store::borrowed_weight_store() = default;

borrowed_weight_store::~borrowed_weight_store() {
  if (cuda_device_ >= 0) (void)gpu::set_device(cuda_device_);
  lanes_.clear();
}

result<std::unique_ptr<borrowed_weight_store>> borrowed_weight_store::create(std::vector<borrowed_tensor> tensors) {
  std::unique_ptr<borrowed_weight_store> store(new borrowed_weight_store());
  std::unordered_set<std::string> names;
  for (const borrowed_tensor& t : tensors) {
    const std::string label = label_of(t.desc);
    if (!names.insert(t.desc.name).second) return error(errc::invalid_argument, label + " is given twice");
    uint64_t numel = 1, bytes = 0;
    for (uint64_t d : t.desc.shape) numel *= d;
    if (numel != t.desc.numel || !tensor_bytes(t.desc.type, numel, bytes) || bytes != t.desc.nbytes)
      return error(errc::invalid_argument, label + ": " + std::to_string(t.desc.nbytes) + " bytes do not hold shape " +
                                               shape_string(t.desc.shape) + " of " + std::string(name(t.desc.type)));
    if (t.data == nullptr && t.desc.nbytes != 0) return error(errc::invalid_argument, label + ": null data pointer");
    if (t.device >= 0) {
      if (store->cuda_device_ >= 0 && store->cuda_device_ != t.device)
        return error(errc::invalid_argument, label + " is on cuda:" + std::to_string(t.device) +
                                                 ", other tensors on cuda:" + std::to_string(store->cuda_device_) +
                                                 " (one receiver serves one device)");
      store->cuda_device_ = t.device;
    }
  }
  if (store->cuda_device_ >= 0) {
    DS_TRY_STATUS(gpu::available());
    DS_TRY_STATUS(gpu::set_device(store->cuda_device_));
    for (size_t k = 0; k < kLanes; ++k) {
      store->lanes_.push_back(std::make_unique<lane>());
      store->free_lanes_.push_back(store->lanes_.back().get());
    }
  }
  for (borrowed_tensor& t : tensors) {
    store->data_.push_back(t.data);
    store->devices_.push_back(t.device);
    store->add_tensor(std::move(t.desc));
  }
  store->touched_.assign(store->tensors_.size(), false);
  return store;
}

std::string_view borrowed_weight_store::kind() const noexcept { return cuda_device_ >= 0 ? "cuda" : "host"; }

borrowed_weight_store::lane_lease borrowed_weight_store::take_lane() const {
  DS_CHECK(cuda_device_ >= 0, "borrowed_weight_store: a device lane without CUDA tensors");
  (void)gpu::set_device(cuda_device_);  // the calling worker may be any thread
  std::unique_lock lk(lanes_mu_);
  lanes_cv_.wait(lk, [&] { return !free_lanes_.empty(); });
  lane* l = free_lanes_.back();
  free_lanes_.pop_back();
  return lane_lease(*this, l);
}

void borrowed_weight_store::mark_touched(size_t i) {
  std::lock_guard lk(touched_mu_);
  touched_[i] = true;
}

std::vector<size_t> borrowed_weight_store::touched() const {
  std::lock_guard lk(touched_mu_);
  std::vector<size_t> out;
  for (size_t i = 0; i < touched_.size(); ++i)
    if (touched_[i]) out.push_back(i);
  return out;
}

void borrowed_weight_store::clear_touched() {
  std::lock_guard lk(touched_mu_);
  touched_.assign(touched_.size(), false);
}

status borrowed_weight_store::apply(size_t i, const delta_file& f, const param_entry& p, undo_log& undo) {
  DS_CHECK(i < tensors_.size(), "borrowed_weight_store::apply: tensor index out of range");
  const store_tensor& t = tensors_[i];
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
  const byte_span encoded = f.positions.subspan(p.pos_start, p.pos_end - p.pos_start);
  const uint64_t count = p.changed();
  const uint64_t undo_bytes = encoded.size() + count * eb;
  if (undo.bytes() + undo_bytes > undo.max_bytes())
    return error(errc::limit_exceeded, label + ": recording " + std::to_string(count) +
                                           " overwritten elements would pass the undo limit of " +
                                           std::to_string(undo.max_bytes()) + " bytes");
  undo_log::record rec;
  rec.tensor = i;
  rec.elem_bytes = eb;
  rec.enc = f.manifest.enc;
  rec.pos_width = p.pos_width;
  if (devices_[i] < 0) {
    // apply_param validates everything before its first write; on error the caller's bytes are untouched.
    const mutable_byte_span dest(static_cast<std::byte*>(data_[i]), t.nbytes);
    if (auto st = apply_param(f, p, dest, &rec.old_values); !st) return error(st.err().code, label + ": " + st.err().message);
  } else if (count > 0) {
    DS_TRY_STATUS(apply_device(i, f, p, rec));
  }
  rec.encoded_positions.assign(encoded.begin(), encoded.end());
  const bool reserved = undo.reserve(undo_bytes);
  DS_CHECK(reserved, "undo_log::reserve failed after the capacity check");
  if (count != 0) {
    undo.records().push_back(std::move(rec));
    mark_touched(i);
  }
  return {};
}

status borrowed_weight_store::apply_device(size_t i, const delta_file& f, const param_entry& p, undo_log::record& rec) {
  const store_tensor& t = tensors_[i];
  const std::string label = label_of(t);
  const uint32_t eb = rec.elem_bytes;
  if (f.manifest.enc == encoding::compact) return apply_device_compact(i, f, p, rec);
  const uint32_t veb = element_bytes(f.values_type);
  if (p.val_start > p.val_end || veb == 0 || p.val_end > f.values.size() / veb)
    return error(errc::delta_manifest_bounds, label + ": values range lies outside the file's __values__");
  const uint64_t count = p.changed();
  // Positions: decoded and validated on the host (bounds, strictly ascending) before anything is written.
  std::vector<uint32_t> positions;
  if (auto st = decode_positions(f.manifest.enc, p.pos_width, f.positions.subspan(p.pos_start, p.pos_end - p.pos_start),
                                 t.numel, positions);
      !st)
    return error(st.err().code, label + ": " + st.err().message);
  if (positions.size() != count)
    return error(errc::delta_value_count_mismatch, label + ": " + std::to_string(positions.size()) +
                                                       " positions for " + std::to_string(count) + " values");
  auto l = take_lane();
  const uint64_t pos_bytes = count * 4, val_bytes = count * veb;
  DS_TRY_STATUS(gpu::grow(l->staging, pos_bytes + val_bytes));
  DS_TRY_STATUS(gpu::grow(l->positions, pos_bytes));
  DS_TRY_STATUS(gpu::grow(l->values, val_bytes));
  DS_TRY_STATUS(gpu::grow(l->old, count * eb));
  std::byte* stage = static_cast<std::byte*>(l->staging.data());
  std::memcpy(stage, positions.data(), pos_bytes);
  std::memcpy(stage + pos_bytes, f.values.data() + p.val_start * veb, val_bytes);
  DS_TRY_STATUS(gpu::copy_h2d(l->positions.data(), stage, pos_bytes, l->s));
  DS_TRY_STATUS(gpu::copy_h2d(l->values.data(), stage + pos_bytes, val_bytes, l->s));
  // scatter_apply checks every value's cast before writing: on error the tensor is untouched.
  if (auto st = gpu::scatter_apply(data_[i], t.type, t.numel, l->positions.as<uint32_t>(), count, l->values.data(),
                                   f.values_type, l->old.data(), l->s);
      !st)
    return error(st.err().code, label + ": " + st.err().message);
  rec.old_values.resize(count * eb);
  DS_TRY_STATUS(gpu::copy_d2h(stage, l->old.data(), count * eb, l->s));
  DS_TRY_STATUS(l->s.synchronize());
  std::memcpy(rec.old_values.data(), stage, count * eb);
  return {};
}

status borrowed_weight_store::apply_device_compact(size_t i, const delta_file& f, const param_entry& p,
                                                   undo_log::record& rec) {
  // The stream is decoded and validated on the host (codec/compact.h), then the differences are added on the
  // device with the overwritten values saved, as cuda_weight_store's scatter path does.
  const store_tensor& t = tensors_[i];
  const std::string label = label_of(t);
  const uint32_t eb = rec.elem_bytes;
  const uint64_t count = p.changed();
  std::vector<uint32_t> positions;
  byte_buffer diffs;
  if (auto st = compact::decode(f.positions.subspan(p.pos_start, p.pos_end - p.pos_start), count, t.numel, eb,
                                positions, diffs);
      !st)
    return error(st.err().code, label + ": " + st.err().message);
  if (count == 0) return {};
  auto l = take_lane();
  const uint64_t pos_bytes = count * 4, val_bytes = count * eb;
  DS_TRY_STATUS(gpu::grow(l->staging, pos_bytes + val_bytes));
  DS_TRY_STATUS(gpu::grow(l->positions, pos_bytes));
  DS_TRY_STATUS(gpu::grow(l->values, val_bytes));
  DS_TRY_STATUS(gpu::grow(l->old, val_bytes));
  std::byte* stage = static_cast<std::byte*>(l->staging.data());
  std::memcpy(stage, positions.data(), pos_bytes);
  std::memcpy(stage + pos_bytes, diffs.data(), val_bytes);
  DS_TRY_STATUS(gpu::copy_h2d(l->positions.data(), stage, pos_bytes, l->s));
  DS_TRY_STATUS(gpu::copy_h2d(l->values.data(), stage + pos_bytes, val_bytes, l->s));
  DS_TRY_STATUS(gpu::add_apply(data_[i], eb, l->positions.as<uint32_t>(), count, l->values.data(), l->old.data(), l->s));
  rec.old_values.resize(val_bytes);
  DS_TRY_STATUS(gpu::copy_d2h(stage, l->old.data(), val_bytes, l->s));
  DS_TRY_STATUS(l->s.synchronize());
  std::memcpy(rec.old_values.data(), stage, val_bytes);
  return {};
}

void borrowed_weight_store::rollback(undo_log& undo) {
  auto& records = undo.records();
  for (auto it = records.rbegin(); it != records.rend(); ++it) {
    DS_CHECK(it->tensor < data_.size(), "undo record names a tensor outside the store");
    const store_tensor& t = tensors_[it->tensor];
    std::vector<uint32_t> positions;
    // These positions were validated when they were applied; decoding them again cannot fail.
    auto st = decode_positions(it->enc, it->pos_width, it->encoded_positions, t.numel, positions);
    DS_CHECK(st.ok(), "undo record positions no longer decode");
    DS_CHECK(it->old_values.size() == positions.size() * it->elem_bytes, "undo record sizes disagree");
    if (devices_[it->tensor] < 0) {
      std::byte* data = static_cast<std::byte*>(data_[it->tensor]);
      const size_t eb = it->elem_bytes;
      for (size_t k = 0; k < positions.size(); ++k) {
        DS_CHECK(uint64_t{positions[k]} < t.numel, "undo record position outside its tensor");
        std::memcpy(data + uint64_t{positions[k]} * eb, it->old_values.data() + k * eb, eb);
      }
      continue;
    }
    auto l = take_lane();
    const uint64_t pos_bytes = positions.size() * 4;
    DS_CHECK(gpu::grow(l->positions, pos_bytes).ok(), "rollback: device scratch");
    DS_CHECK(gpu::grow(l->old, it->old_values.size()).ok(), "rollback: device scratch");
    // Pageable copies (rollback is rare): the runtime stages them.
    DS_CHECK(gpu::copy_h2d(l->positions.data(), positions.data(), pos_bytes, l->s).ok(), "rollback: H2D");
    DS_CHECK(gpu::copy_h2d(l->old.data(), it->old_values.data(), it->old_values.size(), l->s).ok(), "rollback: H2D");
    DS_CHECK(gpu::scatter_restore(data_[it->tensor], it->elem_bytes, l->positions.as<uint32_t>(), positions.size(),
                                  l->old.data(), l->s)
                 .ok(),
             "rollback: scatter on the device failed");
  }
  undo.clear();
}

digest128 borrowed_weight_store::digest(size_t i) {
  DS_CHECK(i < data_.size(), "borrowed_weight_store::digest: tensor index out of range");
  const uint64_t n = tensors_[i].nbytes;
  if (devices_[i] < 0) return xxh3_128(byte_span(static_cast<const std::byte*>(data_[i]), n));
  auto l = take_lane();
  auto d = l->dig.digest(data_[i], n, l->s);
  DS_CHECK(d.ok(), "borrowed_weight_store::digest: the device digest failed");
  return *d;
}

status borrowed_weight_store::read(size_t i, mutable_byte_span out) const {
  DS_CHECK(i < data_.size(), "borrowed_weight_store::read: tensor index out of range");
  if (out.size() != tensors_[i].nbytes)
    return error(errc::invalid_argument, label_of(tensors_[i]) + ": read into " + std::to_string(out.size()) +
                                             " bytes, the tensor holds " + std::to_string(tensors_[i].nbytes));
  if (out.empty()) return {};
  if (devices_[i] < 0) {
    std::memcpy(out.data(), data_[i], out.size());
    return {};
  }
  auto l = take_lane();
  DS_TRY_STATUS(gpu::copy_d2h(out.data(), data_[i], out.size(), l->s));
  return l->s.synchronize();
}

}  // namespace deltasync
