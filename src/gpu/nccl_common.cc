// Parts of the NCCL transport that need neither CUDA nor NCCL (built in every configuration): base64 for
// the unique id carried in POST /nccl/init.
#include <string>
#include <string_view>

#include "gpu/nccl_channel.h"

namespace deltasync::gpu {
namespace {
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int sextet(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace

std::string base64_encode(byte_span bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = (std::to_integer<uint32_t>(bytes[i]) << 16) | (std::to_integer<uint32_t>(bytes[i + 1]) << 8) |
                       std::to_integer<uint32_t>(bytes[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out.push_back(kAlphabet[(v >> k) & 63]);
  }
  const size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = std::to_integer<uint32_t>(bytes[i]) << 16;
    if (rest == 2) v |= std::to_integer<uint32_t>(bytes[i + 1]) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

result<byte_buffer> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return error(errc::bad_request, "base64: length " + std::to_string(text.size()) + " is not a multiple of 4");
  byte_buffer out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    int s[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text[i + static_cast<size_t>(k)];
      if (c == '=' && i + 4 == text.size() && k >= 2) {
        s[k] = 0;
        ++pad;
        continue;
      }
      if (pad > 0 || (s[k] = sextet(c)) < 0) return error(errc::bad_request, "base64: invalid character at " + std::to_string(i + static_cast<size_t>(k)));
    }
    const uint32_t v = (static_cast<uint32_t>(s[0]) << 18) | (static_cast<uint32_t>(s[1]) << 12) |
                       (static_cast<uint32_t>(s[2]) << 6) | static_cast<uint32_t>(s[3]);
    out.push_back(static_cast<std::byte>(v >> 16));
    if (pad < 2) out.push_back(static_cast<std::byte>((v >> 8) & 0xff));
    if (pad < 1) out.push_back(static_cast<std::byte>(v & 0xff));
  }
  return out;
}

}  // namespace deltasync::gpu
