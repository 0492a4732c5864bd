// Escaping of control characters and invalid UTF-8 (see text_escape.h). One scanner drives both outputs.
#include "base/text_escape.h"

#include <cstdint>
#include <cstdio>

namespace deltasync {
namespace {

// Length of the valid UTF-8 sequence starting at s[i] (1..4), or 0 when the bytes there are not one
// (overlong forms, surrogates and code points past U+10FFFF are invalid).
size_t utf8_length(std::string_view s, size_t i, uint32_t& cp) noexcept {
  const auto b0 = static_cast<unsigned char>(s[i]);
  size_t n = 0;
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
    cp = b0 & 0x1Fu;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    cp = b0 & 0x0Fu;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    cp = b0 & 0x07u;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0u) != 0x80u) return 0;
    cp = (cp << 6) | (b & 0x3Fu);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

bool dangerous(uint32_t cp) noexcept {
  return cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 || cp == 0xFEFF;
}

// Calls put(piece) for each output piece, stopping when put returns false.
template <typename Put>
void scan(std::string_view s, Put put) noexcept {
  char esc[16];
  size_t i = 0;
  while (i < s.size()) {
    uint32_t cp = 0;
    const size_t n = utf8_length(s, i, cp);
    std::string_view piece;
    if (n == 0) {
      std::snprintf(esc, sizeof esc, "\\x%02x", static_cast<unsigned>(static_cast<unsigned char>(s[i])));
      piece = std::string_view(esc, 4);
      i += 1;
    } else if (dangerous(cp)) {
      if (cp == '\n') piece = "\\n";
      else if (cp == '\r') piece = "\\r";
      else if (cp == '\t') piece = "\\t";
      else if (cp < 0x80) {
        std::snprintf(esc, sizeof esc, "\\x%02x", static_cast<unsigned>(cp));
        piece = std::string_view(esc, 4);
      } else {
        std::snprintf(esc, sizeof esc, "\\u%04x", static_cast<unsigned>(cp));
        piece = std::string_view(esc, 6);
      }
      i += n;
    } else {
      // A run of safe characters goes out in one piece.
      size_t j = i + n;
      while (j < s.size()) {
        uint32_t c2 = 0;
        const size_t m = utf8_length(s, j, c2);
        if (m == 0 || dangerous(c2)) break;
        j += m;
      }
      piece = s.substr(i, j - i);
      i = j;
    }
    if (!put(piece)) return;
  }
}

}  // namespace

std::string escape_control(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  scan(text, [&](std::string_view p) {
    out.append(p);
    return true;
  });
  return out;
}

size_t escape_control_to(std::string_view text, char* out, size_t cap) noexcept {
  size_t n = 0;
  scan(text, [&](std::string_view p) {
    if (p.size() > cap - n) {
      // A safe run may be cut (at a character boundary would be nicer, but the logger only cuts at its end).
      const bool is_escape = !p.empty() && p[0] == '\\' && p.size() <= 6;
      if (!is_escape) {
        size_t take = cap - n;
        while (take > 0 && (static_cast<unsigned char>(p[take]) & 0xC0u) == 0x80u) --take;  // whole characters
        for (size_t k = 0; k < take; ++k) out[n + k] = p[k];
        n += take;
      }
      return false;
    }
    for (size_t k = 0; k < p.size(); ++k) out[n + k] = p[k];
    n += p.size();
    return true;
  });
  return n;
}

bool needs_escape(std::string_view text) noexcept {
  bool changed = false;
  scan(text, [&](std::string_view p) {
    // The scanner hands safe text out as views into `text` itself; anything else is an escape.
    if (p.data() < text.data() || p.data() >= text.data() + text.size()) {
      changed = true;
      return false;
    }
    return true;
  });
  return changed;
}

}  // namespace deltasync
