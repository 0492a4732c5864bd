// The device weight store: see cuda_weight_store.h.
#include "sync/cuda_weight_store.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "base/check.h"
#include "gpu/kernels.h"

namespace deltasync {

namespace {

std::string label_of(const store_tensor& t) { return "tensor \"" + t.name + "\""; }

}  // namespace

cuda_weight_store::cuda_weight_store(int device, std::unique_ptr<device_apply_engine> engine)
    : device_(device), engine_(std::move(engine)) {}

cuda_weight_store::~cuda_weight_store() {
  (void)gpu::set_device(device_);
  data_.clear();
  engine_.reset();
}

result<std::unique_ptr<cuda_weight_store>> cuda_weight_store::create(int device) {
  DS_ASSIGN_OR_RETURN(auto engine, device_apply_engine::create(device));
  return std::unique_ptr<cuda_weight_store>(new cuda_weight_store(device, std::move(engine)));
}

result<std::unique_ptr<cuda_weight_store>> cuda_weight_store::from_tensors(loaded_tensors t, int device) {
  DS_ASSIGN_OR_RETURN(auto store, create(device));
  store->tensors_.reserve(t.size());
  store->data_.reserve(t.size());
  for (auto& [desc, bytes] : t) {
    DS_CHECK(bytes.size() == desc.nbytes, "cuda_weight_store::from_tensors: span size differs from nbytes");
    auto buf = gpu::device_buffer::allocate(bytes.size());
    if (!buf) return error(buf.err().code, label_of(desc) + ": " + buf.err().message);
    DS_TRY_STATUS(store->engine_->copy_h2d(buf->data(), bytes.data(), bytes.size()));
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
  DS_ASSIGN_OR_RETURN(auto store, create(device));
  for (size_t i = 0; i < t.size(); ++i) {
    auto buf = gpu::device_buffer::allocate(t[i].nbytes);
    if (!buf) return error(buf.err().code, label_of(t[i]) + ": " + buf.err().message);
    DS_TRY_STATUS(store->engine_->copy_d2d(buf->data(), src[i], t[i].nbytes));
    store->add_tensor(std::move(t[i]));
    store->data_.push_back(std::move(buf).value());
  }
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
  DS_TRY_STATUS(engine_->apply(i, data_[i].data(), tensors_[i], f, p, undo));
  std::lock_guard lk(digest_mu_);
  digests_[i].reset();
  return {};
}

void cuda_weight_store::rollback(undo_log& undo) {
  auto& records = undo.records();
  for (auto it = records.rbegin(); it != records.rend(); ++it) {
    DS_CHECK(it->tensor < data_.size(), "undo record names a tensor outside the store");
    engine_->restore(data_[it->tensor].data(), tensors_[it->tensor], *it);
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
  const digest128 d = engine_->digest(data_[i].data(), tensors_[i].nbytes);
  std::lock_guard lk(digest_mu_);
  digests_[i] = d;
  return d;
}

status cuda_weight_store::read(size_t i, mutable_byte_span out) const {
  DS_CHECK(i < data_.size(), "cuda_weight_store::read: tensor index out of range");
  if (out.size() != tensors_[i].nbytes)
    return error(errc::invalid_argument, label_of(tensors_[i]) + ": read into " + std::to_string(out.size()) +
                                             " bytes, the tensor holds " + std::to_string(tensors_[i].nbytes));
  return engine_->copy_d2h(out.data(), data_[i].data(), out.size());
}

}  // namespace deltasync
