// load_bench: load_checkpoint (src/sync/checkpoint_loader) against a raw read of the same files, measured in
// the same run, cold and warm.
//
// It writes a synthetic bf16 checkpoint (a layout of src/sync/synthetic_model, default llama3.2-1b: 2.47 GB)
// in two forms: one `model.safetensors`, and SHARDS shard files + `model.safetensors.index.json`. Then, per
// repetition, per form and for cold (every file's page cache evicted with posix_fadvise(DONTNEED) and checked
// with mincore) and warm (the files read once first), it times, in a rotating order:
//   load             load_checkpoint(path); freeing the result is not timed
//   engine_direct    the project's io engine: chunked_reader, O_DIRECT, 4 MiB chunks, 8 reads in flight, a
//                    64 MiB buffer pool whose buffers are reused (the receiver's read path, no copy)
//   engine_buffered  the same without O_DIRECT (page-cache reads, punted to io_uring workers)
//   cat              `cat FILES > /dev/null`
//   fresh_memory     no read at all: allocate blocks of the files' sizes the way the loader does (page_block)
//                    and write one byte per 4 KiB page; what the memory a loaded checkpoint must own costs
//                    on this machine (on a VM with free page reporting, the host faults it back in)
// and prints one line per measurement, then per form and mode the medians, GB/s, and load ÷ the fastest raw
// read of that mode (the figure the target is about).
//
// Every measurement starts after a pause of DS_LOAD_BENCH_PAUSE_S seconds (default 3). On a VM with free page
// reporting (this machine: Firecracker, page_reporting) memory freed by the previous measurement goes back to
// the host within ~2 s and costs a host fault per page when touched again: with the pause every run meets
// memory the way a fresh `deltasync publish` or `serve` process does; with 0 it reuses just-freed memory.
//
// Env: DS_BENCH_DIR (default /var/tmp/deltasync-load-bench; removed at the end), DS_BENCH_SMOKE=1 (the tiny
// model, one repetition, no pause), DS_LOAD_BENCH_MODEL, DS_LOAD_BENCH_REPS (default 5), DS_LOAD_BENCH_SHARDS
// (4), DS_LOAD_BENCH_PAUSE_S.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/page_block.h"
#include "codec/safetensors.h"
#include "io/buffer_pool.h"
#include "io/chunked_reader.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "sync/checkpoint_loader.h"
#include "sync/synthetic_model.h"

namespace {

using namespace deltasync;
namespace fs = std::filesystem;

constexpr size_t mib = size_t{1} << 20;

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}
bool smoke() { return env_or("DS_BENCH_SMOKE", "0") != "0"; }

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "load_bench: %s\n", what.c_str());
  std::exit(1);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Writes one safetensors file of `tensors` (data: a repeating pseudo-random pattern, so nothing is sparse),
// fsyncs it.
void write_shard(const std::string& path, const std::vector<tensor_layout>& tensors, const byte_buffer& pattern) {
  std::vector<tensor_spec> specs;
  for (const tensor_layout& t : tensors) specs.push_back({t.name, dtype::BF16, t.shape, t.numel() * 2});
  auto layout = build_safetensors_header(specs, {{"format", "pt"}});
  if (!layout) die("header for " + path + ": " + layout.err().describe());
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) die("open " + path + ": " + std::strerror(errno));
  auto put = [&](const std::byte* p, size_t n) {
    while (n > 0) {
      ssize_t w = ::write(fd, p, n);
      if (w <= 0) die("write " + path + ": " + std::strerror(errno));
      p += w;
      n -= static_cast<size_t>(w);
    }
  };
  put(layout->header.data(), layout->header.size());
  for (uint64_t left = layout->data_bytes; left > 0;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(left, pattern.size()));
    put(pattern.data(), n);
    left -= n;
  }
  if (::fsync(fd) != 0) die("fsync " + path + ": " + std::strerror(errno));
  ::close(fd);
}

struct checkpoint_form {
  std::string name;               // "single" | "sharded"
  std::string load_path;          // what load_checkpoint gets
  std::vector<std::string> files;  // every file it reads
  uint64_t bytes = 0;             // their total size
};

std::vector<checkpoint_form> write_checkpoints(const std::string& dir, const model_layout& layout, size_t shards) {
  byte_buffer pattern(64 * mib);
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < pattern.size(); i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    std::memcpy(pattern.data() + i, &x, 8);
  }
  std::vector<checkpoint_form> forms;

  checkpoint_form single{"single", dir + "/single/model.safetensors", {}, 0};
  fs::create_directories(dir + "/single");
  write_shard(single.load_path, layout.tensors, pattern);
  single.files = {single.load_path};
  forms.push_back(single);

  // Shards of about equal bytes, tensors in layout order; the index maps each tensor to its shard.
  checkpoint_form sharded{"sharded", dir + "/sharded", {}, 0};
  fs::create_directories(dir + "/sharded");
  const uint64_t total = layout.parameters() * 2;
  std::string index = "{\"metadata\": {\"total_size\": " + std::to_string(total) + "}, \"weight_map\": {";
  std::vector<tensor_layout> part;
  uint64_t part_bytes = 0, done_bytes = 0;
  size_t shard = 0;
  for (size_t i = 0; i < layout.tensors.size(); ++i) {
    part.push_back(layout.tensors[i]);
    part_bytes += layout.tensors[i].numel() * 2;
    const bool last = i + 1 == layout.tensors.size();
    if (!last && (done_bytes + part_bytes) * shards < total * (shard + 1)) continue;
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", shard + 1, shards);
    const std::string path = sharded.load_path + "/" + name;
    write_shard(path, part, pattern);
    for (const tensor_layout& t : part) {
      index += std::string(index.back() == '{' ? "" : ", ") + "\"" + t.name + "\": \"" + name + "\"";
    }
    sharded.files.push_back(path);
    done_bytes += part_bytes;
    part.clear();
    part_bytes = 0;
    ++shard;
  }
  index += "}}";
  const std::string index_path = sharded.load_path + "/model.safetensors.index.json";
  FILE* f = std::fopen(index_path.c_str(), "w");
  if (f == nullptr || std::fwrite(index.data(), 1, index.size(), f) != index.size() || std::fflush(f) != 0 ||
      ::fsync(::fileno(f)) != 0 || std::fclose(f) != 0) {
    die("write " + index_path);
  }
  sharded.files.push_back(index_path);
  forms.push_back(sharded);

  for (checkpoint_form& form : forms) {
    for (const std::string& file : form.files) form.bytes += fs::file_size(file);
  }
  return forms;
}

// Share of the file's pages in the page cache.
double resident_share(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) die("open " + path);
  struct stat st;
  ::fstat(fd, &st);
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return 0;
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) die("mmap " + path);
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> vec((size + page - 1) / page);
  ::mincore(map, size, vec.data());
  ::munmap(map, size);
  size_t in = 0;
  for (unsigned char v : vec) in += v & 1;
  return static_cast<double>(in) / static_cast<double>(vec.size());
}

// Evicts the files from the page cache (clean pages: no root needed); returns the largest share left.
double evict(const std::vector<std::string>& files) {
  double worst = 0;
  for (const std::string& file : files) {
    int fd = ::open(file.c_str(), O_RDONLY);
    if (fd < 0) die("open " + file);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
    worst = std::max(worst, resident_share(file));
  }
  return worst;
}

void run_cat(const std::vector<std::string>& files) {
  std::string cmd = "cat";
  for (const std::string& f : files) cmd += " '" + f + "'";
  cmd += " > /dev/null";
  if (std::system(cmd.c_str()) != 0) die("'" + cmd + "' failed");
}

// The io engine with one buffer pool, reused by every run.
struct engine {
  io::event_loop loop;
  std::unique_ptr<io::io_backend> backend;
  std::unique_ptr<io::buffer_pool> pool;
  engine() {
    io::io_backend_options opts;
    opts.quiet = true;
    backend = std::move(io::make_io_backend(loop, opts)).value();
    io::buffer_pool_options popts;
    popts.buffer_bytes = 4 * mib;
    popts.max_total_bytes = 64 * mib;
    pool = std::move(io::buffer_pool::create(loop, backend.get(), popts)).value();
  }
  ~engine() {
    pool.reset();
    backend.reset();
  }
  void read(const std::vector<std::string>& files, bool direct) {
    std::vector<io::read_file_spec> specs;
    for (const std::string& f : files) specs.push_back({f, std::nullopt});
    io::chunked_reader_options opts;
    opts.chunk_bytes = 4 * mib;
    opts.read_workers = 8;
    opts.direct_io = direct;
    std::unique_ptr<io::chunked_reader> reader;
    std::promise<status> done;
    loop.post([&] {
      reader = std::make_unique<io::chunked_reader>(*backend, *pool, specs, opts);
      reader->start([](io::read_piece) {}, [&](status s) { done.set_value(std::move(s)); });
    });
    status st = done.get_future().get();
    loop.run_sync([&] { reader.reset(); });
    if (!st.ok()) die("engine read: " + st.err().describe());
  }
};

void touch_fresh_memory(const std::vector<std::string>& files) {
  std::vector<page_block> blocks;
  for (const std::string& f : files) {
    auto b = page_block::allocate(static_cast<size_t>(fs::file_size(f)), f);
    if (!b) die(b.err().describe());
    for (size_t i = 0; i < b->size(); i += 4096) b->data()[i] = std::byte{1};
    blocks.push_back(std::move(b).value());
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main() {
  const std::string dir = env_or("DS_BENCH_DIR", "/var/tmp/deltasync-load-bench");
  const std::string model = env_or("DS_LOAD_BENCH_MODEL", smoke() ? "tiny" : "llama3.2-1b");
  const int reps = smoke() ? 1 : std::atoi(env_or("DS_LOAD_BENCH_REPS", "5").c_str());
  const size_t shards = static_cast<size_t>(std::atoi(env_or("DS_LOAD_BENCH_SHARDS", smoke() ? "2" : "4").c_str()));
  const double pause_s = std::atof(env_or("DS_LOAD_BENCH_PAUSE_S", smoke() ? "0" : "3").c_str());
  if (reps < 1 || shards < 1) die("DS_LOAD_BENCH_REPS and DS_LOAD_BENCH_SHARDS must be >= 1");
  auto layout = synthetic_model(model);
  if (!layout) die(layout.err().describe());

  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
  auto t0 = std::chrono::steady_clock::now();
  const std::vector<checkpoint_form> forms = write_checkpoints(dir, *layout, shards);
  std::printf("load_bench: model %s, %" PRIu64 " bytes; %zu shards; %d reps; pause %.1f s; in %s (written in %.1f s)\n",
              model.c_str(), forms[0].bytes, shards, reps, pause_s, dir.c_str(), seconds_since(t0));

  engine e;
  std::printf("io backend: %s\n", e.backend->name());
  const std::vector<std::string> methods = {"load", "engine_direct", "engine_buffered", "cat", "fresh_memory"};
  // seconds[form][mode][method]
  std::map<std::string, std::map<std::string, std::map<std::string, std::vector<double>>>> seconds;
  double worst_resident = 0;
  for (int rep = 0; rep < reps; ++rep) {
    for (const checkpoint_form& form : forms) {
      for (const std::string mode : {"cold", "warm"}) {
        for (size_t k = 0; k < methods.size(); ++k) {
          const std::string& method = methods[(k + static_cast<size_t>(rep)) % methods.size()];
          if (mode == "cold") {
            worst_resident = std::max(worst_resident, evict(form.files));
          } else {
            run_cat(form.files);
          }
          if (pause_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(pause_s));
          double s = 0;
          if (method == "load") {
            const auto start = std::chrono::steady_clock::now();
            auto loaded = load_checkpoint(form.load_path);
            s = seconds_since(start);
            if (!loaded) die("load_checkpoint: " + loaded.err().describe());
          } else {
            const auto start = std::chrono::steady_clock::now();
            if (method == "cat") {
              run_cat(form.files);
            } else if (method == "fresh_memory") {
              touch_fresh_memory(form.files);
            } else {
              e.read(form.files, method == "engine_direct");
            }
            s = seconds_since(start);
          }
          seconds[form.name][mode][method].push_back(s);
          std::printf("rep %d %-7s %s %-15s %7.3f s  %6.2f GB/s\n", rep, form.name.c_str(), mode.c_str(),
                      method.c_str(), s, static_cast<double>(form.bytes) / s / 1e9);
          std::fflush(stdout);
        }
      }
    }
  }
  std::printf("cold runs: at most %.1f%% of a file was still in the page cache after eviction\n",
              100 * worst_resident);

  std::printf("\nmedians of %d (GB/s = 1e9 bytes/s; ratio = load / the fastest raw read of the same mode)\n", reps);
  for (const checkpoint_form& form : forms) {
    for (const std::string mode : {"cold", "warm"}) {
      auto& m = seconds[form.name][mode];
      double best_raw_s = 1e300;
      std::string best_raw;
      std::string line;
      for (const std::string& method : methods) {
        const double s = median(m[method]);
        const double lo = *std::min_element(m[method].begin(), m[method].end());
        const double hi = *std::max_element(m[method].begin(), m[method].end());
        char buf[160];
        std::snprintf(buf, sizeof buf, "  %s %.3f s [%.3f..%.3f] %.2f GB/s", method.c_str(), s, lo, hi,
                      static_cast<double>(form.bytes) / s / 1e9);
        line += buf;
        if (method != "load" && method != "fresh_memory" && s < best_raw_s) best_raw_s = s, best_raw = method;
      }
      const double load_s = median(m["load"]);
      // A load can be no faster than the slower of reading the bytes and owning fresh memory for them.
      const double bound_s = std::max(best_raw_s, median(m["fresh_memory"]));
      std::printf("%-7s %s:%s\n          ratio load/%s = %.2f; load / max(%s, fresh_memory) = %.2f\n",
                  form.name.c_str(), mode.c_str(), line.c_str(), best_raw.c_str(), best_raw_s / load_s,
                  best_raw.c_str(), bound_s / load_s);
    }
  }
  fs::remove_all(dir, ec);
  return 0;
}
