// How the Sender reaches receivers: an interface implemented by src/http's push_client (and by fakes in
// tests), so src/sync does not depend on src/http.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"

namespace deltasync {

struct push_outcome {
  std::string url;
  unsigned http_status = 0;  // 0 when no HTTP answer arrived (connect failure, timeout)
  std::string body;          // the receiver's JSON answer
  std::string transport_error;  // set when http_status == 0
  double elapsed_s = 0;
  bool ok() const noexcept { return http_status == 200; }
};

class push_transport {
 public:
  virtual ~push_transport() = default;
  // POSTs `json_body` to `path` on every url concurrently; returns one outcome per url, in order.
  // `sync_bytes`: what each receiver reads to answer (the sync's files; 0 when unknown), by which a transport
  // may size its timeout.
  virtual std::vector<push_outcome> post_all(const std::vector<std::string>& urls, const std::string& path,
                                             const std::string& json_body, uint64_t sync_bytes = 0) = 0;
};

}  // namespace deltasync
