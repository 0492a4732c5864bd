// Content digests: XXH3-64 (native files' payload integrity) and XXH3-128 (per-tensor digests, `GET
// /checksums`). Hex spelling matches Python's `xxhash.xxh3_128(b).hexdigest()`: the canonical big-endian
// form, high 64 bits first, 32 lowercase hex digits. The xxhash headers stay inside digest.cc.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/bytes.h"

namespace deltasync {

struct digest128 {
  uint64_t high = 0;
  uint64_t low = 0;
  friend bool operator==(const digest128&, const digest128&) = default;
};

uint64_t xxh3_64(byte_span bytes) noexcept;
digest128 xxh3_128(byte_span bytes) noexcept;

std::string to_hex(digest128 d);      // 32 lowercase hex digits
std::string to_hex64(uint64_t v);     // 16 lowercase hex digits
// Exactly 32 (resp. 16) hex digits, either case; nullopt for anything else (prefixes, spaces, signs).
std::optional<digest128> digest128_from_hex(std::string_view hex) noexcept;
std::optional<uint64_t> digest64_from_hex(std::string_view hex) noexcept;

// Streaming XXH3-128 over a tensor delivered in pieces; equals xxh3_128 of the concatenation however the
// input is split. finish() does not end the stream: more update() calls may follow. Not thread-safe.
class xxh3_128_stream {
 public:
  xxh3_128_stream();
  ~xxh3_128_stream();
  xxh3_128_stream(const xxh3_128_stream&) = delete;
  xxh3_128_stream& operator=(const xxh3_128_stream&) = delete;
  void update(byte_span bytes) noexcept;
  digest128 finish() const noexcept;

 private:
  struct state;
  std::unique_ptr<state> state_;
};

}  // namespace deltasync
