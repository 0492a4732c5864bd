// Uses every installed deltasync library through its public headers: a synthetic host store (sync) and its
// per-tensor digests (codec, static xxhash), an event loop with the thread I/O backend (io, static liburing),
// a GET through the push client to a port nothing listens on (http, Boost inside), and the feature header.
// Prints one line and exits 0 when all of it worked.
#include <cstdio>

#include "base/features.h"
#include "codec/digest.h"
#include "http/push_client.h"
#include "io/event_loop.h"
#include "io/io_backend.h"
#include "sync/weight_store.h"

int main() {
  auto store = deltasync::host_weight_store::synthetic("tiny", 1);
  if (!store) {
    std::fprintf(stderr, "consumer: %s\n", store.err().describe().c_str());
    return 1;
  }
  const std::string first = deltasync::to_hex((*store)->digest(0));
  deltasync::io::event_loop loop;
  deltasync::io::io_backend_options bo;
  bo.backend = "threads";
  auto backend = deltasync::io::make_io_backend(loop, bo);
  if (!backend) {
    std::fprintf(stderr, "consumer: %s\n", backend.err().describe().c_str());
    return 1;
  }
  deltasync::http::push_client_options po;
  po.timeout_ms = 2000;
  deltasync::http::push_client client(loop, po);
  auto got = client.get("http://127.0.0.1:1", "/status");
  if (got.http_status != 0 || got.transport_error.empty()) {
    std::fprintf(stderr, "consumer: expected a connection error from port 1\n");
    return 1;
  }
  std::printf("consumer: deltasync %s, %zu tensors, first xxh3_128 %s, cuda=%d, port 1: %s\n", DELTASYNC_VERSION,
              (*store)->size(), first.c_str(), DELTASYNC_HAVE_CUDA, got.transport_error.c_str());
  return first.size() == 32 ? 0 : 1;
}
