// `deltasync._core`: the C++ side of `import deltasync` (the Python package in src/python/deltasync wraps
// it). Errors: every C++ error is raised as the `deltasync.Error` subclass that the package's factory picks
// for its code, with the CLI's message and the code's name and number.
#include <pybind11/pybind11.h>

#include "base/error.h"
#include "base/log.h"
#include "gpu/gpu.h"
#include "python/module_internal.h"
#include "sync/receiver.h"  // http_status_for

namespace py = pybind11;

namespace deltasync::python {

namespace {
py::object* error_factory = nullptr;  // deltasync._error_factory(message, code_name, code_value, http_status)
}

void register_errors(py::module_& m) {
  m.def("_set_error_factory", [](py::object f) {
    if (error_factory == nullptr) error_factory = new py::object();  // never freed: lives as long as the module
    *error_factory = std::move(f);
  });
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ds_exception& ex) {
      const error& e = ex.e;
      const bool ours = e.code.category() == deltasync_category();
      const std::string code = ours ? std::string(errc_name(static_cast<errc>(e.code.value()))) : e.code.message();
      if (error_factory == nullptr || !*error_factory) {
        PyErr_SetString(PyExc_RuntimeError, e.describe().c_str());
        return;
      }
      py::object inst = (*error_factory)(e.describe(), code, e.code.value(), http_status_for(e));
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(inst.ptr())), inst.ptr());
    }
  });
  m.def("_errc_names", [] {
    py::dict d;
    for (int v = 0; v < 512; ++v) {
      std::string_view n = errc_name(static_cast<errc>(v));
      if (!n.empty() && n != "unknown_error") d[py::str(std::string(n))] = v;
    }
    return d;
  });
}

}  // namespace deltasync::python

PYBIND11_MODULE(_core, m) {
  using namespace deltasync;
  m.doc() = "deltasync's C++ core; use the `deltasync` package";
  python::register_errors(m);
  python::register_sender(m);
  python::register_receiver(m);
  python::register_inspect(m);
  m.def("gpu_available", [] { return gpu::available().ok(); }, "Whether this build and process can use a GPU");
  m.def(
      "_synchronize_stream",
      [](intptr_t raw) {
        status st;
        {
          py::gil_scoped_release nogil;
          st = gpu::synchronize_foreign_stream(reinterpret_cast<void*>(raw));
        }
        if (!st) python::raise(std::move(st).err());
      },
      "Waits for everything queued on a cudaStream_t another library owns (Sender.sync: once per device)");
  m.def("set_log_level", [](const std::string& level) {
    log_level l;
    if (!parse_log_level(level, l)) python::raise(error(errc::invalid_argument, "unknown log level '" + level + "'"));
    set_log_level(l);
  });
}
