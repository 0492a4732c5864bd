// `deltasync._core.inspect_file(path, max_bytes)`: inspect_json with the GIL released.
#include <pybind11/pybind11.h>

#include "python/inspect_json.h"
#include "python/module_internal.h"

namespace py = pybind11;

namespace deltasync::python {

void register_inspect(py::module_& m) {
  m.def(
      "inspect_file",
      [](const std::string& path, uint64_t max_bytes) {
        result<std::string> r = error(errc::internal, "unset");
        {
          py::gil_scoped_release nogil;
          r = inspect_json(path, max_bytes);
        }
        return value_or_raise(std::move(r));
      },
      py::arg("path"), py::arg("max_bytes"));
}

}  // namespace deltasync::python
