// XXH3-64 / XXH3-128 digests over libxxhash, and their canonical hex spellings.
#include "codec/digest.h"

#include <xxhash.h>

#include "base/check.h"

namespace deltasync {

namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

void append_hex64(std::string& out, uint64_t v) {
  for (int shift = 60; shift >= 0; shift -= 4) out.push_back(kHexDigits[(v >> shift) & 0xF]);
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Exactly 16 hex digits -> value; anything else (sign, prefix, spaces) is refused.
std::optional<uint64_t> parse_hex64(std::string_view hex) noexcept {
  if (hex.size() != 16) return std::nullopt;
  uint64_t v = 0;
  for (char c : hex) {
    int d = hex_value(c);
    if (d < 0) return std::nullopt;
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  return v;
}

}  // namespace

uint64_t xxh3_64(byte_span bytes) noexcept { return XXH3_64bits(bytes.data(), bytes.size()); }

digest128 xxh3_128(byte_span bytes) noexcept {
  XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  return {h.high64, h.low64};
}

// Python's hexdigest() prints the canonical (big-endian) form, which is high64 then low64, each big-endian.
std::string to_hex(digest128 d) {
  std::string out;
  out.reserve(32);
  append_hex64(out, d.high);
  append_hex64(out, d.low);
  return out;
}

std::string to_hex64(uint64_t v) {
  std::string out;
  out.reserve(16);
  append_hex64(out, v);
  return out;
}

std::optional<digest128> digest128_from_hex(std::string_view hex) noexcept {
  if (hex.size() != 32) return std::nullopt;
  auto high = parse_hex64(hex.substr(0, 16));
  auto low = parse_hex64(hex.substr(16));
  if (!high || !low) return std::nullopt;
  return digest128{*high, *low};
}

std::optional<uint64_t> digest64_from_hex(std::string_view hex) noexcept { return parse_hex64(hex); }

struct xxh3_128_stream::state {
  XXH3_state_t* s = nullptr;
  state() : s(XXH3_createState()) {
    DS_CHECK(s != nullptr, "XXH3_createState: out of memory");
    DS_CHECK(XXH3_128bits_reset(s) == XXH_OK, "XXH3_128bits_reset failed");
  }
  ~state() { XXH3_freeState(s); }
  state(const state&) = delete;
  state& operator=(const state&) = delete;
};

xxh3_128_stream::xxh3_128_stream() : state_(std::make_unique<state>()) {}
xxh3_128_stream::~xxh3_128_stream() = default;

void xxh3_128_stream::update(byte_span bytes) noexcept {
  // XXH3_128bits_update fails only on a null state with non-empty input, which the constructor rules out.
  (void)XXH3_128bits_update(state_->s, bytes.data(), bytes.size());
}

digest128 xxh3_128_stream::finish() const noexcept {
  XXH128_hash_t h = XXH3_128bits_digest(state_->s);
  return {h.high64, h.low64};
}

}  // namespace deltasync
