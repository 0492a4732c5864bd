// result<T>: a value or an operating error (see error.h). The project's return type for anything that can
// fail for reasons outside the program (bad input, I/O, limits). Broken invariants assert instead.
#pragma once

#include <cassert>
#include <utility>
#include <variant>

#include "base/check.h"
#include "base/error.h"

namespace deltasync {

template <typename T>
class [[nodiscard]] result {
 public:
  result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT(implicit)
  result(error e) : v_(std::in_place_index<1>, std::move(e)) {}       // NOLINT(implicit)

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { DS_CHECK(ok(), "result::value() on an error"); return std::get<0>(v_); }
  const T& value() const& { DS_CHECK(ok(), "result::value() on an error"); return std::get<0>(v_); }
  T&& value() && { DS_CHECK(ok(), "result::value() on an error"); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const error& err() const& { DS_CHECK(!ok(), "result::err() on a value"); return std::get<1>(v_); }
  error&& err() && { DS_CHECK(!ok(), "result::err() on a value"); return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, error> v_;
};

template <>
class [[nodiscard]] result<void> {
 public:
  result() = default;
  result(error e) : err_(std::move(e)), failed_(true) {}  // NOLINT(implicit)

  bool ok() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return ok(); }
  const error& err() const& { DS_CHECK(failed_, "result::err() on success"); return err_; }
  error&& err() && { DS_CHECK(failed_, "result::err() on success"); return std::move(err_); }

 private:
  error err_;
  bool failed_ = false;
};

using status = result<void>;

}  // namespace deltasync

// Propagates an error from an expression yielding result<...>: DS_TRY(r = parse(x)); or DS_TRY_STATUS(f()).
#define DS_CONCAT_INNER(a, b) a##b
#define DS_CONCAT(a, b) DS_CONCAT_INNER(a, b)
#define DS_TRY_STATUS(expr)                              \
  do {                                                   \
    auto ds_try_r_ = (expr);                             \
    if (!ds_try_r_.ok()) return std::move(ds_try_r_).err(); \
  } while (0)
#define DS_ASSIGN_OR_RETURN(lhs, expr) DS_ASSIGN_OR_RETURN_IMPL(DS_CONCAT(ds_r_, __LINE__), lhs, expr)
#define DS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return std::move(tmp).err();    \
  lhs = std::move(tmp).value()
