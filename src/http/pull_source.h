// The HTTP pull transport (receiver side): fetches a sync's files from a plain HTTP file server (deltasync
// serve-files, nginx, ...) with Range requests of chunk_bytes over up to read_workers keep-alive connections,
// straight into the receiver's pool buffers, and hands the pieces to the receiver's apply queue like the disk
// reader does. Implements sync::remote_file_opener; Boost stays inside pull_source.cc.
//
// Protocol, per sync: one HEAD per file (its Content-Length is the file's size), then GETs with
// "Range: bytes=a-b". Every answer is checked: 206 with a Content-Range naming exactly the range asked and the
// announced size (a 200 is accepted only for a whole file asked in one range), a Content-Length equal to the
// range's length, and the whole body. Anything else fails the sync with a message naming the URL:
// 404 -> errc::not_found; an unreachable server, another status, a short body, a wrong length or range, a
// timeout -> errc::upstream_error (HTTP 502 from /sync); a file over max_file_bytes -> errc::limit_exceeded.
// A server that turns a request away (503, or over its connection limit) is retried with back-off
// (pull_options::retry_*).
// Before any of that, a base_url that options.allow does not cover is errc::forbidden_url (HTTP 403), and
// nothing is sent to it.
//
// Threading: everything runs on the event loop's thread (open() is called there, by the receiver).
#pragma once

#include <cstdint>
#include <string>

#include "base/result.h"
#include "http/pull_allow.h"
#include "sync/file_source.h"

namespace deltasync::io {
class event_loop;
}

namespace deltasync::http {

struct pull_options {
  uint32_t timeout_ms = 60'000;  // each step of a request: connect, send, header, body
  // A request the server turns away (503 Service Unavailable, or a fresh connection it accepted and dropped
  // before answering: a server over its connection limit) is sent again after a back-off that doubles from
  // retry_min_ms to retry_max_ms (at least the answer's Retry-After up to that cap, with jitter), for as long
  // as its first attempt is less than retry_for_ms ago; then the pull fails (502) saying how often it was
  // turned away. The job's other connections go on meanwhile. A refused connection (nothing listening), a
  // timeout, another status or a broken body are never retried.
  uint32_t retry_min_ms = 20;
  uint32_t retry_max_ms = 1'000;
  uint32_t retry_for_ms = 30'000;
  // The servers a sync may name (serve's pull-allow; pull_allow.h). open() refuses any other base_url with
  // errc::forbidden_url (HTTP 403) before a single request is sent. Empty (the default): every pull is refused.
  pull_allowlist allow;
};

class pull_opener final : public remote_file_opener {
 public:
  pull_opener(io::event_loop& loop, pull_options options = {});
  void open(const remote_fetch& what, io::buffer_pool& pool, std::function<void(result<remote_files>)> done) override;

 private:
  io::event_loop& loop_;
  pull_options options_;
};

// One GET of `url` over one connection, its body read and dropped: the raw link throughput measurement of
// `deltasync bench`. Blocks the calling thread (never the loop thread). Returns the body bytes and the
// seconds from the request to the last byte (connection set-up excluded).
struct fetch_result {
  uint64_t bytes = 0;
  double seconds = 0;
};
result<fetch_result> fetch_discard(io::event_loop& loop, const std::string& url, uint32_t timeout_ms = 600'000);

}  // namespace deltasync::http
