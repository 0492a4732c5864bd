// Logging: one line per event on stderr. Thread-safe (each line is written with a single write). The level
// and the format are process-wide.
//   text (default): "2026-11-28T15:18:13.123Z level component: message"
//   json:           one JSON object per line with the stable fields
//                   {"ts": "2026-11-28T15:18:13.123Z", "level": "info", "module": "sync", "msg": "...",
//                    "version": "<deltasync version>", ...fields}
//                   where fields are the event's own (DS_LOG_FIELDS), e.g. a sync's "sync_version",
//                   "base_version", "changed_elements", "total_ms". Strings are JSON-escaped (control
//                   characters as \u00XX, invalid UTF-8 as U+FFFD), so a line is always one valid object.
// A line longer than the internal buffer (about 4 KiB of message) is truncated, never split.
#pragma once

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string_view>
#include <type_traits>

namespace deltasync {

enum class log_level { debug = 0, info = 1, warn = 2, error = 3, off = 4 };
enum class log_format { text = 0, json = 1 };

void set_log_level(log_level level) noexcept;
log_level current_log_level() noexcept;
// Parses "debug" | "info" | "warn" | "error" | "off"; false when unknown.
bool parse_log_level(std::string_view text, log_level& out) noexcept;

void set_log_format(log_format format) noexcept;
log_format current_log_format() noexcept;
// Parses "text" | "json"; false when unknown.
bool parse_log_format(std::string_view text, log_format& out) noexcept;

// One structured field of a log event: a key (a string literal) and a number or a string. Only the json
// format writes fields; the text format relies on the message saying the same.
struct log_field {
  enum class kind { u64, i64, f64, str };
  const char* key;
  kind k;
  union {
    uint64_t u;
    int64_t i;
    double d;
    const char* s;
  };
  size_t n = 0;  // kind::str: the length
  template <class T, std::enable_if_t<std::is_integral_v<T> && std::is_unsigned_v<T>, int> = 0>
  log_field(const char* key_, T v) : key(key_), k(kind::u64), u(static_cast<uint64_t>(v)) {}
  template <class T, std::enable_if_t<std::is_integral_v<T> && std::is_signed_v<T>, int> = 0>
  log_field(const char* key_, T v) : key(key_), k(kind::i64), i(static_cast<int64_t>(v)) {}
  log_field(const char* key_, double v) : key(key_), k(kind::f64), d(v) {}
  log_field(const char* key_, const char* v) : key(key_), k(kind::str), s(v ? v : ""), n(v ? std::strlen(v) : 0) {}
  log_field(const char* key_, std::string_view v) : key(key_), k(kind::str), s(v.data()), n(v.size()) {}
};

void log_line(log_level level, const char* component, const char* fmt, ...) noexcept
    __attribute__((format(printf, 3, 4)));
void log_line_fields(log_level level, const char* component, std::initializer_list<log_field> fields,
                     const char* fmt, ...) noexcept __attribute__((format(printf, 4, 5)));

}  // namespace deltasync

#define DS_LOG(level, component, ...)                                                  \
  do {                                                                                 \
    if (::deltasync::log_level::level >= ::deltasync::current_log_level())             \
      ::deltasync::log_line(::deltasync::log_level::level, component, __VA_ARGS__);    \
  } while (0)

// DS_LOG with structured fields: DS_LOG_FIELDS(info, "sync", ({{"sync_version", v}, {"total_ms", t}}), "...", ...)
#define DS_LOG_FIELDS(level, component, fields, ...)                                                       \
  do {                                                                                                    \
    if (::deltasync::log_level::level >= ::deltasync::current_log_level())                                \
      ::deltasync::log_line_fields(::deltasync::log_level::level, component,                              \
                                   std::initializer_list<::deltasync::log_field> fields, __VA_ARGS__);   \
  } while (0)
