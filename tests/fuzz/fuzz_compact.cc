// libFuzzer target: the compact stream decoder (codec/compact.h; compact/2 and compact/1 streams, seeds of both). Bytes 0-2 give the tensor's element count (< 2^20),
// the rest is one param's stream; its header says the element size and count, which the target passes back
// (so a fuzzed stream gets past the count check and reaches the codes). Whatever decodes must be in range and
// strictly ascending, apply to a tensor without leaving it, and re-encode to a stream that decodes the same.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "codec/compact.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace deltasync;
  if (size < 3) return 0;
  const uint64_t numel = uint64_t{data[0]} | uint64_t{data[1]} << 8 | uint64_t{data[2] & 0x0Fu} << 16;  // < 2^20
  const byte_span stream(reinterpret_cast<const std::byte*>(data + 3), size - 3);
  uint32_t eb = 2;
  uint64_t count = 0;
  if (stream.size() >= compact::kHeaderBytes) {
    eb = static_cast<uint8_t>(stream[2]);
    count = load_le<uint32_t>(stream.data() + 4);
  }
  std::vector<uint32_t> positions;
  byte_buffer diffs;
  if (!compact::decode(stream, count, numel, eb, positions, diffs).ok()) {
    if (!positions.empty() || !diffs.empty()) __builtin_trap();
    return 0;
  }
  if (positions.size() != count || diffs.size() != count * eb) __builtin_trap();
  for (size_t i = 0; i < positions.size(); ++i) {
    if (positions[i] >= numel) __builtin_trap();
    if (i > 0 && positions[i] <= positions[i - 1]) __builtin_trap();
  }
  // Apply onto a zero tensor (old = 0), then re-encode old -> new: the same positions and differences.
  byte_buffer tensor(numel * eb), old;
  compact::apply_diffs(positions, diffs, eb, tensor, &old);
  byte_buffer now(count * eb);
  for (size_t i = 0; i < count; ++i) std::memcpy(now.data() + i * eb, tensor.data() + uint64_t{positions[i]} * eb, eb);
  byte_buffer again;
  compact::encode(positions, old, now, eb, again);
  std::vector<uint32_t> p2;
  byte_buffer d2;
  if (!compact::decode(again, count, numel, eb, p2, d2).ok() || p2 != positions || d2 != diffs) __builtin_trap();
  return 0;
}
