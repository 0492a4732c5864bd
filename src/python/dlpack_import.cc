// DLPack import: see dlpack_import.h.
#include "python/dlpack_import.h"

#include <dlpack/dlpack.h>

#include <map>
#include <mutex>
#include <utility>

#include "gpu/gpu.h"

namespace py = pybind11;

namespace deltasync::python {

namespace {

// DLPack type codes newer than the 0.6 header Debian ships (dlpack.h v0.8 / v1.1 numbering).
constexpr uint8_t kBool = 6;
constexpr uint8_t kF8E4M3FN = 10, kF8E4M3FNUZ = 11, kF8E5M2 = 12, kF8E5M2FNUZ = 13, kF8E8M0FNU = 14;
// Device types (stable since DLPack 0.4).
constexpr int kCpu = 1, kCuda = 2, kCudaHost = 3, kCudaManaged = 13;

std::optional<dtype> dtype_of(DLDataType t) {
  if (t.lanes != 1) return std::nullopt;
  const unsigned code = t.code, bits = t.bits;
  switch (code) {
    case kDLInt:
      if (bits == 8) return dtype::I8;
      if (bits == 16) return dtype::I16;
      if (bits == 32) return dtype::I32;
      if (bits == 64) return dtype::I64;
      break;
    case kDLUInt:
      if (bits == 8) return dtype::U8;
      if (bits == 16) return dtype::U16;
      if (bits == 32) return dtype::U32;
      if (bits == 64) return dtype::U64;
      break;
    case kDLFloat:
      if (bits == 16) return dtype::F16;
      if (bits == 32) return dtype::F32;
      if (bits == 64) return dtype::F64;
      break;
    case kDLBfloat:
      if (bits == 16) return dtype::BF16;
      break;
    case kDLComplex:
      if (bits == 64) return dtype::C64;
      break;
    case kBool:
      if (bits == 8) return dtype::BOOL;
      break;
    case kF8E4M3FN: return bits == 8 ? std::optional(dtype::F8_E4M3) : std::nullopt;
    case kF8E4M3FNUZ: return bits == 8 ? std::optional(dtype::F8_E4M3FNUZ) : std::nullopt;
    case kF8E5M2: return bits == 8 ? std::optional(dtype::F8_E5M2) : std::nullopt;
    case kF8E5M2FNUZ: return bits == 8 ? std::optional(dtype::F8_E5M2FNUZ) : std::nullopt;
    case kF8E8M0FNU: return bits == 8 ? std::optional(dtype::F8_E8M0) : std::nullopt;
    default: break;
  }
  return std::nullopt;
}

std::string dims_string(const int64_t* v, int n) {
  std::string out = "[";
  for (int k = 0; k < n; ++k) out += (k ? ", " : "") + std::to_string(v[k]);
  return out + "]";
}

// One stream per device for the producer to order its work before. Never destroyed: it must outlive every
// import, and destroying CUDA objects during interpreter shutdown is unsafe.
result<gpu::stream*> consumer_stream(int device) {
  static std::mutex mu;
  static auto* streams = new std::map<int, gpu::stream*>();
  std::lock_guard lk(mu);
  auto it = streams->find(device);
  if (it != streams->end()) {
    DS_TRY_STATUS(gpu::set_device(device));
    return it->second;
  }
  DS_TRY_STATUS(gpu::available());
  DS_TRY_STATUS(gpu::set_device(device));
  auto* s = new gpu::stream();
  streams->emplace(device, s);
  return s;
}

}  // namespace

imported_tensor::imported_tensor(imported_tensor&& o) noexcept
    : data(o.data),
      type(o.type),
      shape(std::move(o.shape)),
      numel(o.numel),
      nbytes(o.nbytes),
      device(o.device),
      managed_(std::exchange(o.managed_, nullptr)) {}

imported_tensor& imported_tensor::operator=(imported_tensor&& o) noexcept {
  if (this != &o) {
    if (managed_ && managed_->deleter) managed_->deleter(managed_);
    data = o.data;
    type = o.type;
    shape = std::move(o.shape);
    numel = o.numel;
    nbytes = o.nbytes;
    device = o.device;
    managed_ = std::exchange(o.managed_, nullptr);
  }
  return *this;
}

imported_tensor::~imported_tensor() {
  if (managed_ && managed_->deleter) managed_->deleter(managed_);
}

std::string imported_tensor::device_name() const { return device < 0 ? "cpu" : "cuda:" + std::to_string(device); }

// Takes over a "dltensor" capsule: checks dtype, contiguity and device, and owns the DLManagedTensor.
result<imported_tensor> adopt_capsule(const py::object& capsule, const std::string& label) {
  if (!PyCapsule_IsValid(capsule.ptr(), "dltensor"))
    return error(errc::invalid_argument, label + ": __dlpack__ did not return a \"dltensor\" capsule (already consumed?)");
  auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
  PyCapsule_SetName(capsule.ptr(), "used_dltensor");  // we own it now: its destructor must not free it
  imported_tensor out;
  out.managed_ = m;
  const DLTensor& t = m->dl_tensor;
  auto type = dtype_of(t.dtype);
  if (!type)
    return error(errc::invalid_argument, label + ": DLPack dtype (code " + std::to_string(t.dtype.code) + ", " +
                                             std::to_string(t.dtype.bits) + " bits, " + std::to_string(t.dtype.lanes) +
                                             " lanes) has no deltasync name");
  out.type = *type;
  const uint32_t eb = element_bytes(*type);
  uint64_t numel = 1;
  int64_t expected = 1;
  bool contiguous = true;
  for (int k = t.ndim - 1; k >= 0; --k) {
    if (t.shape[k] < 0) return error(errc::invalid_argument, label + ": negative dimension");
    if (t.strides != nullptr && t.shape[k] != 1 && t.strides[k] != expected) contiguous = false;
    expected *= t.shape[k];
  }
  for (int k = 0; k < t.ndim; ++k) {
    out.shape.push_back(static_cast<uint64_t>(t.shape[k]));
    numel *= static_cast<uint64_t>(t.shape[k]);
  }
  if (!contiguous && numel > 0)
    return error(errc::invalid_argument, label + " is not contiguous (shape " + dims_string(t.shape, t.ndim) +
                                             ", strides " + dims_string(t.strides, t.ndim) +
                                             " in elements); pass tensor.contiguous()");
  out.numel = numel;
  out.nbytes = numel * eb;
  out.data = static_cast<std::byte*>(t.data) + t.byte_offset;
  const int dev_type = static_cast<int>(t.device.device_type);
  if (dev_type != kCpu && dev_type != kCudaHost && dev_type != kCuda && dev_type != kCudaManaged)
    return error(errc::unsupported, label + ": DLPack device type " + std::to_string(dev_type) +
                                        " (only CPU and CUDA tensors are supported)");
  out.device = (dev_type == kCuda || dev_type == kCudaManaged) ? t.device.device_id : -1;
  return out;
}

result<imported_tensor> import_tensor(py::handle obj, const std::string& name, std::optional<intptr_t> producer_stream,
                                      bool producer_synchronised) {
  const std::string label = "tensor '" + name + "'";
  if (producer_stream) {
    // The caller knows this is a CUDA tensor on its producer's current stream: no protocol probing and no
    // __dlpack_device__ round trip (the capsule names the device).
    py::object capsule;
    try {
      capsule = obj.attr("__dlpack__")(py::arg("stream") = -1);
    } catch (py::error_already_set& e) {
      return error(errc::invalid_argument, label + ": the DLPack export failed: " + std::string(py::str(e.value())));
    }
    if (!producer_synchronised) {
      py::gil_scoped_release nogil;
      if (auto st = gpu::synchronize_foreign_stream(reinterpret_cast<void*>(*producer_stream)); !st)
        return error(st.err().code, label + ": " + st.err().message);
    }
    return adopt_capsule(capsule, label);
  }
  if (!py::hasattr(obj, "__dlpack__") || !py::hasattr(obj, "__dlpack_device__"))
    return error(errc::invalid_argument, label + ": " + std::string(py::str(py::type::handle_of(obj).attr("__name__"))) +
                                             " does not implement the DLPack protocol (__dlpack__, __dlpack_device__)");
  py::object capsule;
  int dev_type = 0, dev_id = 0;
  try {
    py::tuple where = obj.attr("__dlpack_device__")();
    dev_type = where[0].cast<int>();
    dev_id = where[1].cast<int>();
    if (dev_type == kCuda || dev_type == kCudaManaged) {
      auto s = consumer_stream(dev_id);
      if (!s) return error(s.err().code, label + " is on cuda:" + std::to_string(dev_id) + ": " + s.err().message);
      capsule = obj.attr("__dlpack__")(py::arg("stream") = reinterpret_cast<intptr_t>((*s)->native()));
      py::gil_scoped_release nogil;
      if (auto st = (*s)->synchronize(); !st) return error(st.err().code, label + ": " + st.err().message);
    } else if (dev_type == kCpu || dev_type == kCudaHost) {
      capsule = obj.attr("__dlpack__")(py::arg("stream") = py::none());
    } else {
      return error(errc::unsupported, label + ": DLPack device type " + std::to_string(dev_type) +
                                          " (only CPU and CUDA tensors are supported)");
    }
  } catch (py::error_already_set& e) {
    return error(errc::invalid_argument, label + ": the DLPack export failed: " + std::string(py::str(e.value())));
  }
  return adopt_capsule(capsule, label);
}

}  // namespace deltasync::python
