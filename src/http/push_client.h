// The push client: one HTTP POST of the same JSON body to many receivers at once (fan-out), each with a
// connect+response timeout, collecting every receiver's answer. Runs on the event loop; Boost stays
// inside push_client.cc. Implements sync::push_transport for the Sender.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sync/push_transport.h"

namespace deltasync::io {
class event_loop;
}

namespace deltasync::http {

struct push_client_options {
  // Whole request: connect, send, wait for the answer. 0: sized to the sync, push_timeout_ms_for(sync_bytes).
  uint32_t timeout_ms = 0;
  std::string bearer_token;       // sent as "Authorization: Bearer ..." when set
  uint64_t max_response_bytes = 1 << 20;
};

// The timeout of a push with timeout_ms 0: 15 s, plus 1 s per 50 MB the receivers read (a receiver that
// reads slower than 50 MB/s, or waits longer than 15 s to start, is as good as down); 600 s when the bytes
// are unknown (0: GETs, NCCL's /sync, callers that do not say).
uint32_t push_timeout_ms_for(uint64_t sync_bytes) noexcept;

class push_client final : public push_transport {
 public:
  push_client(io::event_loop& loop, push_client_options options);
  // Blocks the calling thread (never the loop thread) until every receiver answered or timed out.
  // `urls` are "http://host:port" (a path after the port is prepended to `path`). Every outcome has an
  // HTTP status, or http_status 0 and a transport_error: an unsupported or malformed url (no network
  // touched), resolve/connect failure (e.g. "connection refused"), timeout_ms elapsed, or an answer over
  // max_response_bytes. Each request uses its own connection ("Connection: close").
  std::vector<push_outcome> post_all(const std::vector<std::string>& urls, const std::string& path,
                                     const std::string& json_body, uint64_t sync_bytes = 0) override;
  // One GET (e.g. /checksums, /status) with the same timeout, token and limits; blocks like post_all.
  push_outcome get(const std::string& url, const std::string& path);

 private:
  std::vector<push_outcome> request_all(bool get, const std::vector<std::string>& urls, const std::string& path,
                                        const std::string& json_body, uint64_t sync_bytes);

  io::event_loop& loop_;
  push_client_options options_;
};

}  // namespace deltasync::http
