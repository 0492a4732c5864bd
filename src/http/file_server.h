// A read-only HTTP/1.1 file server for the pull transport's sender side (`deltasync serve-files`): serves the
// regular files under one root directory with GET and HEAD, single byte ranges ("Range: bytes=a-b", "a-",
// "-n" -> 206 with Content-Range; unsatisfiable -> 416), Content-Length always, keep-alive. Bodies are read
// from the file with pread in pieces of io_bytes while they are sent, so a large file never sits in memory.
// nginx serving the same directory is the alternative (docs/bench.md).
//
// Confinement: a target with a ".." component, an encoded NUL or a bad escape is refused (400); the path is
// resolved with realpath and must stay inside the root (403) and name a regular file (404 otherwise).
// Other methods: 405. Requests with a body: 400. Limits: header block 16 KiB, max_connections open
// connections (one more is answered 503 with Retry-After: 1 and closed; the pull client backs off and
// retries), and each read or write step is bounded by timeout_ms.
//
// Threading: runs on the event loop's thread; Boost stays inside file_server.cc.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/result.h"

namespace deltasync::io {
class event_loop;
}

namespace deltasync::http {

struct file_server_options {
  std::string root;  // directory served at "/"
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0: an ephemeral port
  uint32_t max_connections = 256;
  uint32_t timeout_ms = 60'000;
  size_t io_bytes = 1 << 20;  // pread size while sending a body
};

class file_server {
 public:
  // Errors: the root is not a directory; the address cannot be bound.
  static result<std::unique_ptr<file_server>> start(io::event_loop& loop, file_server_options options);
  ~file_server();  // stops accepting and closes every connection (waits on the loop)
  uint16_t port() const noexcept;
  uint64_t bytes_sent() const noexcept;

  struct impl;

 private:
  explicit file_server(std::shared_ptr<impl> p);
  std::shared_ptr<impl> impl_;
};

}  // namespace deltasync::http
