// The weight store over caller-owned memory: see borrowed_weight_store.h. Host tensors are applied with the
// codec's validated apply_param; CUDA tensors by the device apply engine, as cuda_weight_store's.
#include "sync/borrowed_weight_store.h"

#include <cstring>
#include <unordered_set>
#include <utility>

#include "base/check.h"
#include "gpu/gpu.h"

namespace deltasync {

namespace {

std::string label_of(const store_tensor& t) { return "tensor \"" + t.name + "\""; }

std::string shape_string(const std::vector<uint64_t>& shape) {
  std::string out = "[";
  for (size_t k = 0; k < shape.size(); ++k) out += (k ? ", " : "") + std::to_string(shape[k]);
  return out + "]";
}

}  // namespace

borrowed_weight_store::borrowed_weight_store() = default;

borrowed_weight_store::~borrowed_weight_store() {
  if (cuda_device_ >= 0) (void)gpu::set_device(cuda_device_);
  engine_.reset();
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
    DS_ASSIGN_OR_RETURN(store->engine_, device_apply_engine::create(store->cuda_device_));
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
  if (devices_[i] >= 0) {
    DS_TRY_STATUS(engine_->apply(i, data_[i], t, f, p, undo));
    if (p.changed() != 0) mark_touched(i);
    return {};
  }
  DS_TRY_STATUS(check_param(t, f, p, undo));
  const byte_span encoded = f.positions.subspan(p.pos_start, p.pos_end - p.pos_start);
  const uint64_t count = p.changed();
  undo_log::record rec;
  rec.tensor = i;
  rec.elem_bytes = element_bytes(t.type);
  rec.enc = f.manifest.enc;
  rec.pos_width = p.pos_width;
  // apply_param validates everything before its first write; on error the caller's bytes are untouched.
  const mutable_byte_span dest(static_cast<std::byte*>(data_[i]), t.nbytes);
  if (auto st = apply_param(f, p, dest, &rec.old_values); !st) return error(st.err().code, label_of(t) + ": " + st.err().message);
  rec.encoded_positions.assign(encoded.begin(), encoded.end());
  const bool reserved = undo.reserve(encoded.size() + count * rec.elem_bytes);
  DS_CHECK(reserved, "undo_log::reserve failed after the capacity check");
  if (count != 0) {
    undo.records().push_back(std::move(rec));
    mark_touched(i);
  }
  return {};
}

void borrowed_weight_store::rollback(undo_log& undo) {
  auto& records = undo.records();
  for (auto it = records.rbegin(); it != records.rend(); ++it) {
    DS_CHECK(it->tensor < data_.size(), "undo record names a tensor outside the store");
    const store_tensor& t = tensors_[it->tensor];
    if (devices_[it->tensor] >= 0) {
      engine_->restore(data_[it->tensor], t, *it);
      continue;
    }
    std::vector<uint32_t> positions;
    // These positions were validated when they were applied; decoding them again cannot fail.
    auto st = decode_positions(it->enc, it->pos_width, it->encoded_positions, t.numel, positions);
    DS_CHECK(st.ok(), "undo record positions no longer decode");
    DS_CHECK(it->old_values.size() == positions.size() * it->elem_bytes, "undo record sizes disagree");
    std::byte* data = static_cast<std::byte*>(data_[it->tensor]);
    const size_t eb = it->elem_bytes;
    for (size_t k = 0; k < positions.size(); ++k) {
      DS_CHECK(uint64_t{positions[k]} < t.numel, "undo record position outside its tensor");
      std::memcpy(data + uint64_t{positions[k]} * eb, it->old_values.data() + k * eb, eb);
    }
  }
  undo.clear();
}

digest128 borrowed_weight_store::digest(size_t i) {
  DS_CHECK(i < data_.size(), "borrowed_weight_store::digest: tensor index out of range");
  const uint64_t n = tensors_[i].nbytes;
  if (devices_[i] < 0) return xxh3_128(byte_span(static_cast<const std::byte*>(data_[i]), n));
  return engine_->digest(data_[i], n);
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
  return engine_->copy_d2h(out.data(), data_[i], out.size());
}

}  // namespace deltasync
