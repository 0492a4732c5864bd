// Shared helpers for the io tests: temp dirs under $TMPDIR, seeds (printed, replayable via DS_TEST_SEED),
// engines over each backend kind, and blocking wrappers around the asynchronous writer and reader.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "io/atomic_file_writer.h"
#include "io/buffer_pool.h"
#include "io/chunked_reader.h"
#include "io/event_loop.h"
#include "io/fault_backend.h"
#include "io/io_backend.h"

namespace deltasync::io::testing {

// DS_TEST_SEED when set, else a fresh random seed. Callers SCOPED_TRACE it.
uint64_t test_seed();

class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

bool file_exists(const std::string& path);
std::optional<byte_buffer> slurp(const std::string& path);  // plain read, for checking results
void spit(const std::string& path, byte_span data);          // plain write, for preparing inputs
byte_buffer random_bytes(std::mt19937_64& rng, size_t n);

enum class backend_kind { threads, uring, fault_threads, fault_uring };
const char* backend_kind_name(backend_kind kind);

// An event loop, a backend (optionally under a fault decorator) and a buffer pool.
struct engine {
  std::unique_ptr<event_loop> loop;
  std::unique_ptr<io_backend> inner;
  std::unique_ptr<fault_backend> fault;
  std::unique_ptr<buffer_pool> pool;
  io_backend& backend() { return fault ? static_cast<io_backend&>(*fault) : *inner; }
  ~engine();
};

// Null with *skip_reason set when the kind needs io_uring and no ring can be created.
std::unique_ptr<engine> make_engine(backend_kind kind, const fault_options& faults, size_t buffer_bytes,
                                    size_t pool_bytes, std::string* skip_reason);

// Writes data through an atomic_file_writer, appending pieces of the given sizes (cycled).
status write_pieces(engine& e, const std::string& path, byte_span data, const std::vector<size_t>& piece_sizes,
                    const atomic_file_writer_options& options = {});

struct read_outcome {
  status st;
  std::vector<byte_buffer> contents;  // per file, assembled from delivered pieces
  bool in_order = true;               // every piece started where the previous one of its file ended
  size_t pieces = 0;
  size_t pieces_after_done = 0;
};

// Reads files through a chunked_reader. hold_pieces > 0 makes the consumer keep that many buffers
// (released in FIFO order) to exercise back-pressure.
read_outcome read_files(engine& e, const std::vector<read_file_spec>& files, const chunked_reader_options& options,
                        size_t hold_pieces = 0);

}  // namespace deltasync::io::testing
