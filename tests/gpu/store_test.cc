// The GPU path end to end against the CPU one: a bucket encoded on the device and written GPU -> pinned ->
// file is the same file delta_bucket_builder writes (slime and native, indices and deltas); the device
// weight store applies, digests, reads and rolls back exactly like the host store.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "codec/delta_format.h"
#include "codec/diff.h"
#include "gpu/kernels.h"
#include "gpu_test_util.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "io/sync_io.h"
#include "sync/cuda_weight_store.h"
#include "sync/gpu_delta_writer.h"

namespace deltasync {
namespace {

using gpu::testing::download;
using gpu::testing::random_bytes;
using gpu::testing::upload;

struct model_pair {
  std::vector<device_param> params;
  std::vector<byte_buffer> before, now;
};

model_pair make_model(dtype t, std::mt19937_64& rng, double density) {
  model_pair m;
  const uint32_t eb = element_bytes(t);
  const std::vector<std::vector<uint64_t>> shapes = {{1000, 300}, {7}, {0}, {50000}, {3, 5, 4097}};
  for (size_t i = 0; i < shapes.size(); ++i) {
    uint64_t numel = 1;
    for (uint64_t d : shapes[i]) numel *= d;
    m.params.push_back({"layer." + std::to_string(i) + ".weight", t, shapes[i]});
    m.before.push_back(random_bytes(numel * eb, rng));
    m.now.push_back(m.before.back());
    for (uint64_t k = 0; k < numel; ++k)
      if (std::uniform_real_distribution<double>(0, 1)(rng) < density) m.now.back()[k * eb] ^= std::byte{0x40};
  }
  return m;
}

byte_buffer cpu_file(const model_pair& m, encoding enc, uint64_t version, const native_fields* native) {
  delta_bucket_builder b(enc);
  for (size_t i = 0; i < m.params.size(); ++i) {
    std::vector<uint32_t> pos;
    byte_buffer vals;
    diff_tensor(m.before[i], m.now[i], element_bytes(m.params[i].type), pos, vals);
    b.add(param_delta{m.params[i].name, m.params[i].type, m.params[i].shape, pos, vals});
  }
  auto f = b.finish(version, 4096, native);
  EXPECT_TRUE(f.ok());
  return std::move(f).value();
}

struct io_engine {
  io::event_loop loop;
  std::unique_ptr<io::io_backend> backend;
  std::unique_ptr<io::buffer_pool> pool;
  io_engine() {
    io::io_backend_options o;
    o.quiet = true;
    backend = std::move(io::make_io_backend(loop, o)).value();
    io::buffer_pool_options po;
    po.buffer_bytes = 256 << 10;  // several buffers per file: the D2H / write overlap is exercised
    po.max_total_bytes = 4 << 20;
    po.pin = [](void* p, size_t n) { return gpu::register_host(p, n); };
    po.unpin = [](void* p, size_t) { gpu::unregister_host(p); };
    pool = std::move(io::buffer_pool::create(loop, backend.get(), po)).value();
  }
  ~io_engine() {
    loop.run_sync([&] {});
    pool.reset();
    backend.reset();
  }
};

TEST(gpu_file, device_bucket_file_equals_the_cpu_writer_and_streams_to_disk) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(41);
  gpu::stream s;
  gpu::digester dig;
  io_engine io;
  const auto dir = std::filesystem::temp_directory_path() / ("ds_gpu_file_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  for (dtype t : {dtype::BF16, dtype::F32}) {
    const model_pair m = make_model(t, rng, 0.03);
    std::vector<gpu::device_buffer> cur, snap;
    std::vector<gpu::diff_input> in;
    for (size_t i = 0; i < m.params.size(); ++i) {
      cur.push_back(upload(m.now[i], s));
      snap.push_back(upload(m.before[i], s));
      in.push_back({cur.back().data(), snap.back().data(), m.now[i].size() / element_bytes(t), element_bytes(t), false});
    }
    native_fields nf;
    nf.base_version = 6;
    for (size_t i = 0; i < m.params.size(); ++i) nf.tensor_digests[m.params[i].name] = xxh3_128(m.now[i]);
    for (encoding enc : {encoding::indices, encoding::deltas}) {
      for (bool native : {false, true}) {
        const std::string label = std::string(name(t)) + " " + std::string(encoding_name(enc)) + (native ? " native" : " slime");
        const byte_buffer want = cpu_file(m, enc, 7, native ? &nf : nullptr);
        gpu::diff_encoder e;
        auto layout = e.encode(in, enc, s);
        ASSERT_TRUE(layout.ok()) << label;
        auto header = device_delta_header(enc, 7, m.params, *layout, e.payload(), 4096, native ? &nf : nullptr, dig, s);
        ASSERT_TRUE(header.ok()) << label << ": " << header.err().message;
        byte_buffer got = *header;
        const byte_buffer payload = download(e.payload(), layout->payload_bytes(), s);
        got.insert(got.end(), payload.begin(), payload.end());
        ASSERT_EQ(got.size(), want.size()) << label;
        EXPECT_TRUE(got == want) << label << ": the device-built file differs from the CPU writer's";

        const std::string path = (dir / "f.safetensors").string();
        ASSERT_TRUE(write_device_file(*io.backend, *io.pool, path, *header, e.payload(), layout->payload_bytes(), s).ok());
        auto back = io::read_file_all(path, 1ull << 30);
        ASSERT_TRUE(back.ok());
        EXPECT_TRUE(*back == want) << label << ": the file on disk differs";
        ASSERT_TRUE(parse_delta_file(*back).ok()) << label;
      }
    }
  }
  std::filesystem::remove_all(dir);
}

loaded_tensors as_loaded(const model_pair& m) {
  loaded_tensors t;
  for (size_t i = 0; i < m.params.size(); ++i) {
    uint64_t numel = 1;
    for (uint64_t d : m.params[i].shape) numel *= d;
    t.add(store_tensor{m.params[i].name, m.params[i].type, m.params[i].shape, numel, m.before[i].size()},
          m.before[i]);
  }
  return t;
}

TEST(gpu_store, applies_digests_and_rolls_back_like_the_host_store) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(42);
  for (encoding enc : {encoding::indices, encoding::deltas}) {
    const model_pair m = make_model(dtype::BF16, rng, 0.02);
    auto host = host_weight_store::from_tensors(as_loaded(m));
    auto dev = cuda_weight_store::from_tensors(as_loaded(m), 0);
    ASSERT_TRUE(dev.ok()) << dev.err().message;
    EXPECT_EQ((*dev)->kind(), "cuda");
    for (size_t i = 0; i < m.params.size(); ++i) EXPECT_EQ((*dev)->digest(i), host->digest(i)) << "base tensor " << i;

    const byte_buffer bytes = cpu_file(m, enc, 1, nullptr);
    auto f = parse_delta_file(bytes);
    ASSERT_TRUE(f.ok());
    undo_log hu, du;
    for (const auto& p : f->manifest.params) {
      const size_t i = *host->find(p.name);
      ASSERT_TRUE(host->apply(i, *f, p, hu).ok());
      auto st = (*dev)->apply(i, *f, p, du);
      ASSERT_TRUE(st.ok()) << st.err().message;
    }
    EXPECT_EQ(du.bytes(), hu.bytes());
    for (size_t i = 0; i < m.params.size(); ++i) {
      byte_buffer out(m.now[i].size());
      ASSERT_TRUE((*dev)->read(i, out).ok());
      EXPECT_TRUE(out == m.now[i]) << "tensor " << i << " after apply";
      EXPECT_EQ((*dev)->digest(i), xxh3_128(m.now[i])) << "tensor " << i;
    }
    (*dev)->rollback(du);
    for (size_t i = 0; i < m.params.size(); ++i) {
      byte_buffer out(m.before[i].size());
      ASSERT_TRUE((*dev)->read(i, out).ok());
      EXPECT_TRUE(out == m.before[i]) << "tensor " << i << " after rollback";
      EXPECT_EQ((*dev)->digest(i), xxh3_128(m.before[i]));
    }
  }
}

TEST(gpu_store, refusals_leave_the_tensor_untouched) {
  DS_REQUIRE_GPU();
  std::mt19937_64 rng(43);
  const model_pair m = make_model(dtype::BF16, rng, 0.05);
  auto dev = cuda_weight_store::from_tensors(as_loaded(m), 0);
  ASSERT_TRUE(dev.ok());
  const byte_buffer bytes = cpu_file(m, encoding::indices, 1, nullptr);
  auto f = parse_delta_file(bytes);
  ASSERT_TRUE(f.ok());
  // A param applied to a tensor of another shape, and one whose positions run past the tensor.
  const param_entry& p = f->manifest.params.front();
  undo_log u;
  const size_t other = *(*dev)->find("layer.3.weight");
  auto st = (*dev)->apply(other == *(*dev)->find(p.name) ? 0 : other, *f, p, u);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.err().code, errc::delta_shape_mismatch);
  param_entry shifted = p;
  shifted.shape = {7};  // layer.1 has 7 elements: p's positions run past it
  const size_t small = *(*dev)->find("layer.1.weight");
  auto st2 = (*dev)->apply(small, *f, shifted, u);
  ASSERT_FALSE(st2.ok());
  EXPECT_EQ(st2.err().code, errc::delta_position_out_of_range) << st2.err().message;
  EXPECT_EQ(u.bytes(), 0u);
  for (size_t i = 0; i < m.params.size(); ++i) EXPECT_EQ((*dev)->digest(i), xxh3_128(m.before[i]));
}

TEST(gpu_store, without_a_gpu_the_store_says_why) {
  if (gpu::available()) GTEST_SKIP() << "a GPU is present: the no-GPU error path is not reachable here";
  auto dev = cuda_weight_store::from_tensors({}, 0);
  ASSERT_FALSE(dev.ok());
  EXPECT_EQ(dev.err().code, errc::unsupported);
}

}  // namespace
}  // namespace deltasync
