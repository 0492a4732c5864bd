// The host-memory weight store: tensors in memory it owns (a loaded checkpoint's file blocks), undo-logged
// apply, cached XXH3-128 digests.
#include "sync/weight_store.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <utility>

#include "base/check.h"
#include "codec/safetensors.h"
#include "codec/sum_digest.h"
#include "io/sync_io.h"
#include "sync/parallel_sum.h"
#include "sync/synthetic_model.h"

namespace deltasync {

namespace {

std::string in_quotes(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::string shape_string(const std::vector<uint64_t>& shape) {
  std::string out = "[";
  for (size_t k = 0; k < shape.size(); ++k) {
    if (k != 0) out += ", ";
    out += std::to_string(shape[k]);
  }
  return out + "]";
}

// The additive digest of every tensor: one pass over the model when the store is made, on every core.
std::vector<digest128> initial_sums(const loaded_tensors& data, const std::vector<store_tensor>& tensors) {
  std::vector<sum_input> in(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) in[i] = {data[i].bytes, element_bytes(tensors[i].type)};
  return parallel_sum_digests(in);
}

}  // namespace

// ---- weight_store ----

std::optional<size_t> weight_store::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

uint64_t weight_store::total_bytes() const noexcept {
  uint64_t total = 0;
  for (const store_tensor& t : tensors_) total += t.nbytes;
  return total;
}

void weight_store::add_tensor(store_tensor t) {
  const bool inserted = index_.emplace(t.name, tensors_.size()).second;
  DS_CHECK(inserted, "weight_store: duplicate tensor name");
  tensors_.push_back(std::move(t));
}

// ---- host_weight_store ----

std::unique_ptr<host_weight_store> host_weight_store::from_tensors(loaded_tensors t) {
  auto store = std::make_unique<host_weight_store>();
  store->tensors_.reserve(t.size());
  for (const loaded_tensors::entry& e : t) {
    DS_CHECK(e.bytes.size() == e.desc.nbytes, "host_weight_store::from_tensors: span size differs from nbytes");
    store->add_tensor(e.desc);
  }
  store->data_ = std::move(t);
  store->digests_.assign(store->tensors_.size(), std::nullopt);
  store->sums_ = initial_sums(store->data_, store->tensors_);
  return store;
}

std::unique_ptr<host_weight_store> host_weight_store::from_tensors(std::vector<std::pair<store_tensor, byte_buffer>> t) {
  loaded_tensors owned;
  owned.reserve(t.size());
  for (auto& [desc, bytes] : t) owned.add(std::move(desc), std::move(bytes));
  return from_tensors(std::move(owned));
}

result<std::unique_ptr<host_weight_store>> host_weight_store::load(const std::string& path,
                                                                   const checkpoint_limits& limits) {
  DS_ASSIGN_OR_RETURN(loaded_tensors tensors, load_checkpoint(path, limits));
  return from_tensors(std::move(tensors));
}

result<std::unique_ptr<host_weight_store>> host_weight_store::synthetic(std::string_view model, uint64_t seed) {
  DS_ASSIGN_OR_RETURN(model_layout layout, synthetic_model(model));
  // The same constructor arguments as the demo's trainer, so both start from the same bf16 view (the
  // simulator is deterministic in its seed, whatever the thread count).
  rl_trainer_sim sim(layout, seed, 2);
  loaded_tensors tensors;
  tensors.reserve(sim.tensor_count());
  for (size_t i = 0; i < sim.tensor_count(); ++i) {
    const tensor_layout& l = sim.layout().tensors[i];
    const byte_span view = sim.bf16(i);
    DS_CHECK(view.size() == l.numel() * 2, "synthetic: bf16 view size differs from the layout");
    tensors.add(store_tensor{l.name, dtype::BF16, l.shape, l.numel(), view.size()},
                byte_buffer(view.begin(), view.end()));
  }
  return from_tensors(std::move(tensors));
}

status host_weight_store::apply(size_t i, const delta_file& f, const param_entry& p, undo_log& undo) {
  DS_CHECK(i < tensors_.size(), "host_weight_store::apply: tensor index out of range");
  const store_tensor& t = tensors_[i];
  const std::string label = "tensor " + in_quotes(t.name);
  if (p.type != t.type) {
    return error(errc::delta_dtype_mismatch,
                 label + ": the delta holds " + std::string(name(p.type)) + ", the store " + std::string(name(t.type)));
  }
  const uint32_t elem_bytes = element_bytes(t.type);
  if (elem_bytes == 0) {
    return error(errc::delta_dtype_mismatch, label + ": sub-byte dtype " + std::string(name(t.type)) +
                                                 " cannot be delta-applied");
  }
  if (p.shape != t.shape) {
    return error(errc::delta_shape_mismatch,
                 label + ": the delta has shape " + shape_string(p.shape) + ", the store " + shape_string(t.shape));
  }
  if (p.pos_start > p.pos_end || p.pos_end > f.positions.size()) {
    return error(errc::delta_manifest_bounds, label + ": positions range lies outside the file's __positions__");
  }

  // apply_param validates every position before writing and saves the overwritten values in the same pass
  // as it writes the new ones; the undo record keeps the positions encoded.
  const byte_span encoded = f.positions.subspan(p.pos_start, p.pos_end - p.pos_start);
  const uint64_t count = p.changed();
  // A compact slice's record keeps its decoded positions (4 bytes each, as `indices`): the stream it came from
  // is the whole param's, which a rollback would decode in full.
  const bool compact_slice = f.manifest.enc == encoding::compact && p.block_end != 0;
  const uint64_t undo_bytes = (compact_slice ? count * 4 : encoded.size()) + count * elem_bytes;
  if (undo.bytes() + undo_bytes > undo.max_bytes()) {
    return error(errc::limit_exceeded, label + ": recording " + std::to_string(count) +
                                           " overwritten elements would pass the undo limit of " +
                                           std::to_string(undo.max_bytes()) + " bytes");
  }
  undo_log::record rec;
  rec.tensor = i;
  rec.elem_bytes = elem_bytes;
  rec.enc = f.manifest.enc;
  rec.pos_width = p.pos_width;
  rec.pos_base = p.pos_base;
  std::vector<uint32_t> slice_positions;
  {
    sum_delta change;
    auto st = apply_param(f, p, data_[i].bytes, &rec.old_values, &change,  // on error the tensor is untouched
                          compact_slice ? &slice_positions : nullptr);
    if (!st.ok()) {
      error e = std::move(st).err();
      return error(e.code, label + ": " + e.message);
    }
    const std::lock_guard lock(bookkeeping_);
    change.apply(sums_[i]);
    digests_[i].reset();
  }
  if (compact_slice) {
    rec.enc = encoding::indices;
    rec.pos_width = 4;
    const auto* b = reinterpret_cast<const std::byte*>(slice_positions.data());
    rec.encoded_positions.assign(b, b + 4 * slice_positions.size());
  } else {
    rec.encoded_positions.assign(encoded.begin(), encoded.end());
  }
  const bool reserved = undo.reserve(undo_bytes);
  DS_CHECK(reserved, "undo_log::reserve failed after the capacity check");
  if (count != 0) undo.records().push_back(std::move(rec));
  return {};
}

void host_weight_store::rollback(undo_log& undo) {
  auto& records = undo.records();
  for (auto it = records.rbegin(); it != records.rend(); ++it) {
    DS_CHECK(it->tensor < data_.size(), "undo record names a tensor outside the store");
    const mutable_byte_span data = data_[it->tensor].bytes;
    const size_t eb = it->elem_bytes;
    std::vector<uint32_t> positions;
    // These positions were validated when they were applied; decoding them again cannot fail.
    auto st = decode_positions(it->enc, it->pos_width, it->encoded_positions, data.size() / eb, positions,
                               it->pos_base);
    DS_CHECK(st.ok(), "undo record positions no longer decode");
    DS_CHECK(it->old_values.size() == positions.size() * eb, "undo record sizes disagree");
    sum_delta change;
    for (size_t k = 0; k < positions.size(); ++k) {
      const uint64_t at = uint64_t{positions[k]} * eb;
      DS_CHECK(at + eb <= data.size(), "undo record position outside its tensor");
      const std::byte* was = it->old_values.data() + k * eb;
      change.change(positions[k], sum_detail::element_bits(data.data() + at, eb), sum_detail::element_bits(was, eb));
      std::memcpy(data.data() + at, was, eb);
    }
    change.apply(sums_[it->tensor]);
    digests_[it->tensor].reset();
  }
  undo.clear();
}

digest128 host_weight_store::digest(size_t i) {
  DS_CHECK(i < data_.size(), "host_weight_store::digest: tensor index out of range");
  if (!digests_[i]) digests_[i] = xxh3_128(data_[i].bytes);
  return *digests_[i];
}

status host_weight_store::read(size_t i, mutable_byte_span out) const {
  DS_CHECK(i < data_.size(), "host_weight_store::read: tensor index out of range");
  const byte_span data = data_[i].bytes;
  if (out.size() != data.size()) {
    return error(errc::invalid_argument, "tensor " + in_quotes(tensors_[i].name) + ": read into " +
                                             std::to_string(out.size()) + " bytes, the tensor holds " +
                                             std::to_string(data.size()));
  }
  if (!out.empty()) std::memcpy(out.data(), data.data(), out.size());
  return {};
}

status host_weight_store::export_safetensors(const std::string& path) const {
  std::vector<tensor_data> tensors;
  tensors.reserve(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const store_tensor& t = tensors_[i];
    tensors.push_back({tensor_spec{t.name, t.type, t.shape, t.nbytes}, data_[i].bytes});
  }
  auto file = write_safetensors(tensors, {{"format", "pt"}});
  if (!file.ok()) {
    const error& e = file.err();
    return error(e.code, "export " + path + ": " + e.message);
  }
  return io::write_file_atomic(path, *file);
}

}  // namespace deltasync
