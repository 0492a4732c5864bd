// GPU -> pinned -> file for delta files encoded on the device.
#include "sync/gpu_delta_writer.h"

#include <cstring>
#include <deque>
#include <future>
#include <memory>

#include "base/check.h"
#include "codec/tensor_hash.h"
#include "io/atomic_file_writer.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/io_backend.h"

namespace deltasync {

result<byte_buffer> device_delta_header(encoding enc, uint64_t version, const std::vector<device_param>& params,
                                        const gpu::encoded_layout& layout, const void* device_payload,
                                        uint64_t data_alignment, const native_fields* native, gpu::digester& dig,
                                        gpu::stream& s) {
  DS_CHECK(layout.counts.size() == params.size(), "device_delta_header: one layout entry per param");
  encoded_bucket b;
  b.enc = enc;
  b.current_version = version;
  b.positions_bytes = layout.positions_bytes;
  b.values_type = params.empty() ? dtype::BF16 : params[0].type;
  const uint32_t eb = element_bytes(b.values_type);
  b.value_count = eb == 0 ? 0 : layout.values_bytes / eb;
  for (size_t i = 0; i < params.size(); ++i) {
    if (layout.counts[i] == 0) continue;
    param_entry e;
    e.name = params[i].name;
    e.type = params[i].type;
    e.shape = params[i].shape;
    e.pos_start = layout.pos_offset[i];
    e.pos_width = layout.pos_width[i];
    e.pos_end = e.pos_start + layout.counts[i] * e.pos_width;
    e.val_start = layout.val_offset[i];
    e.val_end = e.val_start + layout.counts[i];
    b.params.push_back(std::move(e));
  }
  if (b.params.empty()) b.values_type = dtype::BF16;  // as the CPU writer spells an empty bucket
  const auto* payload = static_cast<const std::byte*>(device_payload);
  DS_ASSIGN_OR_RETURN(uint64_t hp, gpu::xor_hash(payload, layout.positions_bytes, dtype::U8, s));
  // The hash kernel loads whole elements: values that do not start on an element boundary (F32/F64 after
  // an odd number of uint16 positions) are hashed from an aligned copy.
  const std::byte* values = payload + layout.positions_bytes;
  gpu::device_buffer aligned;
  if (eb > 1 && layout.positions_bytes % eb != 0 && layout.values_bytes > 0) {
    DS_ASSIGN_OR_RETURN(aligned, gpu::device_buffer::allocate(layout.values_bytes));
    DS_TRY_STATUS(gpu::copy_d2d(aligned.data(), values, layout.values_bytes, s));
    values = aligned.as<std::byte>();
  }
  DS_ASSIGN_OR_RETURN(uint64_t hv, gpu::xor_hash(values, layout.values_bytes, b.values_type, s));
  b.checksum = checksum128(hp) ^ (checksum128(hv) << 1);
  uint64_t payload_hash = 0;
  if (native != nullptr && !native->slime) {
    DS_ASSIGN_OR_RETURN(payload_hash, dig.digest64(device_payload, layout.payload_bytes(), s));
  }
  DS_ASSIGN_OR_RETURN(safetensors_layout l, build_delta_header(b, data_alignment, native, payload_hash));
  return std::move(l.header);
}

status write_device_file(io::io_backend& backend, io::buffer_pool& pool, const std::string& path, byte_span header,
                         const void* device_payload, uint64_t payload_bytes, gpu::stream& s) {
  io::event_loop& loop = backend.loop();
  DS_CHECK(!loop.in_loop_thread(), "write_device_file blocks; not on the loop thread");
  std::unique_ptr<io::atomic_file_writer> writer;
  loop.run_sync([&] { writer = std::make_unique<io::atomic_file_writer>(backend, path); });

  struct piece {
    io::buffer_handle buf;
    size_t len = 0;
    std::unique_ptr<gpu::event> copied;
  };
  std::deque<piece> in_flight;
  const size_t depth = std::max<size_t>(2, std::min<size_t>(pool.buffer_count() / 2, 8));
  uint64_t header_done = 0, payload_done = 0;
  status failure;
  auto acquire = [&]() -> io::buffer_handle {
    if (auto h = pool.try_acquire()) return h;
    std::promise<io::buffer_handle> p;
    auto f = p.get_future();
    loop.post([&] { pool.start_acquire([&](io::buffer_handle h) { p.set_value(std::move(h)); }); });
    return f.get();
  };
  auto append_front = [&]() -> status {
    piece pc = std::move(in_flight.front());
    in_flight.pop_front();
    DS_TRY_STATUS(pc.copied->synchronize());
    auto shared = std::make_shared<piece>(std::move(pc));
    std::promise<status> appended;
    auto f = appended.get_future();
    loop.post([&, shared] { appended.set_value(writer->append(std::move(shared->buf), shared->len)); });
    return f.get();
  };
  while (failure.ok() && (header_done < header.size() || payload_done < payload_bytes || !in_flight.empty())) {
    const bool more = header_done < header.size() || payload_done < payload_bytes;
    if (more && in_flight.size() < depth) {
      piece pc;
      pc.buf = acquire();
      size_t at = 0;
      const size_t cap = pc.buf.size();
      if (header_done < header.size()) {
        const size_t n = std::min<size_t>(cap, header.size() - header_done);
        std::memcpy(pc.buf.data(), header.data() + header_done, n);
        header_done += n;
        at = n;
      }
      const size_t n = static_cast<size_t>(std::min<uint64_t>(cap - at, payload_bytes - payload_done));
      if (n > 0) {
        auto st = gpu::copy_d2h(pc.buf.data() + at, static_cast<const std::byte*>(device_payload) + payload_done, n, s);
        if (!st) { failure = st; break; }
        payload_done += n;
      }
      pc.len = at + n;
      pc.copied = std::make_unique<gpu::event>();
      if (auto st = pc.copied->record(s); !st) { failure = st; break; }
      in_flight.push_back(std::move(pc));
      continue;
    }
    if (auto st = append_front(); !st) failure = st;
  }
  (void)s.synchronize();  // no copy may still target a buffer being released
  in_flight.clear();
  std::promise<status> done;
  auto f = done.get_future();
  if (failure.ok()) {
    loop.post([&] { writer->start_commit([&](status st) { done.set_value(std::move(st)); }); });
  } else {
    loop.post([&] { writer->start_abort([&] { done.set_value(status{}); }); });
  }
  status st = f.get();
  loop.run_sync([&] { writer.reset(); });
  if (!failure.ok()) return failure;
  return st;
}

}  // namespace deltasync
