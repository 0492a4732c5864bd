// The NCCL transport's benchmark (two GPUs; exits 77 otherwise). Plain main, not Google Benchmark: the
// parts run on two GPUs and two threads at once.
//
// Part 1, broadcast throughput, GPU 0 -> GPU 1, `--bytes` (default 1 GiB), median of `--reps`:
//   raw      one ncclBroadcast of the whole buffer (ncclCommInitAll communicators): the baseline;
//   ours/dev our channel, send_device() -> receive() into device staging (what a device store consumes);
//   ours/d2d the same, each chunk then copied into a device destination;
//   ours/host the same, each chunk copied to pinned host memory (the host store's path), against the
//            pinned D2H bandwidth measured in the same run;
//   ours/h2d send() from pinned host memory (the CPU sender's path), against pinned H2D bandwidth.
//   `--bcast-chunk-mib 64,256` repeats part 1 at each chunk size.
// Part 2, end to end: `--e2e-gib` (default 8) GiB of bf16 in 256 MiB tensors, ~1% of elements changed per
//   step; one delta sync = Sender (transport nccl, GPU 0) -> HTTP + NCCL -> receiver (host store, GPU 1),
//   timed from begin() to finish() returning (diff, encode, broadcast, D2H, decode, apply, verify, commit),
//   median of `--syncs`; baseline: a full-weight ncclBroadcast of the same tensors, device resident.
//   `--gpu-path`: the trainer's tensors on GPU 0 (GPU diff) and a device store on GPU 1 instead.
// DS_BENCH_SMOKE=1 shrinks everything (CTest smoke run).
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/log.h"
#include "codec/digest.h"
#include "gpu/nccl_channel.h"
#include "http/push_client.h"
#include "http/receiver_routes.h"
#include "http/server.h"
#include "io/buffer_pool.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "io/worker_pool.h"
#include "sync/cuda_weight_store.h"
#include "sync/nccl_member.h"
#include "sync/receiver.h"
#include "sync/sender.h"

namespace ds = deltasync;
using steady = std::chrono::steady_clock;

namespace {

#define CK(x)                                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (x);                                                                       \
    if (e_ != cudaSuccess) {                                                                    \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));   \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)
#define NK(x)                                                                                   \
  do {                                                                                          \
    ncclResult_t r_ = (x);                                                                      \
    if (r_ != ncclSuccess) {                                                                    \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, ncclGetErrorString(r_));   \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)

double secs(steady::time_point t0) { return std::chrono::duration<double>(steady::now() - t0).count(); }
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}
std::string spread(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  char b[64];
  std::snprintf(b, sizeof b, "[%.4f..%.4f]", v.front(), v.back());
  return b;
}
void check(const ds::status& s, const char* what) {
  if (!s) {
    std::fprintf(stderr, "%s: %s\n", what, s.err().describe().c_str());
    std::exit(1);
  }
}

void fill_random(std::byte* p, size_t n, uint64_t seed) {
  const unsigned threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < threads; ++t)
    ts.emplace_back([=] {
      const size_t begin = n / threads * t / 8 * 8, end = t + 1 == threads ? n : n / threads * (t + 1) / 8 * 8;
      uint64_t x = seed * 0x9E3779B97F4A7C15ull + t;
      for (size_t i = begin; i < end; i += 8) {
        x += 0x9E3779B97F4A7C15ull;
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        std::memcpy(p + i, &z, std::min<size_t>(8, end - i));
      }
    });
  for (auto& t : ts) t.join();
}

struct null_device_sink final : ds::gpu::receive_sink {
  bool wants_device() const noexcept override { return true; }
  ds::result<ds::mutable_byte_span> host(uint64_t, size_t) override { return ds::mutable_byte_span{}; }
  ds::status filled(uint64_t, size_t) override { return {}; }
  ds::status device(uint64_t, const void*, size_t) override { return {}; }
};
struct d2d_sink final : ds::gpu::receive_sink {
  std::byte* dst = nullptr;
  cudaStream_t stream = nullptr;
  bool wants_device() const noexcept override { return true; }
  ds::result<ds::mutable_byte_span> host(uint64_t, size_t) override { return ds::mutable_byte_span{}; }
  ds::status filled(uint64_t, size_t) override { return {}; }
  ds::status device(uint64_t off, const void* dev, size_t n) override {
    CK(cudaMemcpyAsync(dst + off, dev, n, cudaMemcpyDeviceToDevice, stream));
    CK(cudaStreamSynchronize(stream));
    return {};
  }
};
struct host_sink final : ds::gpu::receive_sink {
  std::byte* dst = nullptr;
  ds::result<ds::mutable_byte_span> host(uint64_t off, size_t max) override { return ds::mutable_byte_span(dst + off, max); }
  ds::status filled(uint64_t, size_t) override { return {}; }
};

// Part 1.
void broadcast_part(size_t bytes, int reps, uint64_t chunk) {
  std::printf("== broadcast GPU0 -> GPU1, %.2f GiB, chunk %.0f MiB, median of %d ==\n", static_cast<double>(bytes) / (1 << 30),
              static_cast<double>(chunk) / (1 << 20), reps);
  void *src = nullptr, *dst = nullptr, *pinned = nullptr;
  CK(cudaSetDevice(0));
  CK(cudaMalloc(&src, bytes));
  CK(cudaSetDevice(1));
  CK(cudaMalloc(&dst, bytes));
  CK(cudaMallocHost(&pinned, bytes));
  fill_random(static_cast<std::byte*>(pinned), bytes, 1);
  CK(cudaSetDevice(0));
  CK(cudaMemcpy(src, pinned, bytes, cudaMemcpyHostToDevice));

  // Raw baseline: one ncclBroadcast per rank inside a group call, one process, both GPUs.
  ncclComm_t comms[2];
  int devs[2] = {0, 1};
  NK(ncclCommInitAll(comms, 2, devs));
  cudaStream_t streams[2];
  for (int d = 0; d < 2; ++d) {
    CK(cudaSetDevice(d));
    CK(cudaStreamCreate(&streams[d]));
  }
  auto raw_once = [&] {
    NK(ncclGroupStart());
    NK(ncclBroadcast(src, src, bytes, ncclUint8, 0, comms[0], streams[0]));
    NK(ncclBroadcast(dst, dst, bytes, ncclUint8, 0, comms[1], streams[1]));
    NK(ncclGroupEnd());
    for (int d = 0; d < 2; ++d) {
      CK(cudaSetDevice(d));
      CK(cudaStreamSynchronize(streams[d]));
    }
  };
  // The same chunking as our channel, still raw NCCL from one thread: separates the cost of chunking
  // from the cost of our machinery (threads, non-blocking communicators, polling).
  auto raw_chunked_once = [&] {
    NK(ncclGroupStart());
    for (size_t off = 0; off < bytes; off += chunk) {
      const size_t n = std::min<size_t>(chunk, bytes - off);
      NK(ncclBroadcast(static_cast<std::byte*>(src) + off, static_cast<std::byte*>(src) + off, n, ncclUint8, 0, comms[0], streams[0]));
      NK(ncclBroadcast(static_cast<std::byte*>(dst) + off, static_cast<std::byte*>(dst) + off, n, ncclUint8, 0, comms[1], streams[1]));
    }
    NK(ncclGroupEnd());
    for (int d = 0; d < 2; ++d) {
      CK(cudaSetDevice(d));
      CK(cudaStreamSynchronize(streams[d]));
    }
  };
  std::vector<double> raw, raw_chunked;
  raw_once();
  raw_chunked_once();
  for (int i = 0; i < reps; ++i) {
    auto t0 = steady::now();
    raw_once();
    raw.push_back(secs(t0));
    t0 = steady::now();
    raw_chunked_once();
    raw_chunked.push_back(secs(t0));
  }
  for (int d = 0; d < 2; ++d) ncclCommDestroy(comms[d]);

  // Copy limits on GPU 1's side: pinned D2H and H2D.
  std::vector<double> d2h, h2d;
  CK(cudaSetDevice(1));
  for (int i = 0; i <= reps; ++i) {
    auto t0 = steady::now();
    CK(cudaMemcpy(pinned, dst, bytes, cudaMemcpyDeviceToHost));
    if (i) d2h.push_back(secs(t0));
  }
  CK(cudaSetDevice(0));
  for (int i = 0; i <= reps; ++i) {
    auto t0 = steady::now();
    CK(cudaMemcpy(src, pinned, bytes, cudaMemcpyHostToDevice));
    if (i) h2d.push_back(secs(t0));
  }

  // Our channel.
  auto id = ds::gpu::nccl_new_unique_id();
  check(id.ok() ? ds::status{} : ds::status(id.err()), "unique id");
  std::atomic<bool> cancel{false};
  auto open = [&](int rank) {
    ds::gpu::channel_params p;
    p.id = *id;
    p.nranks = 2;
    p.rank = rank;
    p.device = rank;
    p.chunk_bytes = chunk;
    p.timeout_ms = 120'000;
    return ds::gpu::open_nccl_channel(p, cancel);
  };
  auto f1 = std::async(std::launch::async, open, 1);
  auto c0 = open(0);
  auto c1 = f1.get();
  if (!c0 || !c1) {
    std::fprintf(stderr, "channel: %s\n", (!c0 ? c0.err() : c1.err()).describe().c_str());
    std::exit(1);
  }
  cudaStream_t s1;
  CK(cudaSetDevice(1));
  CK(cudaStreamCreate(&s1));
  null_device_sink nsink;
  d2d_sink dsink;
  dsink.dst = static_cast<std::byte*>(dst);
  dsink.stream = s1;
  host_sink hsink;
  hsink.dst = static_cast<std::byte*>(pinned);
  auto run = [&](ds::gpu::receive_sink& sink, bool from_host) {
    std::vector<double> t;
    for (int i = 0; i <= reps; ++i) {
      auto rx = std::async(std::launch::async, [&] { return (*c1)->receive(bytes, sink, cancel); });
      auto t0 = steady::now();
      auto s = from_host ? (*c0)->send(ds::byte_span(static_cast<std::byte*>(pinned), bytes), cancel)
                         : (*c0)->send_device(src, bytes, cancel);
      check(s, "send");
      check(rx.get(), "receive");
      if (i) t.push_back(secs(t0));
    }
    return t;
  };
  auto dev = run(nsink, false);
  auto d2d = run(dsink, false);
  // Correctness of what arrived (d2d copied every chunk into dst).
  {
    std::vector<std::byte> a(1 << 20), b(1 << 20);
    CK(cudaSetDevice(0));
    CK(cudaMemcpy(a.data(), static_cast<std::byte*>(src) + bytes - a.size(), a.size(), cudaMemcpyDeviceToHost));
    CK(cudaSetDevice(1));
    CK(cudaMemcpy(b.data(), static_cast<std::byte*>(dst) + bytes - b.size(), b.size(), cudaMemcpyDeviceToHost));
    if (a != b) {
      std::fprintf(stderr, "broadcast bytes differ\n");
      std::exit(1);
    }
  }
  auto host = run(hsink, false);
  auto fromh = run(nsink, true);
  const double gb = static_cast<double>(bytes) / 1e9;
  auto row = [&](const char* name, const std::vector<double>& t, double base, const char* of) {
    std::printf("%-10s %8.4f s %s  %7.1f GB/s  %.3fx %s\n", name, median(t), spread(t).c_str(), gb / median(t), base / median(t), of);
  };
  row("raw", raw, median(raw), "raw");
  row("raw/chunk", raw_chunked, median(raw), "raw");
  row("ours/dev", dev, median(raw), "raw");
  row("ours/d2d", d2d, median(raw), "raw");
  row("d2h limit", d2h, median(d2h), "d2h");
  row("ours/host", host, median(d2h), "d2h limit");
  row("h2d limit", h2d, median(h2d), "h2d");
  row("ours/h2d", fromh, std::max(median(h2d), median(raw)), "max(h2d, raw)");
  c0->reset();
  c1->reset();
  CK(cudaFreeHost(pinned));
  CK(cudaFree(dst));
  CK(cudaSetDevice(0));
  CK(cudaFree(src));
}

// Part 2.
struct tensor {
  std::string name;
  std::vector<uint64_t> shape;
  ds::byte_buffer bytes;
};

// gpu_path: the trainer's tensors live on GPU 0 (the Sender diffs them there) and the receiver holds the
// weights in a device store on GPU 1; otherwise host tensors and a host store.
void e2e_part(double gib, int syncs, double density, uint64_t chunk, uint64_t bucket, bool gpu_path) {
  const uint64_t tensor_elems = gib >= 1 ? (128ull << 20) : (8ull << 20);  // 256 MiB (smoke: 16 MiB) of bf16
  const size_t count = std::max<size_t>(1, static_cast<size_t>(gib * (1ull << 30) / static_cast<double>(tensor_elems * 2)));
  std::printf("== end to end (%s): %zu bf16 tensors of %.0f MiB (%.2f GiB), %.2f%% changed per sync, buckets %.0f MiB ==\n",
              gpu_path ? "device tensors, GPU diff, device store" : "host tensors, CPU diff, host store", count,
              static_cast<double>(tensor_elems * 2) / (1 << 20), static_cast<double>(count * tensor_elems * 2) / (1 << 30),
              density * 100, static_cast<double>(bucket) / (1 << 20));
  std::vector<tensor> trainer(count);
  ds::loaded_tensors base;
  for (size_t i = 0; i < count; ++i) {
    trainer[i].name = "layers." + std::to_string(i) + ".w";
    trainer[i].shape = {tensor_elems / 4096, 4096};
    trainer[i].bytes.resize(tensor_elems * 2);
    fill_random(trainer[i].bytes.data(), trainer[i].bytes.size(), i + 11);
    base.add(ds::store_tensor{trainer[i].name, ds::dtype::BF16, trainer[i].shape, tensor_elems, tensor_elems * 2},
             trainer[i].bytes);
  }

  // Full-weight baseline: the same tensors, device resident, one ncclBroadcast each in one group call.
  double full_s = 0;
  {
    std::vector<void*> s(count), d(count);
    for (size_t i = 0; i < count; ++i) {
      CK(cudaSetDevice(0));
      CK(cudaMalloc(&s[i], trainer[i].bytes.size()));
      CK(cudaMemcpy(s[i], trainer[i].bytes.data(), trainer[i].bytes.size(), cudaMemcpyHostToDevice));
      CK(cudaSetDevice(1));
      CK(cudaMalloc(&d[i], trainer[i].bytes.size()));
    }
    ncclComm_t comms[2];
    int devs[2] = {0, 1};
    NK(ncclCommInitAll(comms, 2, devs));
    std::vector<double> t;
    for (int r = 0; r < 4; ++r) {
      auto t0 = steady::now();
      NK(ncclGroupStart());
      for (size_t i = 0; i < count; ++i) {
        NK(ncclBroadcast(s[i], s[i], trainer[i].bytes.size(), ncclUint8, 0, comms[0], nullptr));
        NK(ncclBroadcast(d[i], d[i], trainer[i].bytes.size(), ncclUint8, 0, comms[1], nullptr));
      }
      NK(ncclGroupEnd());
      for (int dv = 0; dv < 2; ++dv) {
        CK(cudaSetDevice(dv));
        CK(cudaDeviceSynchronize());
      }
      if (r) t.push_back(secs(t0));
    }
    full_s = median(t);
    for (int dv = 0; dv < 2; ++dv) ncclCommDestroy(comms[dv]);
    for (size_t i = 0; i < count; ++i) {
      CK(cudaFree(s[i]));
      CK(cudaFree(d[i]));
    }
  }

  // The receiver service in-process (host store, GPU 1) and the sender (GPU 0), over HTTP + NCCL.
  ds::io::event_loop rx_loop, tx_loop;
  ds::io::io_backend_options bo;
  auto backend = std::move(ds::io::make_io_backend(rx_loop, bo)).value();
  ds::io::buffer_pool_options po;
  po.buffer_bytes = 4 << 20;
  po.max_total_bytes = 256 << 20;
  po.pin = [](void* a, size_t n) { return ds::gpu::cuda_host_register(a, n, 1); };
  po.unpin = [](void* a, size_t) { ds::gpu::cuda_host_unregister(a); };
  auto pool = std::move(ds::io::buffer_pool::create(rx_loop, backend.get(), po)).value();
  auto workers = std::make_unique<ds::io::worker_pool>(rx_loop, std::max(1u, std::thread::hardware_concurrency()), 1024);
  std::unique_ptr<ds::weight_store> store;
  if (gpu_path) {
    auto cs = ds::cuda_weight_store::from_tensors(std::move(base), 1);
    if (!cs) {
      std::fprintf(stderr, "device store: %s\n", cs.err().describe().c_str());
      std::exit(1);
    }
    store = std::move(cs).value();
  } else {
    store = ds::host_weight_store::from_tensors(std::move(base));
  }
  ds::receiver_options ro;
  ro.delta_dir = "/nonexistent";
  ds::metrics_registry metrics;
  auto rx = std::make_unique<ds::receiver>(rx_loop, *backend, *pool, *workers, *store, ro, &metrics);
  ds::nccl_member_options mo;
  mo.device = 1;
  auto member = std::make_unique<ds::nccl_member>(rx_loop, mo);
  rx->set_transport("nccl", [m = member.get()](const ds::sync_request& q, ds::io::buffer_pool& p) { return m->source(q, p); });
  ds::http::server_options so_http;
  so_http.max_body_bytes = 16 << 20;
  auto server = std::move(ds::http::http_server::start(rx_loop, so_http, ds::http::make_receiver_routes(*rx, *workers, metrics, member.get()))).value();
  const std::string url = "http://127.0.0.1:" + std::to_string(server->port());
  auto client = std::make_unique<ds::http::push_client>(tx_loop, ds::http::push_client_options{});

  ds::sender_options so;
  so.transport = "nccl";
  so.enc = ds::encoding::deltas;
  so.receivers = {url};
  so.buffer_bytes = bucket;
  so.nccl.device = 0;
  so.nccl.chunk_bytes = chunk;
  auto snd = std::make_unique<ds::sender>(so, client.get());
  // The trainer's tensors as the Sender sees them: host bytes, or their copies on GPU 0 (refreshed after each
  // step, outside the timed sync).
  std::vector<void*> dev(count, nullptr);
  auto upload = [&] {
    CK(cudaSetDevice(0));
    for (size_t i = 0; i < count; ++i) CK(cudaMemcpy(dev[i], trainer[i].bytes.data(), trainer[i].bytes.size(), cudaMemcpyHostToDevice));
  };
  if (gpu_path) {
    CK(cudaSetDevice(0));
    for (size_t i = 0; i < count; ++i) CK(cudaMalloc(&dev[i], trainer[i].bytes.size()));
    upload();
  }
  auto view = [&](size_t i) -> ds::tensor_view {
    if (gpu_path) return {dev[i], ds::dtype::BF16, trainer[i].shape, "cuda:0"};
    return {trainer[i].bytes.data(), ds::dtype::BF16, trainer[i].shape, "cpu"};
  };
  for (size_t i = 0; i < count; ++i) check(snd->seed(trainer[i].name, view(i)), "seed");
  base.clear();

  std::mt19937_64 rng(5);
  std::vector<double> times, diff, push;
  uint64_t wire = 0, changed = 0;
  for (int v = 1; v <= syncs + 1; ++v) {  // sync 1 also builds the group: not counted
    std::vector<std::future<void>> steps;
    for (size_t i = 0; i < count; ++i)
      steps.push_back(std::async(std::launch::async, [&, i, seed = rng()] {
        std::mt19937_64 r(seed);
        auto& b = trainer[i].bytes;
        const size_t n = b.size() / 2, k = static_cast<size_t>(static_cast<double>(n) * density);
        for (size_t j = 0; j < k; ++j) b[(r() % n) * 2] ^= std::byte(1 + r() % 255);
      }));
    for (auto& f : steps) f.get();
    if (gpu_path) upload();
    auto t0 = steady::now();
    check(snd->begin(static_cast<uint64_t>(v)), "begin");
    for (size_t i = 0; i < count; ++i) check(snd->add(trainer[i].name, view(i)), "add");
    auto rep = snd->finish();
    const double took = secs(t0);
    if (!rep) {
      std::fprintf(stderr, "sync %d: %s\n", v, rep.err().describe().c_str());
      std::exit(1);
    }
    std::printf("sync v%d: %.3f s (diff+encode %.3f, push %.3f), %llu changed, %.1f MB on the wire%s\n", v, took,
                rep->diff_encode_s, rep->push_s, static_cast<unsigned long long>(rep->changed_elements),
                static_cast<double>(rep->wire_bytes) / 1e6, v == 1 ? " (group set-up, not counted)" : "");
    if (v == 1) continue;
    times.push_back(took);
    diff.push_back(rep->diff_encode_s);
    push.push_back(rep->push_s);
    wire = rep->wire_bytes;
    changed = rep->changed_elements;
  }
  // The receiver must hold exactly the trainer's bytes.
  size_t bad = 0;
  rx_loop.run_sync([&] {
    for (size_t i = 0; i < count; ++i)
      if (store->digest(*store->find(trainer[i].name)) != ds::xxh3_128(trainer[i].bytes)) ++bad;
  });
  std::printf("receiver vs trainer: %s\n", bad ? "MISMATCH" : "byte-identical");
  const double dense = static_cast<double>(count * tensor_elems * 2);
  std::printf("delta sync  %.3f s %s (diff+encode %.3f, push %.3f), wire %.1f MB, %llu changed\n", median(times),
              spread(times).c_str(), median(diff), median(push), static_cast<double>(wire) / 1e6,
              static_cast<unsigned long long>(changed));
  std::printf("full bcast  %.4f s (%.1f GB/s, device resident)\n", full_s, dense / 1e9 / full_s);
  std::printf("ratio delta/full %.2f\n", median(times) / full_s);
  snd.reset();
  for (void* d : dev)
    if (d) CK(cudaFree(d));
  client.reset();
  server.reset();
  member.reset();
  rx.reset();
  workers.reset();
  pool.reset();
  backend.reset();
  if (bad) std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  const bool smoke = std::getenv("DS_BENCH_SMOKE") != nullptr;
  size_t bytes = smoke ? (64ull << 20) : (1ull << 30);
  int reps = smoke ? 2 : 10;
  double gib = smoke ? 0.25 : 8.0;
  int syncs = smoke ? 1 : 3;
  uint64_t chunk = 256ull << 20, bucket = 512ull << 20;
  std::vector<uint64_t> bcast_chunks;  // part 1 at each of these chunk sizes (default: --chunk-bytes)
  bool part1 = true, part2 = true, gpu_path = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string("0"); };
    if (a == "--bytes") bytes = std::stoull(next());
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--e2e-gib") gib = std::stod(next());
    else if (a == "--syncs") syncs = std::stoi(next());
    else if (a == "--chunk-bytes") chunk = std::stoull(next());
    else if (a == "--bcast-chunk-mib") {
      std::string list = next();
      for (size_t p = 0; p < list.size();) {
        size_t q = list.find(',', p);
        if (q == std::string::npos) q = list.size();
        bcast_chunks.push_back(std::stoull(list.substr(p, q - p)) << 20);
        p = q + 1;
      }
    }
    else if (a == "--bucket-bytes") bucket = std::stoull(next());
    else if (a == "--gpu-path") gpu_path = true;
    else if (a == "--only") {
      const std::string w = next();
      part1 = w == "broadcast";
      part2 = w == "e2e";
    } else if (a.rfind("--benchmark", 0) == 0) {
      // CTest's smoke invocation passes Google Benchmark flags; ignore them.
    } else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  auto gpus = ds::gpu::cuda_device_count();
  if (!gpus || *gpus < 2) {
    std::printf("nccl_bench: SKIP: needs two CUDA devices (%s)\n",
                gpus ? ("found " + std::to_string(*gpus)).c_str() : gpus.err().describe().c_str());
    return 77;
  }
  ds::set_log_level(ds::log_level::warn);
  if (bcast_chunks.empty()) bcast_chunks.push_back(chunk);
  if (part1)
    for (uint64_t c : bcast_chunks) broadcast_part(bytes, reps, c);
  if (part2) e2e_part(gib, syncs, 0.01, chunk, bucket, gpu_path);
  return 0;
}
