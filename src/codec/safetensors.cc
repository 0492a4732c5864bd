// The safetensors reader and writer. The reader walks the header once with a streaming JSON parser (so it can
// see duplicate keys, which a DOM silently merges) and never touches the data section.
#include "codec/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "codec/quote.h"
#include "codec/safetensors_header_parser.h"

namespace deltasync {
namespace {

using detail::raw_entry;

using detail::kMetadataKey;
using detail::quoted;
constexpr uint64_t kLengthPrefixBytes = 8;

// Returns the offset of the first byte that breaks UTF-8 (as Rust's str::from_utf8 defines it: no overlong
// forms, no surrogates, nothing above U+10FFFF), or s.size() when it is all valid.
size_t first_invalid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    // Headers are overwhelmingly ASCII: skip 8 bytes at a time while no high bit is set.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // UTF-16 surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if ((p[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return n;
}

enum class size_check : uint8_t { ok, overflow, misaligned };

// product(shape) x bits / 8, folded left to right with overflow checks exactly as the reference does (so
// [2^40, 2^40, 0] overflows while [0, 2^40, 2^40] is an empty tensor).
size_check tensor_size(dtype t, const std::vector<uint64_t>& shape, uint64_t& out_bytes) noexcept {
  uint64_t numel = 1;
  for (uint64_t d : shape)
    if (!checked_mul(numel, d, numel)) return size_check::overflow;
  uint64_t bits;
  if (!checked_mul(numel, element_bits(t), bits)) return size_check::overflow;
  if (bits % 8 != 0) return size_check::misaligned;
  out_bytes = bits / 8;
  return size_check::ok;
}

// Rejects duplicate names in file order terms: the message names one duplicated key.
template <typename T, typename KeyOf>
std::optional<std::string_view> find_duplicate(const std::vector<T>& items, KeyOf key_of) {
  std::vector<std::string_view> keys;
  keys.reserve(items.size());
  for (const auto& it : items) keys.push_back(key_of(it));
  std::sort(keys.begin(), keys.end());
  auto dup = std::adjacent_find(keys.begin(), keys.end());
  if (dup == keys.end()) return std::nullopt;
  return *dup;
}

result<tensor_info> validate_entry(raw_entry&& e) {
  auto type = dtype_from_name(e.dtype_name);
  if (!type) return error(errc::st_unknown_dtype, "tensor " + quoted(e.name) + " has unknown dtype " + quoted(e.dtype_name));
  tensor_info t;
  t.name = std::move(e.name);
  t.type = *type;
  t.shape = std::move(e.shape);
  t.begin = e.offsets[0];
  t.end = e.offsets[1];
  if (t.begin > t.end)
    return error(errc::st_bad_offsets, "tensor " + quoted(t.name) + " has data_offsets [" + std::to_string(t.begin) +
                                           ", " + std::to_string(t.end) + "] with begin > end");
  uint64_t bytes = 0;
  switch (tensor_size(t.type, t.shape, bytes)) {
    case size_check::overflow:
      return error(errc::st_size_overflow, "the size of tensor " + quoted(t.name) + " overflows 64 bits");
    case size_check::misaligned:
      return error(errc::st_misaligned_size,
                   "tensor " + quoted(t.name) + " of dtype " + std::string(name(t.type)) + " is not a whole number of bytes");
    case size_check::ok:
      break;
  }
  if (t.end - t.begin != bytes)
    return error(errc::st_size_mismatch, "tensor " + quoted(t.name) + " spans " + std::to_string(t.end - t.begin) +
                                             " bytes but its shape and dtype need " + std::to_string(bytes));
  return t;
}

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      case '\b': out.append("\\b"); break;
      case '\f': out.append("\\f"); break;
      default:
        if (c < 0x20) {
          out.append("\\u00");
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 0xF]);
        } else {
          out.push_back(ch);  // UTF-8 passes through; the writer checked it is valid
        }
    }
  }
  out.push_back('"');
}

void append_uint_array(std::string& out, const uint64_t* v, size_t n) {
  out.push_back('[');
  for (size_t i = 0; i < n; ++i) {
    if (i != 0) out.push_back(',');
    out.append(std::to_string(v[i]));
  }
  out.push_back(']');
}

status check_writable_string(std::string_view s, std::string_view what) {
  if (first_invalid_utf8(s) != s.size())
    return error(errc::st_header_not_utf8, std::string(what) + " " + quoted(s) + " is not valid UTF-8");
  return {};
}

}  // namespace

uint64_t tensor_info::numel() const noexcept {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;  // validated headers cannot overflow
  return n;
}

const tensor_info* safetensors_header::find(std::string_view n) const noexcept {
  for (const auto& t : tensors)
    if (t.name == n) return &t;
  return nullptr;
}

std::optional<std::string_view> safetensors_header::meta(std::string_view key) const noexcept {
  for (const auto& [k, v] : metadata)
    if (k == key) return std::string_view(v);
  return std::nullopt;
}

result<uint64_t> read_safetensors_header_length(byte_span first8, uint64_t file_size) {
  if (first8.size() < kLengthPrefixBytes || file_size < kLengthPrefixBytes)
    return error(errc::st_too_small, "a safetensors file needs at least 8 bytes, this one has " +
                                         std::to_string(std::min<uint64_t>(first8.size(), file_size)));
  const auto n = load_le<uint64_t>(first8.data());
  if (n > kSafetensorsMaxHeaderBytes)
    return error(errc::st_header_too_large, "header length " + std::to_string(n) + " exceeds the limit of " +
                                                std::to_string(kSafetensorsMaxHeaderBytes) + " bytes");
  if (n > file_size - kLengthPrefixBytes)
    return error(errc::st_header_out_of_bounds, "header of " + std::to_string(n) + " bytes at offset 8 runs past the " +
                                                    std::to_string(file_size) + "-byte file");
  return n;
}

result<safetensors_header> parse_safetensors_header(byte_span header_json, uint64_t file_size) {
  const uint64_t n = header_json.size();
  if (n > kSafetensorsMaxHeaderBytes)
    return error(errc::st_header_too_large, "header length " + std::to_string(n) + " exceeds the limit of " +
                                                std::to_string(kSafetensorsMaxHeaderBytes) + " bytes");
  if (file_size < kLengthPrefixBytes || n > file_size - kLengthPrefixBytes)
    return error(errc::st_header_out_of_bounds, "header of " + std::to_string(n) + " bytes at offset 8 runs past the " +
                                                    std::to_string(file_size) + "-byte file");
  const std::string_view text = as_chars(header_json);
  if (size_t bad = first_invalid_utf8(text); bad != text.size())
    return error(errc::st_header_not_utf8, "header byte at file offset " + std::to_string(kLengthPrefixBytes + bad) +
                                               " is not valid UTF-8");
  if (text.empty() || text.front() != '{')
    return error(errc::st_header_bad_start, "header does not start with '{' (file offset 8)");

  DS_ASSIGN_OR_RETURN(detail::raw_header h, detail::parse_raw_header(text, kLengthPrefixBytes));

  if (auto dup = find_duplicate(h.entries, [](const raw_entry& e) -> std::string_view { return e.name; }))
    return error(errc::st_duplicate_tensor, "tensor " + quoted(*dup) + " appears more than once in the header");
  using meta_pair = std::pair<std::string, std::string>;
  if (auto dup = find_duplicate(h.metadata, [](const meta_pair& m) -> std::string_view { return m.first; }))
    return error(errc::st_metadata_not_strings, "metadata key " + quoted(*dup) + " appears more than once");

  safetensors_header out;
  out.header_bytes = n;
  out.data_offset = kLengthPrefixBytes + n;
  out.metadata = std::move(h.metadata);
  out.tensors.reserve(h.entries.size());
  for (auto& e : h.entries) {
    DS_ASSIGN_OR_RETURN(tensor_info t, validate_entry(std::move(e)));
    out.tensors.push_back(std::move(t));
  }

  // Sorted by (begin, end) so that empty tensors sit before a tensor starting at the same offset, as in the
  // reference; the name breaks remaining ties so the order is deterministic.
  std::sort(out.tensors.begin(), out.tensors.end(), [](const tensor_info& a, const tensor_info& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  uint64_t expected = 0;
  for (const auto& t : out.tensors) {
    if (t.begin != expected)
      return error(errc::st_not_contiguous, "tensor " + quoted(t.name) + " starts at data offset " +
                                                std::to_string(t.begin) + " but the previous tensor ends at " +
                                                std::to_string(expected) + (t.begin > expected ? " (hole)" : " (overlap)"));
    expected = t.end;
  }
  const uint64_t available = file_size - out.data_offset;
  if (expected != available)
    return error(errc::st_size_mismatch_file, "tensors end at data offset " + std::to_string(expected) +
                                                  " but the file's data section holds " + std::to_string(available) +
                                                  " bytes (file size " + std::to_string(file_size) + ")");
  out.data_bytes = expected;
  return out;
}

result<safetensors_view> parse_safetensors(byte_span file) {
  DS_ASSIGN_OR_RETURN(uint64_t n, read_safetensors_header_length(file.first(std::min<size_t>(file.size(), 8)), file.size()));
  DS_ASSIGN_OR_RETURN(safetensors_header h, parse_safetensors_header(file.subspan(kLengthPrefixBytes, n), file.size()));
  return safetensors_view{std::move(h), file};
}

result<safetensors_layout> build_safetensors_header(
    const std::vector<tensor_spec>& tensors,
    const std::vector<std::pair<std::string, std::string>>& metadata, uint64_t data_alignment) {
  if (data_alignment < 8 || !std::has_single_bit(data_alignment))
    return error(errc::invalid_argument, "data_alignment " + std::to_string(data_alignment) +
                                             " is not a power of two >= 8");
  if (auto dup = find_duplicate(tensors, [](const tensor_spec& t) -> std::string_view { return t.name; }))
    return error(errc::st_duplicate_tensor, "tensor " + quoted(*dup) + " is given more than once");
  using meta_pair = std::pair<std::string, std::string>;
  if (auto dup = find_duplicate(metadata, [](const meta_pair& m) -> std::string_view { return m.first; }))
    return error(errc::st_metadata_not_strings, "metadata key " + quoted(*dup) + " is given more than once");

  std::string json = "{";
  if (!metadata.empty()) {
    append_json_string(json, kMetadataKey);
    json.append(":{");
    for (size_t i = 0; i < metadata.size(); ++i) {
      const auto& [k, v] = metadata[i];
      DS_TRY_STATUS(check_writable_string(k, "metadata key"));
      DS_TRY_STATUS(check_writable_string(v, "metadata value"));
      if (i != 0) json.push_back(',');
      append_json_string(json, k);
      json.push_back(':');
      append_json_string(json, v);
    }
    json.push_back('}');
  }

  safetensors_layout out;
  out.data_offsets.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (t.name == kMetadataKey) return error(errc::invalid_argument, "a tensor cannot be named __metadata__");
    DS_TRY_STATUS(check_writable_string(t.name, "tensor name"));
    uint64_t bytes = 0;
    switch (tensor_size(t.type, t.shape, bytes)) {
      case size_check::overflow:
        return error(errc::st_size_overflow, "the size of tensor " + quoted(t.name) + " overflows 64 bits");
      case size_check::misaligned:
        return error(errc::st_misaligned_size, "tensor " + quoted(t.name) + " of dtype " + std::string(name(t.type)) +
                                                   " is not a whole number of bytes");
      case size_check::ok:
        break;
    }
    if (bytes != t.nbytes)
      return error(errc::st_size_mismatch, "tensor " + quoted(t.name) + " is given " + std::to_string(t.nbytes) +
                                               " bytes but its shape and dtype need " + std::to_string(bytes));
    uint64_t end;
    if (__builtin_add_overflow(offset, bytes, &end))
      return error(errc::st_size_overflow, "the data section overflows 64 bits at tensor " + quoted(t.name));
    if (json.size() > 1) json.push_back(',');
    append_json_string(json, t.name);
    json.append(":{\"dtype\":\"");
    json.append(name(t.type));
    json.append("\",\"shape\":");
    append_uint_array(json, t.shape.data(), t.shape.size());
    json.append(",\"data_offsets\":");
    const uint64_t range[2] = {offset, end};
    append_uint_array(json, range, 2);
    json.push_back('}');
    out.data_offsets.push_back(offset);
    offset = end;
  }
  json.push_back('}');

  // Spaces after the JSON are whitespace to every JSON parser; they put the data section on the boundary.
  const uint64_t unpadded = kLengthPrefixBytes + json.size();
  const uint64_t pad = (data_alignment - unpadded % data_alignment) % data_alignment;
  const uint64_t n = json.size() + pad;
  if (n > kSafetensorsMaxHeaderBytes)
    return error(errc::st_header_too_large, "the header would take " + std::to_string(n) + " bytes, over the limit of " +
                                                std::to_string(kSafetensorsMaxHeaderBytes));
  out.header.resize(kLengthPrefixBytes + n);
  store_le<uint64_t>(out.header.data(), n);
  std::memcpy(out.header.data() + kLengthPrefixBytes, json.data(), json.size());
  std::memset(out.header.data() + kLengthPrefixBytes + json.size(), ' ', pad);
  out.data_bytes = offset;
  return out;
}

result<byte_buffer> write_safetensors(const std::vector<tensor_data>& tensors,
                                      const std::vector<std::pair<std::string, std::string>>& metadata,
                                      uint64_t data_alignment) {
  std::vector<tensor_spec> specs;
  specs.reserve(tensors.size());
  for (const auto& t : tensors) {
    if (t.data.size() != t.spec.nbytes)
      return error(errc::st_size_mismatch, "tensor " + quoted(t.spec.name) + " has " + std::to_string(t.data.size()) +
                                               " bytes of data but its spec says " + std::to_string(t.spec.nbytes));
    specs.push_back(t.spec);
  }
  DS_ASSIGN_OR_RETURN(safetensors_layout layout, build_safetensors_header(specs, metadata, data_alignment));
  byte_buffer out;
  out.reserve(layout.header.size() + layout.data_bytes);
  out.insert(out.end(), layout.header.begin(), layout.header.end());
  for (const auto& t : tensors) out.insert(out.end(), t.data.begin(), t.data.end());
  return out;
}

}  // namespace deltasync
