// Blocking wrappers: post the asynchronous pipeline to the loop and wait on a promise.
#include "io/sync_io.h"

#include <sys/stat.h>

#include <cstring>
#include <future>
#include <memory>

#include "base/check.h"
#include "io/atomic_file_writer.h"
#include "io/buffer_pool.h"
#include "io/chunked_reader.h"
#include "io/event_loop.h"
#include "io/io_backend.h"

namespace deltasync::io {

namespace {

constexpr size_t helper_buffer_bytes = size_t{4} << 20;
constexpr size_t helper_pool_bytes = size_t{64} << 20;

struct private_engine {
  event_loop loop;
  std::unique_ptr<io_backend> backend;
  std::unique_ptr<buffer_pool> pool;
  ~private_engine() {
    pool.reset();
    backend.reset();
  }
};

result<std::unique_ptr<private_engine>> make_private_engine() {
  auto engine = std::make_unique<private_engine>();
  io_backend_options opts;
  opts.max_in_flight = 16;
  opts.quiet = true;
  DS_ASSIGN_OR_RETURN(engine->backend, make_io_backend(engine->loop, opts));
  buffer_pool_options popts;
  popts.buffer_bytes = helper_buffer_bytes;
  popts.max_total_bytes = helper_pool_bytes;
  popts.lock_memory = false;  // short-lived: not worth RLIMIT_MEMLOCK
  DS_ASSIGN_OR_RETURN(engine->pool, buffer_pool::create(engine->loop, engine->backend.get(), popts));
  return engine;
}

// Feeds data into writer from pool buffers, waiting for buffers when the pool runs dry.
struct write_job {
  atomic_file_writer* writer;
  buffer_pool* pool;
  byte_span data;
  size_t offset = 0;
  std::promise<status> done;

  void pump() {
    while (offset < data.size() && !writer->failed()) {
      buffer_handle buf = pool->try_acquire();
      if (!buf) {
        pool->start_acquire([this](buffer_handle h) { fill(std::move(h)); });
        return;
      }
      fill_one(std::move(buf));
    }
    writer->start_commit([this](status st) { done.set_value(std::move(st)); });
  }
  void fill(buffer_handle buf) {
    fill_one(std::move(buf));
    pump();
  }
  void fill_one(buffer_handle buf) {
    if (offset >= data.size() || writer->failed()) return;
    size_t n = std::min(buf.size(), data.size() - offset);
    std::memcpy(buf.data(), data.data() + offset, n);
    offset += n;
    (void)writer->append(std::move(buf), n);  // a failure is sticky and reported by start_commit
  }
};

}  // namespace

result<byte_buffer> read_file_all(io_backend& backend, buffer_pool& pool, const std::string& path, size_t max_bytes) {
  DS_CHECK(!backend.loop().in_loop_thread(), "read_file_all blocks; not on the loop thread");
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return io_errno_error(errno, "stat " + path);
  auto size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes) {
    return error(errc::limit_exceeded,
                 "read " + path + ": " + std::to_string(size) + " bytes exceed the limit of " + std::to_string(max_bytes));
  }
  byte_buffer out(static_cast<size_t>(size));
  chunked_reader_options opts;
  opts.chunk_bytes = pool.buffer_bytes();
  opts.read_workers = std::max<size_t>(1, std::min<size_t>(8, pool.buffer_count()));
  std::unique_ptr<chunked_reader> reader;
  std::promise<status> done;
  backend.loop().post([&] {
    reader = std::make_unique<chunked_reader>(backend, pool, std::vector<read_file_spec>{{path, size}}, opts);
    reader->start([&](read_piece piece) {
                    if (!piece.bytes.empty()) std::memcpy(out.data() + piece.offset, piece.bytes.data(), piece.bytes.size());
                  },
                  [&](status s) { done.set_value(std::move(s)); });
  });
  status st_done = done.get_future().get();
  backend.loop().run_sync([&] { reader.reset(); });
  if (!st_done.ok()) return std::move(st_done).err();
  return out;
}

status write_file_atomic(io_backend& backend, buffer_pool& pool, const std::string& path, byte_span data) {
  DS_CHECK(!backend.loop().in_loop_thread(), "write_file_atomic blocks; not on the loop thread");
  std::unique_ptr<atomic_file_writer> writer;
  write_job job;
  job.pool = &pool;
  job.data = data;
  backend.loop().post([&] {
    writer = std::make_unique<atomic_file_writer>(backend, path);
    job.writer = writer.get();
    job.pump();
  });
  status st = job.done.get_future().get();
  backend.loop().run_sync([&] { writer.reset(); });
  return st;
}

result<byte_buffer> read_file_all(const std::string& path, size_t max_bytes) {
  DS_ASSIGN_OR_RETURN(auto engine, make_private_engine());
  return read_file_all(*engine->backend, *engine->pool, path, max_bytes);
}

status write_file_atomic(const std::string& path, byte_span data) {
  DS_ASSIGN_OR_RETURN(auto engine, make_private_engine());
  return write_file_atomic(*engine->backend, *engine->pool, path, data);
}

}  // namespace deltasync::io
