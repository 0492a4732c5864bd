// `deltasync._core.Receiver`: the receiver service (receiver_service.h) over a borrowed_weight_store of the
// caller's tensors (imported through DLPack and held, with their producers' memory, until the receiver is
// destroyed). Hooks are Python callables called on the service's loop thread with the GIL taken; the
// callables live in this object (destroyed with the GIL held), the service's hooks only point here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <mutex>

#include "base/log.h"
#include "python/dlpack_import.h"
#include "python/module_internal.h"
#include "python/receiver_service.h"
#include "sync/borrowed_weight_store.h"

namespace py = pybind11;

namespace deltasync::python {

namespace {

class py_receiver {
 public:
  py_receiver(const std::vector<std::pair<std::string, py::object>>& tensors, receiver_service_options opts,
              py::object before_apply, py::object after_commit, py::object after_refuse)
      : before_(std::move(before_apply)), after_(std::move(after_commit)), refuse_(std::move(after_refuse)) {
    std::vector<borrowed_tensor> borrowed;
    for (const auto& [name, t] : tensors) {
      imported_.push_back(value_or_raise(import_tensor(t, name)));
      const imported_tensor& it = imported_.back();
      borrowed.push_back(borrowed_tensor{store_tensor{name, it.type, it.shape, it.numel, it.nbytes}, it.data, it.device});
    }
    auto store = value_or_raise(borrowed_weight_store::create(std::move(borrowed)));
    store_ = store.get();
    receiver_hooks hooks;
    if (!before_.is_none())
      hooks.before_apply = [this](uint64_t v) -> status {
        py::gil_scoped_acquire gil;
        try {
          before_(v);
          return {};
        } catch (py::error_already_set& e) {
          return error(errc::cancelled, std::string(py::str(e.type().attr("__name__"))) + ": " + std::string(py::str(e.value())));
        }
      };
    if (!after_.is_none())
      hooks.after_commit = [this](uint64_t v, const std::string& answer) { call_hook(after_, "after_commit", v, answer); };
    if (!refuse_.is_none())
      hooks.after_refuse = [this](uint64_t v, const std::string& answer) { call_hook(refuse_, "after_refuse", v, answer); };
    result<std::unique_ptr<receiver_service>> svc = error(errc::internal, "unset");
    {
      py::gil_scoped_release nogil;
      svc = receiver_service::start(std::move(store), std::move(opts), std::move(hooks));
    }
    svc_ = value_or_raise(std::move(svc));
  }

  ~py_receiver() {
    {
      py::gil_scoped_release nogil;
      if (svc_) (void)svc_->close();
      svc_.reset();
    }
    imported_.clear();  // producers' deleters, GIL held
  }

  uint16_t port() { return live().port(); }
  uint64_t version() {
    receiver_service& s = live();
    py::gil_scoped_release nogil;
    return s.version();
  }
  py::tuple call(const std::string& method, const std::string& path, const std::string& body) {
    receiver_service& s = live();
    result<call_answer> a = error(errc::internal, "unset");
    {
      py::gil_scoped_release nogil;
      a = s.call(method, path, body);
    }
    call_answer ans = value_or_raise(std::move(a));
    return py::make_tuple(ans.status, py::bytes(ans.body));
  }
  std::vector<std::string> touched() {
    live();
    std::vector<std::string> out;
    for (size_t i : store_->touched()) out.push_back(store_->tensor(i).name);
    return out;
  }
  void clear_touched() {
    live();
    store_->clear_touched();
  }
  py::list hook_errors() {
    std::lock_guard lk(mu_);
    py::list l;
    for (const auto& e : hook_errors_) l.append(e);
    return l;
  }
  bool closed() const { return !svc_ || svc_->closed(); }
  void close() {
    if (!svc_) return;
    status st;
    {
      py::gil_scoped_release nogil;
      st = svc_->close();
    }
    check(std::move(st));
  }

 private:
  receiver_service& live() {
    if (!svc_ || svc_->closed()) raise(error(errc::invalid_argument, "the Receiver is closed"));
    return *svc_;
  }
  // A hook that raises after a commit cannot undo it: the error is logged and kept (hook_errors()).
  void call_hook(py::object& fn, const char* what, uint64_t v, const std::string& answer) {
    py::gil_scoped_acquire gil;
    try {
      fn(v, py::bytes(answer));
    } catch (py::error_already_set& e) {
      std::string msg = std::string(what) + " hook raised for version " + std::to_string(v) + ": " + std::string(py::str(e.type().attr("__name__"))) + ": " + std::string(py::str(e.value()));
      DS_LOG(warn, "python", "%s", msg.c_str());
      std::lock_guard lk(mu_);
      hook_errors_.push_back(std::move(msg));
    }
  }

  py::object before_, after_, refuse_;
  std::vector<imported_tensor> imported_;
  borrowed_weight_store* store_ = nullptr;  // owned by svc_
  std::unique_ptr<receiver_service> svc_;
  std::mutex mu_;
  std::vector<std::string> hook_errors_;
};

}  // namespace

void register_receiver(py::module_& m) {
  py::class_<receiver_service_options>(m, "ReceiverOptions")
      .def(py::init<>())
      .def_readwrite("host", &receiver_service_options::host)
      .def_readwrite("port", &receiver_service_options::port)
      .def_readwrite("token", &receiver_service_options::token)
      .def_readwrite("delta_dir", &receiver_service_options::delta_dir)
      .def_readwrite("version", &receiver_service_options::version)
      .def_readwrite("chunk_bytes", &receiver_service_options::chunk_bytes)
      .def_readwrite("read_workers", &receiver_service_options::read_workers)
      .def_readwrite("workers", &receiver_service_options::workers)
      .def_readwrite("io_backend", &receiver_service_options::io_backend)
      .def_readwrite("max_body_bytes", &receiver_service_options::max_body_bytes)
      .def_readwrite("max_file_bytes", &receiver_service_options::max_file_bytes)
      .def_readwrite("pull_allow", &receiver_service_options::pull_allow);
  py::class_<py_receiver>(m, "Receiver")
      .def(py::init<const std::vector<std::pair<std::string, py::object>>&, receiver_service_options, py::object,
                    py::object, py::object>(),
           py::arg("tensors"), py::arg("options"), py::arg("before_apply"), py::arg("after_commit"),
           py::arg("after_refuse"))
      .def_property_readonly("port", &py_receiver::port)
      .def_property_readonly("version", &py_receiver::version)
      .def("call", &py_receiver::call)
      .def("touched", &py_receiver::touched)
      .def("clear_touched", &py_receiver::clear_touched)
      .def("hook_errors", &py_receiver::hook_errors)
      .def("closed", &py_receiver::closed)
      .def("close", &py_receiver::close);
}

}  // namespace deltasync::python
