// Log lines are formatted into a stack buffer and emitted with one write(2) so lines never interleave.
#include "base/log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "base/features.h"
#include "base/text_escape.h"

namespace deltasync {
namespace {
std::atomic<log_level> g_level{log_level::info};
std::atomic<log_format> g_format{log_format::text};

const char* level_name(log_level l) {
  switch (l) {
    case log_level::debug: return "debug";
    case log_level::info: return "info";
    case log_level::warn: return "warn";
    case log_level::error: return "error";
    case log_level::off: return "off";
  }
  return "?";
}

// "2026-11-28T15:18:13.123Z" (24 characters) into out (sized for any int the compiler imagines).
void format_time(char (&out)[64]) {
  auto now = std::chrono::system_clock::now();
  std::time_t secs = std::chrono::system_clock::to_time_t(now);
  int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  std::snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

// Appends into a fixed buffer, dropping whatever does not fit (the caller keeps room for the closing bytes).
struct line_buffer {
  char* data;
  size_t cap;
  size_t len = 0;
  void put(char c) {
    if (len < cap) data[len++] = c;
  }
  void put(std::string_view s) {
    size_t n = std::min(s.size(), cap - len);
    std::memcpy(data + len, s.data(), n);
    len += n;
  }
  // A JSON string body: quotes, backslashes and control characters escaped, invalid UTF-8 as U+FFFD. A
  // character that would not fit whole is dropped, so the result stays valid.
  void put_json_string(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const size_t n = s.size();
    for (size_t i = 0; i < n;) {
      unsigned char c = p[i];
      char esc[8];
      std::string_view piece;
      size_t used = 1;
      if (c == '"') piece = "\\\"";
      else if (c == '\\') piece = "\\\\";
      else if (c == '\n') piece = "\\n";
      else if (c == '\r') piece = "\\r";
      else if (c == '\t') piece = "\\t";
      else if (c < 0x20 || c == 0x7f) {
        std::snprintf(esc, sizeof esc, "\\u%04x", c);
        piece = std::string_view(esc, 6);
      } else if (c < 0x80) {
        piece = std::string_view(reinterpret_cast<const char*>(p + i), 1);
      } else {
        // A well-formed UTF-8 sequence passes through; anything else becomes U+FFFD.
        size_t want = 0;
        if (c >= 0xc2 && c <= 0xdf) want = 2;
        else if (c >= 0xe0 && c <= 0xef) want = 3;
        else if (c >= 0xf0 && c <= 0xf4) want = 4;
        bool ok = want != 0 && i + want <= n;
        for (size_t k = 1; ok && k < want; ++k) ok = (p[i + k] & 0xc0) == 0x80;
        if (ok && want == 3) {
          unsigned cp = ((c & 0x0fu) << 12) | ((p[i + 1] & 0x3fu) << 6);
          ok = cp >= 0x800 && !(cp >= 0xd800 && cp <= 0xdfff);
        }
        if (ok && want == 4) {
          unsigned cp = ((c & 0x07u) << 18) | ((p[i + 1] & 0x3fu) << 12);
          ok = cp >= 0x10000 && cp <= 0x10ffff;
        }
        if (ok) {
          piece = std::string_view(reinterpret_cast<const char*>(p + i), want);
          used = want;
        } else {
          piece = "\xef\xbf\xbd";
        }
      }
      if (len + piece.size() > cap) return;
      put(piece);
      i += used;
    }
  }
  void put_key(const char* key) {
    put(",\"");
    put_json_string(key);
    put("\":");
  }
};

void emit(const char* buf, size_t len) {
  ssize_t ignored = ::write(STDERR_FILENO, buf, len);
  (void)ignored;
}

void write_line(log_level level, const char* component, std::initializer_list<log_field> fields, const char* fmt,
                va_list ap) {
  char ts[64];
  format_time(ts);
  char msg[4096];
  int m = std::vsnprintf(msg, sizeof msg, fmt, ap);
  size_t msg_len = m < 0 ? 0 : std::min(static_cast<size_t>(m), sizeof msg - 1);

  if (g_format.load(std::memory_order_relaxed) == log_format::text) {
    char buf[4096 + 128];
    line_buffer b{buf, sizeof buf - 1};
    b.put(ts);
    b.put(' ');
    b.put(level_name(level));
    b.put(' ');
    b.put(component);
    b.put(": ");
    // The message may quote untrusted text (names from delta files and requests): it is escaped on its way
    // into the line (base/text_escape.h), so nothing in it can end this line or forge another.
    b.len += escape_control_to(std::string_view(msg, msg_len), buf + b.len, b.cap - b.len);
    buf[b.len++] = '\n';
    return emit(buf, b.len);
  }

  // JSON: the fixed fields first, then the event's own; room is kept for the closing "}\n".
  char buf[16384];
  line_buffer b{buf, sizeof buf - 2};
  b.put("{\"ts\":\"");
  b.put(ts);
  b.put("\",\"level\":\"");
  b.put(level_name(level));
  b.put("\",\"module\":\"");
  b.put_json_string(component);
  b.put("\",\"version\":\"" DELTASYNC_VERSION "\"");
  for (const log_field& f : fields) {
    const size_t mark = b.len;
    b.put_key(f.key);
    char num[40];
    switch (f.k) {
      case log_field::kind::u64:
        std::snprintf(num, sizeof num, "%llu", static_cast<unsigned long long>(f.u));
        b.put(num);
        break;
      case log_field::kind::i64:
        std::snprintf(num, sizeof num, "%lld", static_cast<long long>(f.i));
        b.put(num);
        break;
      case log_field::kind::f64:
        if (std::isfinite(f.d)) {
          std::snprintf(num, sizeof num, "%.17g", f.d);
          b.put(num);
        } else {
          b.put("null");  // JSON has no NaN or infinity
        }
        break;
      case log_field::kind::str:
        b.put('"');
        b.put_json_string(std::string_view(f.s, f.n));
        b.put('"');
        break;
    }
    if (b.len >= b.cap) b.len = mark;  // a field that does not fit is dropped whole
  }
  // The message last, so a long one is what gets truncated; 2 bytes stay for its closing quote.
  line_buffer tail{buf, sizeof buf - 4, b.len};
  tail.put(",\"msg\":\"");
  tail.put_json_string(std::string_view(msg, msg_len));
  b.len = tail.len;
  buf[b.len++] = '"';
  buf[b.len++] = '}';
  buf[b.len++] = '\n';
  emit(buf, b.len);
}
}  // namespace

void set_log_level(log_level level) noexcept { g_level.store(level, std::memory_order_relaxed); }
log_level current_log_level() noexcept { return g_level.load(std::memory_order_relaxed); }

bool parse_log_level(std::string_view text, log_level& out) noexcept {
  for (auto l : {log_level::debug, log_level::info, log_level::warn, log_level::error, log_level::off}) {
    if (text == level_name(l)) {
      out = l;
      return true;
    }
  }
  return false;
}

void set_log_format(log_format format) noexcept { g_format.store(format, std::memory_order_relaxed); }
log_format current_log_format() noexcept { return g_format.load(std::memory_order_relaxed); }

bool parse_log_format(std::string_view text, log_format& out) noexcept {
  if (text == "text") out = log_format::text;
  else if (text == "json") out = log_format::json;
  else return false;
  return true;
}

void log_line(log_level level, const char* component, const char* fmt, ...) noexcept {
  va_list ap;
  va_start(ap, fmt);
  write_line(level, component, {}, fmt, ap);
  va_end(ap);
}

void log_line_fields(log_level level, const char* component, std::initializer_list<log_field> fields,
                     const char* fmt, ...) noexcept {
  va_list ap;
  va_start(ap, fmt);
  write_line(level, component, fields, fmt, ap);
  va_end(ap);
}

}  // namespace deltasync
