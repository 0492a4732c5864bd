// Logging: one line per event on stderr, "2026-11-28T15:18:13.123Z level component: message".
// Thread-safe (each line is written with a single write). The level is process-wide.
#pragma once

#include <cstdarg>
#include <string_view>

namespace deltasync {

enum class log_level { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

void set_log_level(log_level level) noexcept;
log_level current_log_level() noexcept;
// Parses "debug" | "info" | "warn" | "error" | "off"; false when unknown.
bool parse_log_level(std::string_view text, log_level& out) noexcept;

void log_line(log_level level, const char* component, const char* fmt, ...) noexcept
    __attribute__((format(printf, 3, 4)));

}  // namespace deltasync

#define DS_LOG(level, component, ...)                                                  \
  do {                                                                                 \
    if (::deltasync::log_level::level >= ::deltasync::current_log_level())             \
      ::deltasync::log_line(::deltasync::log_level::level, component, __VA_ARGS__);    \
  } while (0)
