// `deltasync._core.Sender`: the library Sender (sync/sender.h) over tensors imported through DLPack, with
// the HTTP push client when receivers are given. Device tensors take the Sender's GPU path. The GIL is
// released for every call into the Sender; a mutex keeps one Python thread at a time inside it.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <mutex>

#include "http/push_client.h"
#include "io/event_loop.h"
#include "python/dlpack_import.h"
#include "python/module_internal.h"
#include "sync/sender.h"

namespace py = pybind11;

namespace deltasync::python {

namespace {

tensor_view view_of(const imported_tensor& t) {
  tensor_view v;
  v.data = t.data;
  v.type = t.type;
  v.shape = t.shape;
  v.device = t.device_name();
  return v;
}

py::dict report_dict(const sync_report& r) {
  py::dict d;
  d["version"] = r.version;
  d["base_version"] = r.base_version;
  d["changed_elements"] = r.changed_elements;
  d["dense_bytes"] = r.dense_bytes;
  d["wire_bytes"] = r.wire_bytes;
  d["files"] = r.files;
  py::dict t;
  t["diff_encode_s"] = r.diff_encode_s;
  t["write_s"] = r.write_s;
  t["hook_s"] = r.hook_s;
  t["push_s"] = r.push_s;
  d["timings_s"] = t;
  py::list rx;
  for (const push_outcome& o : r.receivers) {
    py::dict e;
    e["url"] = o.url;
    e["ok"] = o.ok();
    e["http_status"] = o.http_status;
    e["body"] = o.body;
    e["error"] = o.transport_error;
    e["elapsed_s"] = o.elapsed_s;
    rx.append(e);
  }
  d["receivers"] = rx;
  d["snapshot_advanced"] = r.snapshot_advanced;
  py::dict acked;
  for (const auto& [url, v] : r.acked) acked[py::str(url)] = v;
  d["acked"] = acked;
  d["pruned"] = r.pruned;
  d["anchor_version"] = r.anchor_version;
  if (!r.anchor_error.empty()) d["anchor_error"] = r.anchor_error;
  return d;
}

class py_sender {
 public:
  py_sender(const std::string& delta_dir, const std::vector<std::string>& push, const std::string& enc,
            const std::string& format, uint64_t buffer_bytes, bool keep_files, const std::string& token,
            const std::string& transport, const std::string& mode, const std::string& pre_push_hook, uint32_t rank,
            const std::string& pull_base_url, uint32_t push_timeout_ms) {
    sender_options so;
    auto e = encoding_from_name(enc);
    if (!e) raise(error(errc::invalid_argument, "unknown encoding '" + enc + "' (indices, deltas, deltas_zstd, compact)"));
    so.enc = *e;
    if (format == "native") so.format = wire_format::native;
    else if (format == "slime") so.format = wire_format::slime;
    else raise(error(errc::invalid_argument, "format must be native or slime, got '" + format + "'"));
    if (mode == "delta") so.mode = update_mode::delta;
    else if (mode == "full") so.mode = update_mode::full;
    else raise(error(errc::invalid_argument, "mode must be delta or full, got '" + mode + "'"));
    if (transport != "disk") raise(error(errc::unsupported, "transport '" + transport + "' is not available from Python (disk)"));
    so.transport = transport;
    so.delta_dir = delta_dir;
    so.receivers = push;
    so.buffer_bytes = buffer_bytes;
    so.keep_files = keep_files;
    so.pre_push_hook = pre_push_hook;
    so.rank = rank;
    so.pull_base_url = pull_base_url;
    if (!push.empty()) {
      http::push_client_options po;
      po.bearer_token = token;
      po.timeout_ms = push_timeout_ms;
      loop_ = std::make_unique<io::event_loop>();
      client_ = std::make_unique<http::push_client>(*loop_, po);
    }
    s_ = std::make_unique<sender>(std::move(so), client_.get());
  }
  ~py_sender() { close(); }

  void seed(const std::string& name, py::handle t, std::optional<intptr_t> stream, bool synchronised) {
    imported_tensor it = value_or_raise(import_tensor(t, name, stream, synchronised));
    status st;
    {
      py::gil_scoped_release nogil;
      std::lock_guard lk(mu_);
      st = live().seed(name, view_of(it));
    }
    check(std::move(st));
  }
  void begin(uint64_t version) {
    status st;
    {
      py::gil_scoped_release nogil;
      std::lock_guard lk(mu_);
      st = live().begin(version);
    }
    check(std::move(st));
  }
  void add(const std::string& name, py::handle t, std::optional<intptr_t> stream, bool synchronised) {
    imported_tensor it = value_or_raise(import_tensor(t, name, stream, synchronised));
    status st;
    {
      py::gil_scoped_release nogil;
      std::lock_guard lk(mu_);
      st = live().add(name, view_of(it));
    }
    check(std::move(st));
  }
  py::dict finish() {
    result<sync_report> r = error(errc::internal, "unset");
    {
      py::gil_scoped_release nogil;
      std::lock_guard lk(mu_);
      r = live().finish();
    }
    return report_dict(value_or_raise(std::move(r)));
  }
  void abort() {
    py::gil_scoped_release nogil;
    std::lock_guard lk(mu_);
    if (s_ && s_->in_sync()) s_->abort();
  }
  py::dict last_report() {
    std::lock_guard lk(mu_);
    return report_dict(live().last_report());
  }
  uint64_t snapshot_version() {
    std::lock_guard lk(mu_);
    return live().snapshot_version();
  }
  void set_snapshot_version(uint64_t v) {
    std::lock_guard lk(mu_);
    live().set_snapshot_version(v);
  }
  uint64_t resume(std::optional<uint64_t> version) {
    result<uint64_t> r = error(errc::internal, "unset");
    {
      py::gil_scoped_release nogil;
      std::lock_guard lk(mu_);
      r = live().resume(version);
    }
    return value_or_raise(std::move(r));
  }
  std::string write_anchor() {
    result<std::string> r = error(errc::internal, "unset");
    {
      py::gil_scoped_release nogil;
      std::lock_guard lk(mu_);
      r = live().write_anchor();
    }
    return value_or_raise(std::move(r));
  }
  void set_anchor_every(uint64_t k) {
    std::lock_guard lk(mu_);
    live().set_anchor_every(k);
  }
  bool in_sync() {
    std::lock_guard lk(mu_);
    return s_ && s_->in_sync();
  }
  bool closed() const { return s_ == nullptr; }
  void close() {
    py::gil_scoped_release nogil;
    std::lock_guard lk(mu_);
    if (s_ && s_->in_sync()) s_->abort();
    s_.reset();
    client_.reset();
    loop_.reset();
  }

  // Benchmark baseline: the same sync driven from C++ alone. The tensors are imported first (not timed);
  // then begin, every add and finish run with the GIL released. Returns {add_s, finish_s, total_s, report}.
  py::dict bench_native(uint64_t version, const std::vector<std::pair<std::string, py::object>>& tensors) {
    std::vector<imported_tensor> imported;
    std::vector<tensor_view> views;
    for (const auto& [name, t] : tensors) {
      imported.push_back(value_or_raise(import_tensor(t, name)));
      views.push_back(view_of(imported.back()));
    }
    double add_s = 0, finish_s = 0, total_s = 0;
    result<sync_report> r = error(errc::internal, "unset");
    {
      py::gil_scoped_release nogil;
      std::lock_guard lk(mu_);
      using clock = std::chrono::steady_clock;
      const auto t0 = clock::now();
      status st = live().begin(version);
      for (size_t i = 0; st && i < views.size(); ++i) st = live().add(tensors[i].first, views[i]);
      const auto t1 = clock::now();
      r = st ? live().finish() : result<sync_report>(std::move(st).err());
      const auto t2 = clock::now();
      add_s = std::chrono::duration<double>(t1 - t0).count();
      finish_s = std::chrono::duration<double>(t2 - t1).count();
      total_s = std::chrono::duration<double>(t2 - t0).count();
    }
    py::dict d;
    d["add_s"] = add_s;
    d["finish_s"] = finish_s;
    d["total_s"] = total_s;
    d["report"] = report_dict(value_or_raise(std::move(r)));
    return d;
  }

 private:
  sender& live() {
    if (!s_) raise(error(errc::invalid_argument, "the Sender is closed"));
    return *s_;
  }

  std::mutex mu_;
  std::unique_ptr<io::event_loop> loop_;
  std::unique_ptr<http::push_client> client_;
  std::unique_ptr<sender> s_;
};

}  // namespace

void register_sender(py::module_& m) {
  py::class_<py_sender>(m, "Sender")
      .def(py::init<const std::string&, const std::vector<std::string>&, const std::string&, const std::string&,
                    uint64_t, bool, const std::string&, const std::string&, const std::string&, const std::string&,
                    uint32_t, const std::string&, uint32_t>(),
           py::arg("delta_dir"), py::arg("push"), py::arg("encoding"), py::arg("format"), py::arg("buffer_bytes"),
           py::arg("keep_files"), py::arg("token"), py::arg("transport"), py::arg("mode"), py::arg("pre_push_hook"),
           py::arg("rank"), py::arg("pull_base_url"), py::arg("push_timeout_ms"))
      .def("seed", &py_sender::seed)
      .def("begin", &py_sender::begin)
      .def("add", &py_sender::add)
      .def("finish", &py_sender::finish)
      .def("abort", &py_sender::abort)
      .def("close", &py_sender::close)
      .def("last_report", &py_sender::last_report)
      .def("resume", &py_sender::resume, py::arg("version") = py::none())
      .def("write_anchor", &py_sender::write_anchor)
      .def("set_anchor_every", &py_sender::set_anchor_every)
      .def("in_sync", &py_sender::in_sync)
      .def("closed", &py_sender::closed)
      .def("_bench_native", &py_sender::bench_native)
      .def_property("snapshot_version", &py_sender::snapshot_version, &py_sender::set_snapshot_version);
}

}  // namespace deltasync::python
