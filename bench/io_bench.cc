// io_bench: throughput of the I/O engine against a plain O_DIRECT pwrite/pread loop over the same bytes,
// measured in the same run. Writes >= 2 GiB through the atomic writer (chunk 1/4/16 MiB), reads the same
// files back cold (O_DIRECT) through the chunked reader (chunk 1/4/16 MiB x read_workers 1..32).
// Counter "x_baseline" is the ratio to the baseline's throughput from this run.
// Env: DS_BENCH_DIR (default /var/tmp/deltasync-bench), DS_BENCH_SMOKE=1 (32 MiB total).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "io/atomic_file_writer.h"
#include "io/buffer_pool.h"
#include "io/chunked_reader.h"
#include "io/event_loop.h"
#include "io/io_backend.h"

namespace {

using namespace deltasync;
using namespace deltasync::io;

constexpr size_t mib = size_t{1} << 20;
constexpr size_t baseline_block = 4 * mib;

bool smoke() {
  const char* s = std::getenv("DS_BENCH_SMOKE");
  return s != nullptr && *s != '\0' && *s != '0';
}
std::string bench_dir() {
  const char* d = std::getenv("DS_BENCH_DIR");
  return d != nullptr && *d != '\0' ? d : "/var/tmp/deltasync-bench";
}
size_t file_count() { return 8; }
size_t file_bytes() { return smoke() ? 4 * mib : 256 * mib; }  // 8 x 256 MiB = 2 GiB
std::string file_path(const std::string& kind, size_t i) { return bench_dir() + "/" + kind + std::to_string(i); }

double baseline_write_bps = 0, baseline_read_bps = 0;

// An engine per configuration so its pool (sized for that chunk) is the one registered with the ring.
struct engine {
  event_loop loop;
  std::unique_ptr<io_backend> backend;
  std::unique_ptr<buffer_pool> pool;
  engine(size_t buffer_bytes, size_t buffers) {
    io_backend_options opts;
    opts.quiet = true;
    opts.max_in_flight = 64;
    backend = std::move(make_io_backend(loop, opts)).value();
    buffer_pool_options popts;
    popts.buffer_bytes = buffer_bytes;
    popts.max_total_bytes = buffer_bytes * buffers;
    pool = std::move(buffer_pool::create(loop, backend.get(), popts)).value();
  }
  ~engine() {
    pool.reset();
    backend.reset();
  }
};

// Streams file_bytes() of pool buffers into one atomic_file_writer after another.
struct write_run {
  write_run(engine* e_in, size_t chunk_in) : e(e_in), chunk(chunk_in) {}
  engine* e;
  size_t chunk;
  size_t file = 0;
  size_t written = 0;
  std::unique_ptr<atomic_file_writer> writer;
  std::promise<status> done;

  void next_file() {
    if (file == file_count()) return done.set_value({});
    atomic_file_writer_options wopts;
    wopts.max_in_flight = 8;
    writer = std::make_unique<atomic_file_writer>(*e->backend, file_path("engine", file), wopts);
    written = 0;
    pump();
  }
  void pump() {
    while (written < file_bytes()) {
      buffer_handle buf = e->pool->try_acquire();
      if (!buf) {
        e->pool->start_acquire([this](buffer_handle h) {
          append(std::move(h));
          pump();
        });
        return;
      }
      append(std::move(buf));
    }
    writer->start_commit([this](status st) {
      if (!st.ok()) return done.set_value(st);
      e->loop.post([this] {
        writer.reset();
        ++file;
        next_file();
      });
    });
  }
  void append(buffer_handle buf) {
    if (written >= file_bytes()) return;
    size_t n = std::min(chunk, file_bytes() - written);
    written += n;
    (void)writer->append(std::move(buf), n);
  }
};

void bm_baseline_write(benchmark::State& state) {
  void* block = std::aligned_alloc(4096, baseline_block);
  std::memset(block, 0x5a, baseline_block);
  for (auto _ : state) {
    for (size_t i = 0; i < file_count(); ++i) {
      int fd = ::open(file_path("plain", i).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT, 0644);
      if (fd < 0) return state.SkipWithError("open for baseline write failed");
      for (size_t off = 0; off < file_bytes(); off += baseline_block) {
        if (::pwrite(fd, block, baseline_block, static_cast<off_t>(off)) != static_cast<ssize_t>(baseline_block)) {
          ::close(fd);
          return state.SkipWithError("baseline pwrite failed");
        }
      }
      ::fdatasync(fd);
      ::close(fd);
    }
  }
  std::free(block);
  auto bytes = static_cast<int64_t>(file_count() * file_bytes());
  state.SetBytesProcessed(bytes * state.iterations());
  state.counters["bytes_per_s"] = benchmark::Counter(static_cast<double>(bytes * state.iterations()), benchmark::Counter::kIsRate);
}

void bm_baseline_read(benchmark::State& state) {
  void* block = std::aligned_alloc(4096, baseline_block);
  for (auto _ : state) {
    for (size_t i = 0; i < file_count(); ++i) {
      int fd = ::open(file_path("plain", i).c_str(), O_RDONLY | O_DIRECT);
      if (fd < 0) return state.SkipWithError("open for baseline read failed");
      for (size_t off = 0; off < file_bytes(); off += baseline_block) {
        if (::pread(fd, block, baseline_block, static_cast<off_t>(off)) != static_cast<ssize_t>(baseline_block)) {
          ::close(fd);
          return state.SkipWithError("baseline pread failed");
        }
      }
      ::close(fd);
    }
  }
  std::free(block);
  auto bytes = static_cast<int64_t>(file_count() * file_bytes());
  state.SetBytesProcessed(bytes * state.iterations());
  state.counters["bytes_per_s"] = benchmark::Counter(static_cast<double>(bytes * state.iterations()), benchmark::Counter::kIsRate);
}

// Records the baseline rate from the manual timer-free measurement.
void record(benchmark::State& state, double& slot, double seconds) {
  double bps = static_cast<double>(file_count() * file_bytes()) / seconds;
  slot = bps;
  state.counters["GiB_per_s"] = bps / (1024.0 * mib);
}

void bm_writer(benchmark::State& state) {
  size_t chunk = static_cast<size_t>(state.range(0)) * mib;
  engine e(chunk, std::max<size_t>(4, 32 * mib / chunk));
  double seconds = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    write_run run(&e, chunk);
    auto fut = run.done.get_future();
    e.loop.post([&] { run.next_file(); });
    status st = fut.get();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!st.ok()) return state.SkipWithError(st.err().describe().c_str());
  }
  auto bytes = static_cast<int64_t>(file_count() * file_bytes());
  state.SetBytesProcessed(bytes * state.iterations());
  double bps = static_cast<double>(bytes) * static_cast<double>(state.iterations()) / seconds;
  state.counters["GiB_per_s"] = bps / (1024.0 * mib);
  if (baseline_write_bps > 0) state.counters["x_baseline"] = bps / baseline_write_bps;
  state.SetLabel(e.backend->name() + std::string(e.pool->registered() ? "+fixed" : ""));
}

// The reader reads what the writer benchmark wrote; when run alone (a filter), write them first.
bool ensure_engine_files() {
  struct stat st;
  bool all = true;
  for (size_t i = 0; i < file_count(); ++i) {
    all = all && ::stat(file_path("engine", i).c_str(), &st) == 0 && static_cast<size_t>(st.st_size) == file_bytes();
  }
  if (all) return true;
  engine e(4 * mib, 8);
  write_run run(&e, 4 * mib);
  auto fut = run.done.get_future();
  e.loop.post([&] { run.next_file(); });
  return fut.get().ok();
}

void bm_reader(benchmark::State& state) {
  size_t chunk = static_cast<size_t>(state.range(0)) * mib;
  auto workers = static_cast<size_t>(state.range(1));
  if (!ensure_engine_files()) return state.SkipWithError("could not write the files to read");
  engine e(chunk, workers + 2);
  std::vector<read_file_spec> files;
  for (size_t i = 0; i < file_count(); ++i) files.push_back({file_path("engine", i), file_bytes()});
  double seconds = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    chunked_reader_options opts;
    opts.chunk_bytes = chunk;
    opts.read_workers = workers;
    std::unique_ptr<chunked_reader> reader;
    std::promise<status> done;
    e.loop.post([&] {
      reader = std::make_unique<chunked_reader>(*e.backend, *e.pool, files, opts);
      reader->start([](read_piece p) { benchmark::DoNotOptimize(p.bytes.data()); },
                    [&](status st) { done.set_value(std::move(st)); });
    });
    status st = done.get_future().get();
    e.loop.run_sync([&] { reader.reset(); });
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!st.ok()) return state.SkipWithError(st.err().describe().c_str());
  }
  auto bytes = static_cast<int64_t>(file_count() * file_bytes());
  state.SetBytesProcessed(bytes * state.iterations());
  double bps = static_cast<double>(bytes) * static_cast<double>(state.iterations()) / seconds;
  state.counters["GiB_per_s"] = bps / (1024.0 * mib);
  if (baseline_read_bps > 0) state.counters["x_baseline"] = bps / baseline_read_bps;
  state.SetLabel(e.backend->name() + std::string(e.pool->registered() ? "+fixed" : ""));
}

// Baselines wrapped to record their rate for the ratio counters (registered first, so they run first).
void bm_baseline_write_rec(benchmark::State& state) {
  auto t0 = std::chrono::steady_clock::now();
  bm_baseline_write(state);
  record(state, baseline_write_bps,
         std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / static_cast<double>(state.iterations()));
}
void bm_baseline_read_rec(benchmark::State& state) {
  auto t0 = std::chrono::steady_clock::now();
  bm_baseline_read(state);
  record(state, baseline_read_bps,
         std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / static_cast<double>(state.iterations()));
}

}  // namespace

int main(int argc, char** argv) {
  std::filesystem::create_directories(bench_dir());
  benchmark::RegisterBenchmark("baseline_pwrite_odirect_4MiB", bm_baseline_write_rec)->Iterations(1)->UseRealTime();
  for (int64_t chunk : {1, 4, 16}) {
    benchmark::RegisterBenchmark("writer/chunk_MiB", bm_writer)->Arg(chunk)->Iterations(1)->UseRealTime();
  }
  benchmark::RegisterBenchmark("baseline_pread_odirect_4MiB", bm_baseline_read_rec)->Iterations(1)->UseRealTime();
  for (int64_t chunk : {1, 4, 16}) {
    for (int64_t workers : {1, 4, 8, 16, 32}) {
      benchmark::RegisterBenchmark("reader/chunk_MiB/workers", bm_reader)->Args({chunk, workers})->Iterations(1)->UseRealTime();
    }
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  for (size_t i = 0; i < file_count(); ++i) {
    ::unlink(file_path("engine", i).c_str());
    ::unlink(file_path("plain", i).c_str());
  }
  return 0;
}
