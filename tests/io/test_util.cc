// Implementation of the io test helpers.
#include "io/test_util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>

#include <gtest/gtest.h>

namespace deltasync::io::testing {

uint64_t test_seed() {
  if (const char* env = std::getenv("DS_TEST_SEED"); env != nullptr && *env != '\0') {
    return std::strtoull(env, nullptr, 10);
  }
  return std::random_device{}() ^ (uint64_t{std::random_device{}()} << 32);
}

temp_dir::temp_dir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/ds_io_test_XXXXXX";
  char* made = ::mkdtemp(tmpl.data());
  EXPECT_NE(made, nullptr) << std::strerror(errno);
  path_ = tmpl;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::optional<byte_buffer> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  byte_buffer out(s.size());
  if (!s.empty()) std::memcpy(out.data(), s.data(), s.size());
  return out;
}

void spit(const std::string& path, byte_span data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

byte_buffer random_bytes(std::mt19937_64& rng, size_t n) {
  byte_buffer out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>(rng() & 0xff);
  return out;
}

const char* backend_kind_name(backend_kind kind) {
  switch (kind) {
    case backend_kind::threads: return "threads";
    case backend_kind::uring: return "uring";
    case backend_kind::fault_threads: return "fault_threads";
    case backend_kind::fault_uring: return "fault_uring";
  }
  return "?";
}

engine::~engine() {
  pool.reset();
  fault.reset();
  inner.reset();
  loop.reset();
}

std::unique_ptr<engine> make_engine(backend_kind kind, const fault_options& faults, size_t buffer_bytes,
                                    size_t pool_bytes, std::string* skip_reason) {
  auto e = std::make_unique<engine>();
  e->loop = std::make_unique<event_loop>();
  bool uring = kind == backend_kind::uring || kind == backend_kind::fault_uring;
  if (uring) {
    auto r = make_uring_backend(*e->loop, 64);
    if (!r.ok()) {
      *skip_reason = "io_uring unavailable: " + r.err().describe();
      return nullptr;
    }
    e->inner = std::move(r).value();
  } else {
    e->inner = make_thread_backend(*e->loop, 4, 64);
  }
  if (kind == backend_kind::fault_threads || kind == backend_kind::fault_uring) {
    e->fault = std::make_unique<fault_backend>(*e->inner, faults);
  }
  buffer_pool_options popts;
  popts.buffer_bytes = buffer_bytes;
  popts.max_total_bytes = pool_bytes;
  auto pool = buffer_pool::create(*e->loop, &e->backend(), popts);
  EXPECT_TRUE(pool.ok()) << pool.err().describe();
  e->pool = std::move(pool).value();
  return e;
}

namespace {
struct writer_job {
  engine* e;
  atomic_file_writer* writer;
  byte_span data;
  std::vector<size_t> sizes;
  size_t next_size = 0;
  size_t offset = 0;
  std::promise<status> done;

  void pump() {
    while (offset < data.size() && !writer->failed()) {
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
    writer->start_commit([this](status st) { done.set_value(std::move(st)); });
  }
  void append(buffer_handle buf) {
    if (offset >= data.size() || writer->failed()) return;
    size_t want = sizes[next_size++ % sizes.size()];
    size_t n = std::min({want, buf.size(), data.size() - offset});
    std::memcpy(buf.data(), data.data() + offset, n);
    offset += n;
    (void)writer->append(std::move(buf), n);
  }
};
}  // namespace

status write_pieces(engine& e, const std::string& path, byte_span data, const std::vector<size_t>& piece_sizes,
                    const atomic_file_writer_options& options) {
  std::unique_ptr<atomic_file_writer> writer;
  writer_job job{&e, nullptr, data, piece_sizes, 0, 0, {}};
  e.loop->post([&] {
    writer = std::make_unique<atomic_file_writer>(e.backend(), path, options);
    job.writer = writer.get();
    job.pump();
  });
  status st = job.done.get_future().get();
  e.loop->run_sync([&] { writer.reset(); });
  return st;
}

read_outcome read_files(engine& e, const std::vector<read_file_spec>& files, const chunked_reader_options& options,
                        size_t hold_pieces) {
  read_outcome out;
  out.contents.resize(files.size());
  std::unique_ptr<chunked_reader> reader;
  std::deque<buffer_handle> held;
  std::promise<void> done;
  bool finished = false;
  e.loop->post([&] {
    reader = std::make_unique<chunked_reader>(e.backend(), *e.pool, files, options);
    reader->start(
        [&](read_piece piece) {
          if (finished) ++out.pieces_after_done;
          ++out.pieces;
          auto& dst = out.contents[piece.file_index];
          if (piece.offset != dst.size()) out.in_order = false;
          dst.insert(dst.end(), piece.bytes.begin(), piece.bytes.end());
          if (hold_pieces > 0 && piece.buffer) {
            held.push_back(std::move(piece.buffer));
            // Release later, from the loop, to model a slow apply stage.
            if (held.size() > hold_pieces) {
              e.loop->post([&] {
                if (!held.empty()) held.pop_front();
              });
            }
          }
        },
        [&](status st) {
          finished = true;
          out.st = std::move(st);
          held.clear();
          done.set_value();
        });
  });
  done.get_future().wait();
  e.loop->run_sync([&] {
    held.clear();
    reader.reset();
  });
  return out;
}

}  // namespace deltasync::io::testing
