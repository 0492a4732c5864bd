// The receiver service inside another process (the Python module's Receiver): what `deltasync serve` runs —
// event loop, I/O backend, buffer pool, worker pool, receiver pipeline, HTTP pull opener and the HTTP
// server with the same routes — over a weight store the caller provides (a borrowed_weight_store over the
// caller's tensors), on a background thread (the event loop's).
//
// Hooks wrap the two sync routes (POST /sync, POST /update_weights_from_disk): before_apply(version) runs
// after the request parsed and before the receiver sees it (an error refuses the sync, HTTP 500 code
// "cancelled", with the weights untouched); exactly one of after_commit(version, answer JSON) or
// after_refuse(version, answer JSON) follows, before the answer is sent. Hooks run on the loop thread: while
// one runs, the service answers nothing else.
//
// call() runs any route in-process, exactly as an HTTP request would (hooks included), and waits for the
// answer: the front end's apply(), status() and checksums() go through it.
//
// Threading: every method from any thread but the loop thread (a hook calling call() or close() would wait
// for itself: refused with errc::invalid_argument). close() is idempotent; the destructor closes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "sync/weight_store.h"

namespace deltasync::python {

struct receiver_service_options {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0: ephemeral
  std::string token;  // bearer token; empty: none
  std::string delta_dir;
  uint64_t version = 0;
  uint64_t chunk_bytes = 4ull << 20;
  uint32_t read_workers = 8;
  uint32_t workers = 0;  // 0: one per core
  std::string io_backend = "auto";
  uint64_t max_body_bytes = 1ull << 20;
  uint64_t max_file_bytes = 8ull << 30;
  std::vector<std::string> pull_allow;
};

struct receiver_hooks {
  std::function<status(uint64_t version)> before_apply;
  std::function<void(uint64_t version, const std::string& answer)> after_commit;
  std::function<void(uint64_t version, const std::string& answer)> after_refuse;
};

struct call_answer {
  unsigned status = 0;
  std::string body;
};

class receiver_service {
 public:
  // Errors: the delta dir does not exist, the address cannot be bound, the I/O backend cannot start.
  static result<std::unique_ptr<receiver_service>> start(std::unique_ptr<weight_store> store,
                                                         receiver_service_options options, receiver_hooks hooks);
  ~receiver_service();
  receiver_service(const receiver_service&) = delete;
  receiver_service& operator=(const receiver_service&) = delete;

  uint16_t port() const noexcept;
  uint64_t version();
  bool closed() const noexcept;
  // Runs route (method, path) with `body` and waits for its answer. Errors: invalid_argument (closed, or
  // called from a hook), not_found (no such route).
  result<call_answer> call(const std::string& method, const std::string& path, const std::string& body);
  // Stops serving, waits for a sync in flight, tears everything down; the store is destroyed last.
  // Errors: invalid_argument when called from a hook.
  status close();
  weight_store& store() noexcept;

  struct impl;

 private:
  explicit receiver_service(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace deltasync::python
