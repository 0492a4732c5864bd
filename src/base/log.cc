// Log lines are formatted into a stack buffer and emitted with one write(2) so lines never interleave.
#include "base/log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "base/text_escape.h"

namespace deltasync {
namespace {
std::atomic<log_level> g_level{log_level::info};
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

void log_line(log_level level, const char* component, const char* fmt, ...) noexcept {
  char buf[4096];
  auto now = std::chrono::system_clock::now();
  std::time_t secs = std::chrono::system_clock::to_time_t(now);
  int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  int n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s %s: ", tm.tm_year + 1900,
                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms, level_name(level),
                        component);
  // The message may quote untrusted text (names from delta files and requests): it is escaped on its way
  // into the line (base/text_escape.h), so nothing in it can end this line or forge another.
  char msg[4096];
  va_list ap;
  va_start(ap, fmt);
  int m = std::vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const size_t msg_len = m < 0 ? 0 : std::min(static_cast<size_t>(m), sizeof msg - 1);
  size_t len = static_cast<size_t>(n) +
               escape_control_to(std::string_view(msg, msg_len), buf + n, sizeof buf - static_cast<size_t>(n) - 2);
  buf[len++] = '\n';
  ssize_t ignored = ::write(STDERR_FILENO, buf, len);
  (void)ignored;
}

}  // namespace deltasync
