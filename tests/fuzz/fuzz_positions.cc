// libFuzzer target: the position codecs. Byte 0 picks the encoding and pos_width (including invalid widths),
// bytes 1-2 the tensor's element count, the rest is the encoded list. Whatever decodes must be in range,
// strictly ascending, and re-encode to a list that decodes to the same indices.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "codec/delta_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace deltasync;
  if (size < 3) return 0;
  constexpr encoding kEncodings[] = {encoding::indices, encoding::deltas, encoding::deltas_zstd};
  const encoding enc = kEncodings[(data[0] & 3) % 3];
  constexpr uint32_t kWidths[] = {4, 2, 3, 8};
  const uint32_t width = kWidths[(data[0] >> 2) & 3];
  const uint64_t numel = uint64_t{data[1]} | uint64_t{data[2]} << 8;
  const byte_span encoded(reinterpret_cast<const std::byte*>(data + 3), size - 3);

  std::vector<uint32_t> out;
  if (!decode_positions(enc, width, encoded, numel, out).ok()) {
    if (!out.empty()) __builtin_trap();
    return 0;
  }
  if (out.size() * width != encoded.size()) __builtin_trap();
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] >= numel) __builtin_trap();
    if (i > 0 && out[i] <= out[i - 1]) __builtin_trap();
  }
  byte_buffer again;
  const uint32_t w = encode_positions(enc, out, again);
  std::vector<uint32_t> back;
  if (!decode_positions(enc, w, again, numel, back).ok() || back != out) __builtin_trap();
  // The encoder picks the narrowest width, so it never produces more bytes than it was given.
  if (again.size() > encoded.size()) __builtin_trap();
  return 0;
}
