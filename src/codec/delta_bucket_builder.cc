// delta_bucket_builder: collects the params of one bucket flush and writes the whole delta file (positions
// encoded as they are added, values cast to the bucket's promoted dtype at finish). The header keys and the
// reader are in codec/delta_format.cc.
#include <cstring>
#include <string>
#include <utility>

#include "base/check.h"
#include "codec/compact.h"
#include "codec/delta_format.h"
#include "codec/diff.h"
#include "codec/positions.h"
#include "codec/zstd_frame.h"

namespace deltasync {

using detail::kMaxNumel;
using detail::quoted;

delta_bucket_builder::delta_bucket_builder(encoding enc) : enc_(enc) {}

bool delta_bucket_builder::can_add(dtype type) const noexcept {
  if (enc_ == encoding::compact) {
    // Differences are taken in each param's own bits: any whole-element dtype shares a bucket.
    const uint32_t eb = element_bytes(type);
    return eb == 1 || eb == 2 || eb == 4 || eb == 8;
  }
  if (element_bytes(type) == 0 || type == dtype::C64) return false;
  return !values_type_ || promote(*values_type_, type).has_value();
}

void delta_bucket_builder::add(const param_delta& p) { add_compact(p, {}); }

void delta_bucket_builder::add_compact(const param_delta& p, byte_span old_values) {
  DS_CHECK(can_add(p.type), "delta_bucket_builder::add: dtype cannot share this bucket (check can_add)");
  const uint32_t eb = element_bytes(p.type);
  DS_CHECK(p.values.size() == p.positions.size() * eb, "delta_bucket_builder::add: values/positions mismatch");
  param_entry e;
  e.name = p.name;
  e.type = p.type;
  e.shape = p.shape;
  const uint64_t numel = e.numel();
  DS_CHECK(numel <= kMaxNumel, "delta_bucket_builder::add: tensor too large for 32-bit positions");
  // slime lists only params that changed; an unchanged one contributes nothing.
  if (p.positions.empty()) return;
  DS_CHECK(p.positions.back() < numel, "delta_bucket_builder::add: position past the tensor");

  if (enc_ == encoding::compact) {
    DS_CHECK(old_values.size() == p.values.size(), "delta_bucket_builder::add_compact: compact needs the old values");
    values_type_ = dtype::U8;
    e.pos_start = positions_.size();
    compact::encode(p.positions, old_values, p.values, eb, positions_);
    e.pos_end = positions_.size();
    e.pos_width = 1;
    e.val_start = value_count_;
    value_count_ += p.positions.size();
    e.val_end = value_count_;
    params_.push_back(std::move(e));
    return;
  }
  DS_CHECK(old_values.empty(), "delta_bucket_builder::add: old values are for the compact encoding");
  values_type_ = values_type_ ? *promote(*values_type_, p.type) : p.type;
  e.pos_start = positions_.size();
  e.pos_width = encode_positions(enc_, p.positions, positions_);
  e.pos_end = positions_.size();
  e.val_start = value_count_;
  value_count_ += p.positions.size();
  e.val_end = value_count_;
  params_.push_back(std::move(e));
  values_.emplace_back(p.type, byte_buffer(p.values.begin(), p.values.end()));
}

void delta_bucket_builder::add_compact_stream(const std::string& name, dtype type, const std::vector<uint64_t>& shape,
                                              uint64_t count, byte_span stream) {
  DS_CHECK(enc_ == encoding::compact && can_add(type), "delta_bucket_builder::add_compact_stream: not a compact bucket");
  DS_CHECK(count > 0 && compact::read_header(stream, count, element_bytes(type)).ok(),
           "delta_bucket_builder::add_compact_stream: the stream's header disagrees");
  param_entry e;
  e.name = name;
  e.type = type;
  e.shape = shape;
  DS_CHECK(e.numel() <= kMaxNumel, "delta_bucket_builder::add_compact_stream: tensor too large for 32-bit positions");
  values_type_ = dtype::U8;
  e.pos_start = positions_.size();
  positions_.insert(positions_.end(), stream.begin(), stream.end());
  e.pos_end = positions_.size();
  e.pos_width = 1;
  e.val_start = value_count_;
  value_count_ += count;
  e.val_end = value_count_;
  params_.push_back(std::move(e));
}

uint64_t delta_bucket_builder::payload_bytes() const noexcept {
  if (enc_ == encoding::compact) return positions_.size();
  return positions_.size() + (values_type_ ? value_count_ * element_bytes(*values_type_) : 0);
}

result<byte_buffer> delta_bucket_builder::finish(uint64_t current_version, uint64_t data_alignment,
                                                 const native_fields* native) {
  if (native != nullptr) {
    if (native->base_version >= current_version)
      return error(errc::invalid_argument, std::string(native->slime ? "slime" : "native") +
                                               " delta file: base_version " + std::to_string(native->base_version) +
                                               " is not below version " + std::to_string(current_version));
    for (const auto& p : params_)
      if (!native->tensor_digests.contains(p.name))
        return error(errc::invalid_argument, "native delta file: no tensor digest for param " + quoted(p.name));
  }
  if (enc_ == encoding::compact && native == nullptr)
    return error(errc::invalid_argument, "compact delta file: the encoding needs the native format (base_version)");
  // An empty bucket still makes a well-formed file (no params, empty tensors); its values dtype is BF16.
  const dtype vt = enc_ == encoding::compact ? dtype::U8 : values_type_.value_or(dtype::BF16);
  const uint64_t value_bytes = enc_ == encoding::compact ? 0 : value_count_ * element_bytes(vt);
  const uint32_t veb = element_bytes(vt);
  // One buffer holds the whole data section (positions, then values), so the native payload hash is one pass.
  const size_t pos_bytes = positions_.size();
  byte_buffer data(pos_bytes + value_bytes);
  if (pos_bytes > 0) std::memcpy(data.data(), positions_.data(), pos_bytes);
  const mutable_byte_span values = mutable_byte_span(data).subspan(pos_bytes);
  const byte_span positions = byte_span(data).first(pos_bytes);
  size_t at = 0;
  for (const auto& [type, buf] : values_) {
    if (type == vt) {
      std::memcpy(values.data() + at, buf.data(), buf.size());
      at += buf.size();
      continue;
    }
    const uint32_t eb = element_bytes(type);
    for (size_t i = 0; i < buf.size(); i += eb, at += veb)
      DS_CHECK(cast_element(type, buf.data() + i, vt, values.data() + at),
               "delta_bucket_builder: promote() chose a dtype cast_element cannot produce");
  }
  DS_CHECK(at == values.size(), "delta_bucket_builder: values size");

  encoded_bucket bucket;
  bucket.enc = enc_;
  bucket.current_version = current_version;
  bucket.params = params_;
  bucket.positions_bytes = pos_bytes;
  bucket.values_type = vt;
  bucket.value_count = enc_ == encoding::compact ? 0 : value_count_;
  if (native != nullptr && native->records && !native->slime && enc_ != encoding::compact) {  // a compact file streams as it is
    // The streamable layout (delta_format.h): per param, its positions, padding to the value size, its values.
    byte_buffer records;
    records.reserve(data.size() + bucket.params.size() * veb);
    for (auto& p : bucket.params) {
      const uint64_t pos_at = records.size();
      records.insert(records.end(), positions.begin() + static_cast<ptrdiff_t>(p.pos_start),
                     positions.begin() + static_cast<ptrdiff_t>(p.pos_end));
      records.resize((records.size() + veb - 1) / veb * veb);
      const uint64_t val_at = records.size() / veb;
      const auto vals = byte_span(values).subspan(p.val_start * veb, p.changed() * veb);
      records.insert(records.end(), vals.begin(), vals.end());
      p.pos_end = pos_at + (p.pos_end - p.pos_start);
      p.pos_start = pos_at;
      p.val_end = val_at + p.changed();
      p.val_start = val_at;
    }
    data = std::move(records);
    bucket.positions_bytes = data.size();
    bucket.value_count = data.size() / veb;
    bucket.checksum = delta_checksum(data, vt, data);
  } else {
    bucket.checksum = delta_checksum(positions, vt, values);
  }
  DS_ASSIGN_OR_RETURN(safetensors_layout layout,
                      build_delta_header(bucket, data_alignment, native,
                                         native != nullptr && !native->slime ? xxh3_64(data) : 0));
  byte_buffer file;
  file.reserve(layout.header.size() + data.size());
  file.insert(file.end(), layout.header.begin(), layout.header.end());
  file.insert(file.end(), data.begin(), data.end());
  if (enc_ == encoding::deltas_zstd) {
    DS_ASSIGN_OR_RETURN(file, zstd_wrap(file, 1));
  }
  values_type_.reset();
  params_.clear();
  positions_.clear();
  values_.clear();
  value_count_ = 0;
  return file;
}

}  // namespace deltasync
