// Shared pieces of the `deltasync._core` extension: C++ errors raised as `deltasync.Error` subclasses.
#pragma once

#include <pybind11/pybind11.h>

#include <exception>
#include <string>

#include "base/result.h"

namespace deltasync::python {

// Thrown by binding code; translated to the Python exception class `deltasync._error_factory` picks for the
// code (message = error::describe(), as the CLI prints it).
struct ds_exception : std::exception {
  error e;
  explicit ds_exception(error err) : e(std::move(err)) {}
  const char* what() const noexcept override { return e.message.c_str(); }
};

[[noreturn]] inline void raise(error e) { throw ds_exception(std::move(e)); }
inline void check(status s) {
  if (!s) raise(std::move(s).err());
}
template <typename T>
T value_or_raise(result<T> r) {
  if (!r) raise(std::move(r).err());
  return std::move(r).value();
}

void register_errors(pybind11::module_& m);
void register_sender(pybind11::module_& m);
void register_receiver(pybind11::module_& m);
void register_inspect(pybind11::module_& m);

}  // namespace deltasync::python
