// The device weight store: see cuda_weight_store.h.
#include "sync/cuda_weight_store.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "base/check.h"
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

struct cuda_weight_store::lane {
  gpu::stream s;
  gpu::digester dig;
  gpu::pinned_buffer staging;
  gpu::device_buffer positions, values, old;
  gpu::device_buffer stream;      // a compact param's stream, decoded on the device
  gpu::compact_scratch compact;
};

class cuda_weight_store::lane_lease {
 public:
  lane_lease(const cuda_weight_store& store, lane* l) : store_(store), l_(l) {}
  lane_lease(lane_lease&& o) noexcept : store_(o.store_), l_(std::exchange(o.l_, nullptr)) {}
  ~lane_lease() {
    if (l_ == nullptr) return;
    std::lock_guard lk(store_.lanes_mu_);
    store_.free_lanes_.push_back(l_);
    store_.lanes_cv_.notify_one();
  }
  lane* operator->() const noexcept { return l_; }

 private:
  const cuda_weight_store& store_;
  lane* l_;
};

// Called with `device` current: each lane's stream belongs to it.
cuda_weight_store::cuda_weight_store(int device) : device_(device) {
  for (size_t i = 0; i < kLanes; ++i) {
    lanes_.push_back(std::make_unique<lane>());
    free_lanes_.push_back(lanes_.back().get());
  }
}
cuda_weight_store::~cuda_weight_store() {
  (void)gpu::set_device(device_);
  lanes_.clear();
  data_.clear();
}

cuda_weight_store::lane_lease cuda_weight_store::take_lane() const {
  // The calling thread may be any worker: make this store's device current for it.
  (void)gpu::set_device(device_);
  std::unique_lock lk(lanes_mu_);
  lanes_cv_.wait(lk, [&] { return !free_lanes_.empty(); });
  lane* l = free_lanes_.back();
  free_lanes_.pop_back();
  return lane_lease(*this, l);
}

result<std::unique_ptr<cuda_weight_store>> cuda_weight_store::from_tensors(loaded_tensors t, int device) {
  DS_TRY_STATUS(gpu::available());
  DS_TRY_STATUS(gpu::set_device(device));
  std::unique_ptr<cuda_weight_store> store(new cuda_weight_store(device));
  auto l = store->take_lane();
  store->tensors_.reserve(t.size());
  store->data_.reserve(t.size());
  for (auto& [desc, bytes] : t) {
    DS_CHECK(bytes.size() == desc.nbytes, "cuda_weight_store::from_tensors: span size differs from nbytes");
    auto buf = gpu::device_buffer::allocate(bytes.size());
    if (!buf) return error(buf.err().code, label_of(desc) + ": " + buf.err().message);
    DS_TRY_STATUS(gpu::copy_h2d(buf->data(), bytes.data(), bytes.size(), l->s));
    DS_TRY_STATUS(l->s.synchronize());
    store->add_tensor(desc);
    store->data_.push_back(std::move(buf).value());
  }
  t.clear();  // the host copy (the checkpoint's file blocks) is no longer needed
  store->digests_.assign(store->tensors_.size(), std::nullopt);
  return store;
}

result<std::unique_ptr<cuda_weight_store>> cuda_weight_store::from_device(std::vector<store_tensor> t,
                                                                          const std::vector<const void*>& src,
                                                                          int device) {
  DS_CHECK(t.size() == src.size(), "cuda_weight_store::from_device: one source per tensor");
  DS_TRY_STATUS(gpu::available());
  DS_TRY_STATUS(gpu::set_device(device));
  std::unique_ptr<cuda_weight_store> store(new cuda_weight_store(device));
  auto l = store->take_lane();
  for (size_t i = 0; i < t.size(); ++i) {
    auto buf = gpu::device_buffer::allocate(t[i].nbytes);
    if (!buf) return error(buf.err().code, label_of(t[i]) + ": " + buf.err().message);
    DS_TRY_STATUS(gpu::copy_d2d(buf->data(), src[i], t[i].nbytes, l->s));
    store->add_tensor(std::move(t[i]));
    store->data_.push_back(std::move(buf).value());
  }
  DS_TRY_STATUS(l->s.synchronize());
  store->digests_.assign(store->tensors_.size(), std::nullopt);
  return store;
}

result<std::unique_ptr<cuda_weight_store>> cuda_weight_store::load(const std::string& path, int device,
                                                                   const checkpoint_limits& limits) {
  DS_TRY_STATUS(gpu::available());
  DS_ASSIGN_OR_RETURN(loaded_tensors tensors, load_checkpoint(path, limits));
  return from_tensors(std::move(tensors), device);
}

result<std::unique_ptr<cuda_weight_store>> cuda_weight_store::synthetic(std::string_view model, uint64_t seed,
                                                                        int device) {
  DS_TRY_STATUS(gpu::available());
  DS_ASSIGN_OR_RETURN(auto host, host_weight_store::synthetic(model, seed));
  loaded_tensors tensors;
  for (size_t i = 0; i < host->size(); ++i) {
    const byte_span d = host->data(i);
    tensors.add(host->tensor(i), byte_buffer(d.begin(), d.end()));
  }
  host.reset();
  return from_tensors(std::move(tensors), device);
}

status cuda_weight_store::apply(size_t i, const delta_file& f, const param_entry& p, undo_log& undo) {
  DS_CHECK(i < tensors_.size(), "cuda_weight_store::apply: tensor index out of range");
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
  const bool compact = f.manifest.enc == encoding::compact;
  const uint32_t veb = compact ? eb : element_bytes(f.values_type);
  if (!compact && (p.val_start > p.val_end || veb == 0 || p.val_end > f.values.size() / veb))
    return error(errc::delta_manifest_bounds, label + ": values range lies outside the file's __values__");
  const byte_span encoded = f.positions.subspan(p.pos_start, p.pos_end - p.pos_start);
  const uint64_t count = p.changed();
  const uint64_t undo_bytes = encoded.size() + count * eb;
  if (undo.bytes() + undo_bytes > undo.max_bytes())
    return error(errc::limit_exceeded, label + ": recording " + std::to_string(count) +
                                           " overwritten elements would pass the undo limit of " +
                                           std::to_string(undo.max_bytes()) + " bytes");
  // Positions: decoded and validated on the host (bounds, strictly ascending) before anything is written.
  undo_log::record rec;
  rec.tensor = i;
  rec.elem_bytes = eb;
  rec.enc = f.manifest.enc;
  rec.pos_width = p.pos_width;
  if (compact) {
    // The stream crosses PCIe as it is (~1.2 bytes per change instead of 4 + eb), is decoded and validated on
    // the device, and only then added into the tensor.
    if (count > 0) {
      auto l = take_lane();
      DS_TRY_STATUS(gpu::grow(l->staging, std::max<uint64_t>(encoded.size(), count * eb)));
      DS_TRY_STATUS(gpu::grow(l->stream, encoded.size()));
      DS_TRY_STATUS(gpu::grow(l->positions, count * 4));
      DS_TRY_STATUS(gpu::grow(l->values, count * eb));
      DS_TRY_STATUS(gpu::grow(l->old, count * eb));
      std::memcpy(l->staging.data(), encoded.data(), encoded.size());
      DS_TRY_STATUS(gpu::copy_h2d(l->stream.data(), l->staging.data(), encoded.size(), l->s));
      if (auto st = gpu::compact_decode(encoded, l->stream.data(), count, t.numel, eb, l->positions.as<uint32_t>(),
                                        l->values.data(), l->compact, l->s);
          !st)
        return error(st.err().code, label + ": " + st.err().message);
      DS_TRY_STATUS(gpu::add_apply(data_[i].data(), eb, l->positions.as<uint32_t>(), count, l->values.data(),
                                   l->old.data(), l->s));
      rec.old_values.resize(count * eb);
      DS_TRY_STATUS(gpu::copy_d2h(l->staging.data(), l->old.data(), count * eb, l->s));
      DS_TRY_STATUS(l->s.synchronize());
      std::memcpy(rec.old_values.data(), l->staging.data(), count * eb);
    }
    rec.encoded_positions.assign(encoded.begin(), encoded.end());
    const bool reserved = undo.reserve(undo_bytes);
    DS_CHECK(reserved, "undo_log::reserve failed after the capacity check");
    if (count != 0) undo.records().push_back(std::move(rec));
    std::lock_guard lk(digest_mu_);
    digests_[i].reset();
    return {};
  }
  std::vector<uint32_t> positions;
  if (auto st = decode_positions(f.manifest.enc, p.pos_width, encoded, t.numel, positions); !st)
    return error(st.err().code, label + ": " + st.err().message);
  if (positions.size() != count)
    return error(errc::delta_value_count_mismatch, label + ": " + std::to_string(positions.size()) +
                                                       " positions for " + std::to_string(count) + " values");
  if (count > 0) {
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
    auto st = gpu::scatter_apply(data_[i].data(), t.type, t.numel, l->positions.as<uint32_t>(), count,
                                 l->values.data(), f.values_type, l->old.data(), l->s);
    if (!st) return error(st.err().code, label + ": " + st.err().message);
    rec.old_values.resize(count * eb);
    DS_TRY_STATUS(gpu::copy_d2h(stage, l->old.data(), count * eb, l->s));
    DS_TRY_STATUS(l->s.synchronize());
    std::memcpy(rec.old_values.data(), stage, count * eb);
  }
  rec.encoded_positions.assign(encoded.begin(), encoded.end());
  const bool reserved = undo.reserve(undo_bytes);
  DS_CHECK(reserved, "undo_log::reserve failed after the capacity check");
  if (count != 0) undo.records().push_back(std::move(rec));
  std::lock_guard lk(digest_mu_);
  digests_[i].reset();
  return {};
}

void cuda_weight_store::rollback(undo_log& undo) {
  auto& records = undo.records();
  auto l = take_lane();
  for (auto it = records.rbegin(); it != records.rend(); ++it) {
    DS_CHECK(it->tensor < data_.size(), "undo record names a tensor outside the store");
    const store_tensor& t = tensors_[it->tensor];
    std::vector<uint32_t> positions;
    auto st = decode_positions(it->enc, it->pos_width, it->encoded_positions, t.numel, positions);
    DS_CHECK(st.ok(), "undo record positions no longer decode");
    DS_CHECK(it->old_values.size() == positions.size() * it->elem_bytes, "undo record sizes disagree");
    const uint64_t pos_bytes = positions.size() * 4;
    DS_CHECK(gpu::grow(l->positions, pos_bytes).ok(), "rollback: device scratch");
    DS_CHECK(gpu::grow(l->old, it->old_values.size()).ok(), "rollback: device scratch");
    // Pageable copies (rollback is rare): the runtime stages them.
    DS_CHECK(gpu::copy_h2d(l->positions.data(), positions.data(), pos_bytes, l->s).ok(), "rollback: H2D");
    DS_CHECK(gpu::copy_h2d(l->old.data(), it->old_values.data(), it->old_values.size(), l->s).ok(), "rollback: H2D");
    DS_CHECK(gpu::scatter_restore(data_[it->tensor].data(), it->elem_bytes, l->positions.as<uint32_t>(),
                                  positions.size(), l->old.data(), l->s)
                 .ok(),
             "rollback: scatter on the device failed");
    std::lock_guard lk(digest_mu_);
    digests_[it->tensor].reset();
  }
  undo.clear();
}

digest128 cuda_weight_store::digest(size_t i) {
  DS_CHECK(i < data_.size(), "cuda_weight_store::digest: tensor index out of range");
  {
    std::lock_guard lk(digest_mu_);
    if (digests_[i]) return *digests_[i];
  }
  auto l = take_lane();
  auto d = l->dig.digest(data_[i].data(), tensors_[i].nbytes, l->s);
  DS_CHECK(d.ok(), "cuda_weight_store::digest: the device digest failed");
  std::lock_guard lk(digest_mu_);
  digests_[i] = *d;
  return *d;
}

status cuda_weight_store::read(size_t i, mutable_byte_span out) const {
  DS_CHECK(i < data_.size(), "cuda_weight_store::read: tensor index out of range");
  if (out.size() != tensors_[i].nbytes)
    return error(errc::invalid_argument, label_of(tensors_[i]) + ": read into " + std::to_string(out.size()) +
                                             " bytes, the tensor holds " + std::to_string(tensors_[i].nbytes));
  auto l = take_lane();
  DS_TRY_STATUS(gpu::copy_d2h(out.data(), data_[i].data(), out.size(), l->s));
  return l->s.synchronize();
}

}  // namespace deltasync
