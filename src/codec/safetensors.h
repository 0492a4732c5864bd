// The safetensors container: a validating reader over a byte span and a writer whose output the reference
// `safetensors` library loads. Pure: no I/O. Layout: u64 LE header length n, n bytes of UTF-8 JSON (padded
// with spaces), then the data section; tensor data_offsets are relative to the data section.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "codec/dtype.h"

namespace deltasync {

inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

struct tensor_info {
  std::string name;
  dtype type = dtype::U8;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;  // offsets into the data section
  uint64_t end = 0;

  uint64_t numel() const noexcept;  // product(shape); 1 for a scalar (shape [])
  uint64_t nbytes() const noexcept { return end - begin; }
};

// A parsed, validated header. Tensors are sorted by data offset; metadata keeps file order.
struct safetensors_header {
  uint64_t header_bytes = 0;  // n: the JSON length including padding
  uint64_t data_offset = 0;   // 8 + n: where the data section starts in the file
  uint64_t data_bytes = 0;    // size of the data section (== the last tensor's end)
  std::vector<tensor_info> tensors;
  std::vector<std::pair<std::string, std::string>> metadata;

  const tensor_info* find(std::string_view name) const noexcept;
  std::optional<std::string_view> meta(std::string_view key) const noexcept;
  uint64_t file_bytes() const noexcept { return data_offset + data_bytes; }
};

// Reads the 8-byte header length from the first bytes of a file of `file_size` bytes; checks it against
// kSafetensorsMaxHeaderBytes and the file size. For streaming readers that fetch the header first.
result<uint64_t> read_safetensors_header_length(byte_span first8, uint64_t file_size);

// Validates the JSON header (exactly n bytes, after the length prefix) for a file of `file_size` bytes.
// Enforces every rule of the reference implementation, each with its own errc::st_* code.
result<safetensors_header> parse_safetensors_header(byte_span header_json, uint64_t file_size);

// A whole file in memory: header plus views of each tensor's bytes.
struct safetensors_view {
  safetensors_header header;
  byte_span file;

  byte_span data(const tensor_info& t) const noexcept {
    return file.subspan(header.data_offset + t.begin, t.nbytes());
  }
};
result<safetensors_view> parse_safetensors(byte_span file);

// ---- writer ----

struct tensor_spec {
  std::string name;
  dtype type = dtype::U8;
  std::vector<uint64_t> shape;
  uint64_t nbytes = 0;  // must equal product(shape) x element size
};

struct safetensors_layout {
  byte_buffer header;                  // 8-byte length + JSON + space padding
  std::vector<uint64_t> data_offsets;  // begin of each tensor (in the order given) in the data section
  uint64_t data_bytes = 0;
};

// Builds the header for tensors stored back to back in the given order. `data_alignment` is 8 (the
// safetensors convention) or a larger power of two (e.g. 4096, so the data section starts on an O_DIRECT
// boundary); the header is padded with spaces to reach it. Fails on a size that does not match the shape.
result<safetensors_layout> build_safetensors_header(
    const std::vector<tensor_spec>& tensors,
    const std::vector<std::pair<std::string, std::string>>& metadata, uint64_t data_alignment = 8);

struct tensor_data {
  tensor_spec spec;
  byte_span data;
};

// A whole file in memory: header followed by each tensor's bytes.
result<byte_buffer> write_safetensors(const std::vector<tensor_data>& tensors,
                                      const std::vector<std::pair<std::string, std::string>>& metadata,
                                      uint64_t data_alignment = 8);

}  // namespace deltasync
