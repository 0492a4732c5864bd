// DS_CHECK: an assertion that stays on in release builds. For programmer errors (broken invariants) only;
// operating errors are result<T> values.
#pragma once

namespace deltasync::detail {
[[noreturn]] void check_failed(const char* expr, const char* msg, const char* file, int line) noexcept;
}

#define DS_CHECK(cond, msg)                                                     \
  do {                                                                          \
    if (!(cond)) [[unlikely]]                                                   \
      ::deltasync::detail::check_failed(#cond, (msg), __FILE__, __LINE__);      \
  } while (0)
