// libFuzzer target: a whole slime delta file (plain or zstd-framed). Parses it with a 16 MiB cap, with and
// without checksum verification, and applies every param of a file that parses to a zero tensor of its size.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "codec/delta_format.h"

namespace {

constexpr uint64_t kCapBytes = 16ull << 20;

void apply_all(const deltasync::delta_file& f) {
  using namespace deltasync;
  byte_buffer dest;
  for (const param_entry& p : f.manifest.params) {
    uint64_t bytes = 0;
    if (element_bytes(p.type) == 0 || !tensor_bytes(p.type, p.numel(), bytes) || bytes > kCapBytes) continue;
    dest.assign(bytes, std::byte{0});
    const byte_buffer before = dest;
    auto st = apply_param(f, p, dest);
    // A refused apply must leave the tensor untouched.
    if (!st.ok() && dest != before) __builtin_trap();
    // A wrong-size destination is always refused.
    if (bytes > 0) {
      byte_buffer small(bytes - 1);
      if (apply_param(f, p, small).ok()) __builtin_trap();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace deltasync;
  const byte_span file(reinterpret_cast<const std::byte*>(data), size);
  delta_read_limits limits;
  limits.max_decompressed_bytes = kCapBytes;
  limits.max_params = 4096;
  auto verified = parse_delta_file(file, limits);
  // Skipping the checksum lets the fuzzer reach the manifest and apply paths without forging hashes.
  limits.verify_checksum = false;
  auto parsed = parse_delta_file(file, limits);
  if (verified.ok() && !parsed.ok()) __builtin_trap();
  if (parsed.ok()) apply_all(*parsed);
  return 0;
}
