// The slime #1806 delta file: encoding names, the params manifest, native metadata, the header builder and the
// validating reader. Position codecs live in codec/positions.cc, the bucket writer in
// codec/delta_bucket_builder.cc, apply_param in codec/delta_apply.cc and the checksum in codec/tensor_hash.h.
#include "codec/delta_format.h"

#include <algorithm>
#include <boost/json.hpp>
#include <limits>
#include <string>
#include <unordered_set>
#include <utility>

#include "codec/compact.h"
#include "codec/positions.h"
#include "codec/params_parser.h"
#include "codec/zstd_frame.h"

namespace deltasync {
namespace {

namespace json = boost::json;

using detail::castable;
using detail::param_label;
using detail::kMaxNumel;
using detail::quoted;
using detail::width_valid;

constexpr std::string_view kPositionsTensor = "__positions__";
constexpr std::string_view kValuesTensor = "__values__";
constexpr std::string_view kCompactTensor = "__compact__";
constexpr std::string_view kRecordsTensor = "__records__";
constexpr std::string_view kMetaValuesDtype = "values_dtype";
constexpr std::string_view kMetaEncoding = "encoding";
constexpr std::string_view kMetaVersion = "current_version";
constexpr std::string_view kMetaChecksum = "checksum";
constexpr std::string_view kMetaParams = "params";
constexpr std::string_view kMetaFormat = "format";
constexpr std::string_view kMetaBaseVersion = "base_version";
constexpr std::string_view kMetaNativeVersion = "version";
constexpr std::string_view kMetaPayloadHash = "payload_xxh3_64";
constexpr std::string_view kMetaTensorDigests = "tensor_xxh3_128";
constexpr std::string_view kMetaTensorSums = "tensor_sum128";
// What a slime file written by deltasync carries besides slime's keys (delta_format.h): slime ignores them.
constexpr std::string_view kSlimeBaseVersion = "deltasync_base_version";
constexpr std::string_view kSlimeTensorDigests = "deltasync_tensor_xxh3_128";
constexpr std::string_view kSlimeTensorSums = "deltasync_tensor_sum128";

// ---- small parsers ----

std::optional<uint64_t> u64_from_decimal(std::string_view text) noexcept {
  if (text.empty()) return std::nullopt;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    if (__builtin_mul_overflow(v, uint64_t{10}, &v) ||
        __builtin_add_overflow(v, static_cast<uint64_t>(c - '0'), &v))
      return std::nullopt;
  }
  return v;
}

// ---- native metadata ----

// Exactly `digits` lowercase hex digits: the spelling the writer uses, so one digest has one spelling.
bool lowercase_hex(std::string_view s, size_t digits) noexcept {
  if (s.size() != digits) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// A JSON object {param name: 32 lowercase hex} (tensor_xxh3_128, tensor_sum128 and their slime-side keys).
status parse_digest_object(std::string_view text, std::string_view what, std::string_view key,
                           std::map<std::string, digest128, std::less<>>& out) {
  boost::system::error_code ec;
  json::value root = json::parse(json::string_view(text.data(), text.size()), ec);
  const json::object* digests = ec ? nullptr : root.if_object();
  if (digests == nullptr)
    return error(errc::delta_bad_metadata, std::string(what) + ": " + std::string(key) + " is not a JSON object");
  for (const auto& [name_key, value] : *digests) {
    const std::string_view name(name_key.data(), name_key.size());
    const json::string* hex = value.if_string();
    if (hex == nullptr || !lowercase_hex(std::string_view(hex->data(), hex->size()), 32))
      return error(errc::delta_bad_metadata, std::string(what) + ": " + std::string(key) + " of " + quoted(name) +
                                                 " is not 32 lowercase hex digits");
    out.emplace(std::string(name), *digest128_from_hex(std::string_view(hex->data(), hex->size())));
  }
  return {};
}

// Reads the native keys of a file whose metadata has `format`; nullopt for a slime file.
result<std::optional<native_info>> parse_native_metadata(const safetensors_header& h, uint64_t current_version) {
  auto format = h.meta(kMetaFormat);
  if (!format) return std::optional<native_info>{};
  if (*format != kNativeFormatName && *format != kNativeRecordsFormatName)
    return error(errc::delta_bad_metadata, "delta file: unknown format " + quoted(*format) + " (expected '" +
                                               std::string(kNativeFormatName) + "' or '" +
                                               std::string(kNativeRecordsFormatName) + "')");
  auto meta = [&](std::string_view key) -> result<std::string_view> {
    auto v = h.meta(key);
    if (!v) return error(errc::delta_bad_metadata, "native delta file: metadata has no '" + std::string(key) + "'");
    return *v;
  };
  native_info n;
  DS_ASSIGN_OR_RETURN(std::string_view base_text, meta(kMetaBaseVersion));
  DS_ASSIGN_OR_RETURN(std::string_view version_text, meta(kMetaNativeVersion));
  DS_ASSIGN_OR_RETURN(std::string_view hash_text, meta(kMetaPayloadHash));
  DS_ASSIGN_OR_RETURN(std::string_view digests_text, meta(kMetaTensorDigests));

  auto base = u64_from_decimal(base_text);
  auto version = u64_from_decimal(version_text);
  if (!base || !version)
    return error(errc::delta_bad_metadata, "native delta file: base_version " + quoted(base_text) +
                                               " or version " + quoted(version_text) + " is not a decimal integer");
  if (*version != current_version)
    return error(errc::delta_bad_metadata, "native delta file: version " + std::to_string(*version) +
                                               " differs from current_version " + std::to_string(current_version));
  if (*base >= *version)
    return error(errc::delta_bad_metadata, "native delta file: base_version " + std::to_string(*base) +
                                               " is not below version " + std::to_string(*version));
  n.base_version = *base;
  n.version = *version;
  if (!lowercase_hex(hash_text, 16))
    return error(errc::delta_bad_metadata,
                 "native delta file: payload_xxh3_64 " + quoted(hash_text) + " is not 16 lowercase hex digits");
  n.payload_xxh3_64 = *digest64_from_hex(hash_text);

  DS_TRY_STATUS(parse_digest_object(digests_text, "native delta file", kMetaTensorDigests, n.tensor_digests));
  if (auto sums_text = h.meta(kMetaTensorSums))
    DS_TRY_STATUS(parse_digest_object(*sums_text, "native delta file", kMetaTensorSums, n.tensor_sums));
  return std::optional<native_info>{std::move(n)};
}

// The deltasync keys of a slime file (delta_format.h): none, or the base version and the digests together.
result<std::optional<native_info>> parse_slime_claims(const safetensors_header& h, uint64_t current_version) {
  constexpr std::string_view what = "slime delta file";
  const auto base_text = h.meta(kSlimeBaseVersion);
  const auto digests_text = h.meta(kSlimeTensorDigests);
  const auto sums_text = h.meta(kSlimeTensorSums);
  if (!base_text && !digests_text && !sums_text) return std::optional<native_info>{};
  if (!base_text || !digests_text)
    return error(errc::delta_bad_metadata,
                 std::string(what) + ": metadata has " +
                     (base_text ? quoted(kSlimeBaseVersion) + " without " + quoted(kSlimeTensorDigests)
                                : quoted(digests_text ? kSlimeTensorDigests : kSlimeTensorSums) + " without " +
                                      quoted(kSlimeBaseVersion)));
  const auto base = u64_from_decimal(*base_text);
  if (!base)
    return error(errc::delta_bad_metadata,
                 std::string(what) + ": " + std::string(kSlimeBaseVersion) + " " + quoted(*base_text) + " is not a decimal integer");
  if (*base >= current_version)
    return error(errc::delta_bad_metadata, std::string(what) + ": " + std::string(kSlimeBaseVersion) + " " +
                                               std::to_string(*base) + " is not below current_version " +
                                               std::to_string(current_version));
  native_info n;
  n.base_version = *base;
  n.version = current_version;
  DS_TRY_STATUS(parse_digest_object(*digests_text, what, kSlimeTensorDigests, n.tensor_digests));
  if (sums_text) DS_TRY_STATUS(parse_digest_object(*sums_text, what, kSlimeTensorSums, n.tensor_sums));
  return std::optional<native_info>{std::move(n)};
}

// XXH3-64 of __positions__ followed by __values__. Our writer stores them back to back in that order (then
// the data section is one span); another writer may not, and then the two are hashed from a copy.
uint64_t payload_hash(byte_span positions, byte_span values) {
  if (positions.data() == values.data() && positions.size() == values.size()) return xxh3_64(positions);  // records
  if (positions.empty() || positions.data() + positions.size() == values.data())
    return xxh3_64(byte_span(positions.empty() ? values.data() : positions.data(), positions.size() + values.size()));
  byte_buffer joined(positions.begin(), positions.end());
  joined.insert(joined.end(), values.begin(), values.end());
  return xxh3_64(joined);
}

}  // namespace

// ---- names ----

std::string_view encoding_name(encoding e) noexcept {
  switch (e) {
    case encoding::indices: return "indices";
    case encoding::deltas: return "deltas";
    case encoding::deltas_zstd: return "deltas_zstd";
    case encoding::compact: return "compact";
  }
  return "?";
}

std::optional<encoding> encoding_from_name(std::string_view name) noexcept {
  if (name == "indices") return encoding::indices;
  if (name == "deltas") return encoding::deltas;
  if (name == "deltas_zstd") return encoding::deltas_zstd;
  if (name == "compact") return encoding::compact;
  return std::nullopt;
}

// ---- manifest ----

uint64_t param_entry::numel() const noexcept {
  uint64_t n = 1;
  for (uint64_t d : shape)
    if (!checked_mul(n, d, n)) return std::numeric_limits<uint64_t>::max();
  return n;
}

std::string params_to_json(const std::vector<param_entry>& params) {
  json::array list;
  list.reserve(params.size());
  for (const auto& p : params) {
    json::array shape;
    for (uint64_t d : p.shape) shape.emplace_back(d);
    json::object o;
    o["name"] = p.name;
    o["dtype"] = torch_name(p.type);
    o["shape"] = std::move(shape);
    o["pos_start"] = p.pos_start;
    o["pos_end"] = p.pos_end;
    o["pos_width"] = p.pos_width;
    o["val_start"] = p.val_start;
    o["val_end"] = p.val_end;
    list.emplace_back(std::move(o));
  }
  return json::serialize(list);
}

// ---- writer (the header; delta_bucket_builder is in codec/delta_bucket_builder.cc) ----

result<safetensors_layout> build_delta_header(const encoded_bucket& b, uint64_t data_alignment,
                                              const native_fields* native, uint64_t payload_xxh3_64) {
  const encoding meta_enc = b.enc;  // slime writes "deltas_zstd" inside the frame too
  std::vector<std::pair<std::string, std::string>> metadata = {
      {std::string(kMetaEncoding), std::string(encoding_name(meta_enc))},
      {std::string(kMetaVersion), std::to_string(b.current_version)},
      {std::string(kMetaChecksum), checksum_to_decimal(b.checksum)},
      {std::string(kMetaParams), params_to_json(b.params)},
  };
  if (native != nullptr) {
    json::object digests, sums;
    for (const auto& p : b.params) {
      auto it = native->tensor_digests.find(p.name);
      if (it == native->tensor_digests.end())
        return error(errc::invalid_argument, "native delta file: no tensor digest for param " + quoted(p.name));
      digests[p.name] = to_hex(it->second);
      if (auto s = native->tensor_sums.find(p.name); s != native->tensor_sums.end()) sums[p.name] = to_hex(s->second);
    }
    if (native->slime) {
      if (b.enc == encoding::compact)
        return error(errc::invalid_argument, "compact delta file: the encoding needs the native format, not slime's");
      metadata.emplace_back(kSlimeBaseVersion, std::to_string(native->base_version));
      metadata.emplace_back(kSlimeTensorDigests, json::serialize(digests));
      if (!sums.empty()) metadata.emplace_back(kSlimeTensorSums, json::serialize(sums));
    } else {
      metadata.emplace_back(kMetaFormat, kNativeFormatName);
      metadata.emplace_back(kMetaBaseVersion, std::to_string(native->base_version));
      metadata.emplace_back(kMetaNativeVersion, std::to_string(b.current_version));
      metadata.emplace_back(kMetaPayloadHash, to_hex64(payload_xxh3_64));
      metadata.emplace_back(kMetaTensorDigests, json::serialize(digests));
      if (!sums.empty()) metadata.emplace_back(kMetaTensorSums, json::serialize(sums));
    }
  }
  if (b.enc == encoding::compact) {
    if (native == nullptr)
      return error(errc::invalid_argument, "compact delta file: the encoding needs the native format (base_version)");
    const std::vector<tensor_spec> specs = {{std::string(kCompactTensor), dtype::U8, {b.positions_bytes}, b.positions_bytes}};
    return build_safetensors_header(specs, metadata, data_alignment);
  }
  if (native != nullptr && native->records && !native->slime) {
    // The streamable layout: positions_bytes is the size of __records__ (see the header).
    for (auto& [k, v] : metadata)
      if (k == kMetaFormat) v = std::string(kNativeRecordsFormatName);
    metadata.emplace_back(kMetaValuesDtype, std::string(name(b.values_type)));
    const std::vector<tensor_spec> rec = {{std::string(kRecordsTensor), dtype::U8, {b.positions_bytes}, b.positions_bytes}};
    return build_safetensors_header(rec, metadata, data_alignment);
  }
  const uint64_t values_bytes = b.value_count * element_bytes(b.values_type);
  const std::vector<tensor_spec> specs = {
      {std::string(kPositionsTensor), dtype::U8, {b.positions_bytes}, b.positions_bytes},
      {std::string(kValuesTensor), b.values_type, {b.value_count}, values_bytes},
  };
  return build_safetensors_header(specs, metadata, data_alignment);
}

// ---- reader ----

result<delta_file> parse_delta_file(byte_span file, const delta_read_limits& limits) {
  delta_file f;
  byte_span inner = file;
  const bool zipped = is_zstd_frame(file);
  if (zipped) {
    memory_lease lease(limits.memory);
    auto unwrapped = zstd_unwrap(file, limits.max_decompressed_bytes, &lease);
    if (!unwrapped.ok()) {
      error e = std::move(unwrapped).err();
      return error(e.code, "delta file (deltas_zstd): " + e.message);
    }
    f.storage = std::move(unwrapped).value();
    f.storage_lease = std::move(lease);
    inner = f.storage;
  }

  auto parsed = parse_safetensors(inner);
  if (!parsed.ok()) {
    error e = std::move(parsed).err();
    return error(e.code, "delta file: " + e.message);
  }
  const safetensors_view& st = parsed.value();

  // Exactly the two tensors, or __compact__ alone (a compact file), or __records__ alone (the streamable
  // native layout).
  const auto format = st.header.meta(kMetaFormat);
  f.records = format && *format == kNativeRecordsFormatName;
  uint64_t value_count = 0;
  const tensor_info* compact_t = st.header.find(kCompactTensor);
  if (compact_t != nullptr) {
    if (f.records)
      return error(errc::delta_bad_metadata, "native delta file: a compact file's format is " +
                                                 quoted(kNativeFormatName) + ", not " + quoted(kNativeRecordsFormatName));
    if (st.header.tensors.size() != 1 || compact_t->type != dtype::U8 || compact_t->shape.size() != 1)
      return error(errc::delta_missing_tensor, "delta file: __compact__ must be the file's only tensor, 1-D U8");
    f.values_type = dtype::U8;
    f.positions = st.data(*compact_t);
    value_count = std::numeric_limits<uint64_t>::max();  // no __values__: each stream's header has its count
  } else if (f.records) {
    const tensor_info* rec_t = st.header.find(kRecordsTensor);
    if (rec_t == nullptr && st.header.find(kPositionsTensor) && st.header.find(kValuesTensor))
      return error(errc::delta_bad_metadata, "native delta file: format " + quoted(kNativeRecordsFormatName) +
                                                 " but the tensors are __positions__ and __values__ (the layout of " +
                                                 std::string(kNativeFormatName) + ")");
    if (rec_t == nullptr || st.header.tensors.size() != 1)
      return error(errc::delta_missing_tensor, "native delta file (" + std::string(kNativeRecordsFormatName) +
                                                   "): expected exactly the tensor __records__, found " +
                                                   std::to_string(st.header.tensors.size()) + " tensors");
    if (rec_t->type != dtype::U8 || rec_t->shape.size() != 1)
      return error(errc::delta_missing_tensor, "native delta file: __records__ is not a 1-D U8 tensor");
    auto vt_text = st.header.meta(kMetaValuesDtype);
    if (!vt_text) return error(errc::delta_bad_metadata, "native delta file: metadata has no 'values_dtype'");
    auto vt = dtype_from_name(*vt_text);
    if (!vt) return error(errc::delta_bad_metadata, "native delta file: values_dtype " + quoted(*vt_text) + " is not a dtype");
    f.values_type = *vt;
    if (element_bytes(f.values_type) == 0 || f.values_type == dtype::C64)
      return error(errc::delta_dtype_mismatch,
                   "delta file: values dtype " + std::string(name(f.values_type)) + " is not supported");
    f.positions = st.data(*rec_t);
    f.values = f.positions;
    if (f.values.size() % element_bytes(f.values_type) != 0)
      return error(errc::delta_manifest_bounds, "native delta file: __records__ holds " +
                                                    std::to_string(f.values.size()) + " bytes, not whole " +
                                                    std::string(name(f.values_type)) + " elements");
    value_count = f.values.size() / element_bytes(f.values_type);
  } else {
    const tensor_info* pos_t = st.header.find(kPositionsTensor);
    const tensor_info* val_t = st.header.find(kValuesTensor);
    if (pos_t == nullptr || val_t == nullptr || st.header.tensors.size() != 2)
      return error(errc::delta_missing_tensor,
                   "delta file: expected exactly the tensors __positions__ and __values__, found " +
                       std::to_string(st.header.tensors.size()) + " tensors");
    if (pos_t->type != dtype::U8 || pos_t->shape.size() != 1)
      return error(errc::delta_missing_tensor, "delta file: __positions__ is not a 1-D U8 tensor");
    if (val_t->shape.size() != 1)
      return error(errc::delta_missing_tensor, "delta file: __values__ is not 1-D");
    f.values_type = val_t->type;
    if (element_bytes(f.values_type) == 0 || f.values_type == dtype::C64)
      return error(errc::delta_dtype_mismatch,
                   "delta file: __values__ dtype " + std::string(name(f.values_type)) + " is not supported");
    f.positions = st.data(*pos_t);
    f.values = st.data(*val_t);
    value_count = val_t->shape[0];
  }

  // Metadata.
  // f.metadata takes the header's metadata at the end (moved, not copied: the manifest may be tens of MB).
  auto meta = [&](std::string_view key) -> result<std::string_view> {
    auto v = st.header.meta(key);
    if (!v) return error(errc::delta_bad_metadata, "delta file: metadata has no '" + std::string(key) + "'");
    return *v;
  };
  DS_ASSIGN_OR_RETURN(std::string_view enc_text, meta(kMetaEncoding));
  DS_ASSIGN_OR_RETURN(std::string_view version_text, meta(kMetaVersion));
  DS_ASSIGN_OR_RETURN(std::string_view checksum_text, meta(kMetaChecksum));
  DS_ASSIGN_OR_RETURN(std::string_view params_text, meta(kMetaParams));

  auto enc = encoding_from_name(enc_text);
  if (!enc)
    return error(errc::delta_unknown_encoding, "delta file: unknown encoding " + quoted(enc_text));
  if (zipped) {
    // slime writes "deltas_zstd" in the inner metadata; a plain "deltas" file wrapped later is the same thing.
    if (*enc == encoding::indices)
      return error(errc::delta_bad_metadata, "delta file: a zstd frame holds an 'indices' file");
    *enc = encoding::deltas_zstd;
  } else if (*enc == encoding::deltas_zstd) {
    return error(errc::delta_bad_metadata, "delta file: encoding 'deltas_zstd' but the file is not a zstd frame");
  }
  if ((*enc == encoding::compact) != (compact_t != nullptr))
    return error(errc::delta_bad_metadata, compact_t != nullptr
                                               ? "delta file: a __compact__ tensor in a file whose encoding is " +
                                                     quoted(enc_text)
                                               : std::string("delta file: encoding 'compact' without a __compact__ tensor"));
  f.manifest.enc = *enc;

  auto version = u64_from_decimal(version_text);
  if (!version)
    return error(errc::delta_bad_metadata,
                 "delta file: current_version " + quoted(version_text) + " is not a decimal integer");
  f.manifest.current_version = *version;
  auto sum = checksum_from_decimal(checksum_text);
  if (!sum)
    return error(errc::delta_bad_metadata,
                 "delta file: checksum " + quoted(checksum_text) + " is not a decimal integer");
  f.manifest.checksum = *sum;

  // Native keys, then the payload hash: a corrupt payload is reported as such before its manifest is read.
  DS_ASSIGN_OR_RETURN(f.native, parse_native_metadata(st.header, f.manifest.current_version));
  if (!f.native) {
    DS_ASSIGN_OR_RETURN(f.slime_claims, parse_slime_claims(st.header, f.manifest.current_version));
  }
  if (f.manifest.enc == encoding::compact && !f.native)
    return error(errc::delta_bad_metadata, "delta file: encoding 'compact' outside the native format (no base_version)");
  if (f.native && limits.verify_payload_hash) {
    const uint64_t actual = payload_hash(f.positions, f.values);
    if (actual != f.native->payload_xxh3_64)
      return error(errc::delta_payload_hash_mismatch, "native delta file: payload hashes to " + to_hex64(actual) +
                                                          ", the metadata says " +
                                                          to_hex64(f.native->payload_xxh3_64));
  }

  params_limits pl;
  pl.max_params = limits.max_params;
  pl.known = limits.known_tensor;
  DS_ASSIGN_OR_RETURN(f.manifest.params, parse_params_json(params_text, pl));

  // Cross-check every param against the blobs. Ranges must follow manifest order without overlap (slime
  // writes them back to back), so no two params can claim the same position bytes or values.
  std::unordered_set<std::string_view> names;
  names.reserve(f.manifest.params.size());
  uint64_t pos_floor = 0, val_floor = 0, rec_floor = 0;
  for (size_t i = 0; i < f.manifest.params.size(); ++i) {
    const param_entry& p = f.manifest.params[i];
    const std::string label = param_label(i, p.name);
    if (!names.insert(p.name).second)
      return error(errc::delta_bad_manifest, "delta file: " + label + " appears twice");
    if (!width_valid(f.manifest.enc, p.pos_width))
      return error(errc::delta_bad_pos_width, "delta file: " + label + " pos_width " +
                                                  std::to_string(p.pos_width) + " is not valid for encoding " +
                                                  std::string(encoding_name(f.manifest.enc)));
    if (p.pos_start < pos_floor || p.pos_end > f.positions.size())
      return error(errc::delta_manifest_bounds,
                   "delta file: " + label + " positions range [" + std::to_string(p.pos_start) + ", " +
                       std::to_string(p.pos_end) + ") overlaps another param or lies outside __positions__ (" +
                       std::to_string(f.positions.size()) + " bytes)");
    if (p.val_start < val_floor || p.val_end > value_count)
      return error(errc::delta_manifest_bounds,
                   "delta file: " + label + " values range [" + std::to_string(p.val_start) + ", " +
                       std::to_string(p.val_end) + ") overlaps another param or lies outside __values__ (" +
                       std::to_string(value_count) + " elements)");
    if (f.records) {
      // Records are contiguous and in order: positions, then values, then the next record.
      const uint64_t veb = element_bytes(f.values_type);
      if (p.pos_start < rec_floor || p.pos_end > p.val_start * veb)
        return error(errc::delta_manifest_bounds, "native delta file: " + label +
                                                      "'s record overlaps another or puts its values before its positions");
      rec_floor = p.val_end * veb;
    }
    pos_floor = p.pos_end;
    val_floor = p.val_end;
    if (f.manifest.enc == encoding::compact) {
      // The stream's header and directory are checked here (count, element size, block sizes); its codes when
      // it is applied.
      const uint32_t eb = element_bytes(p.type);
      if (eb != 1 && eb != 2 && eb != 4 && eb != 8)
        return error(errc::delta_dtype_mismatch, "delta file: " + label + " dtype " + std::string(torch_name(p.type)) +
                                                     " has no compact encoding");
      if (p.numel() > kMaxNumel)
        return error(errc::delta_bad_manifest, "delta file: " + label + " has " + std::to_string(p.numel()) +
                                                   " elements, more than 32-bit positions address");
      if (p.changed() > p.numel())
        return error(errc::delta_value_count_mismatch, "delta file: " + label + " changes " +
                                                           std::to_string(p.changed()) + " elements of a tensor of " +
                                                           std::to_string(p.numel()));
      auto info = compact::read_header(f.positions.subspan(p.pos_start, p.pos_end - p.pos_start), p.changed(), eb);
      if (!info.ok()) {
        error e = std::move(info).err();
        return error(e.code, "delta file: " + label + ": " + e.message);
      }
      continue;
    }
    const uint64_t count = (p.pos_end - p.pos_start) / p.pos_width;
    if (count != p.changed())
      return error(errc::delta_value_count_mismatch, "delta file: " + label + " has " + std::to_string(count) +
                                                         " positions but " + std::to_string(p.changed()) +
                                                         " values");
    const uint64_t numel = p.numel();
    if (numel > kMaxNumel)
      return error(errc::delta_bad_manifest,
                   "delta file: " + label + " has " + std::to_string(numel) + " elements, more than 32-bit positions address");
    if (count > numel)
      return error(errc::delta_value_count_mismatch, "delta file: " + label + " changes " + std::to_string(count) +
                                                         " elements of a tensor of " + std::to_string(numel));
    if (!castable(f.values_type, p.type))
      return error(errc::delta_dtype_mismatch, "delta file: " + label + " is " + std::string(torch_name(p.type)) +
                                                   " but __values__ is " + std::string(name(f.values_type)) +
                                                   ", which does not convert to it");
  }

  if (const native_info* c = f.claims()) {
    // Exactly one digest per param: a digest for a tensor the file does not touch would be verified against
    // nothing.
    const std::string what = f.native ? "native delta file: " : "slime delta file: ";
    const std::string_view dkey = f.native ? kMetaTensorDigests : kSlimeTensorDigests;
    const std::string_view skey = f.native ? kMetaTensorSums : kSlimeTensorSums;
    for (const auto& p : f.manifest.params)
      if (!c->tensor_digests.contains(p.name))
        return error(errc::delta_bad_metadata, what + std::string(dkey) + " has no digest for " + quoted(p.name));
    if (c->tensor_digests.size() != f.manifest.params.size())
      for (const auto& [n, d] : c->tensor_digests)
        if (!names.contains(n))
          return error(errc::delta_bad_metadata,
                       what + std::string(dkey) + " names " + quoted(n) + ", which the file does not change");
    for (const auto& [n, d] : c->tensor_sums)
      if (!names.contains(n))
        return error(errc::delta_bad_metadata,
                     what + std::string(skey) + " names " + quoted(n) + ", which the file does not change");
  }

  if (limits.verify_checksum) {
    const checksum128 actual = delta_checksum(f.positions, f.values_type, f.values);
    if (actual != f.manifest.checksum)
      return error(errc::delta_checksum_mismatch, "delta file: checksum " + checksum_to_decimal(actual) +
                                                      " does not match the metadata's " +
                                                      checksum_to_decimal(f.manifest.checksum));
  }
  f.metadata = std::move(parsed.value().header.metadata);  // the views read above stay valid (same strings)
  return f;
}

}  // namespace deltasync
