// `deltasync bench` pieces shared by its three files: the child processes and link baselines
// (bench_link.cc), and the report — table, recommendation, JSON, SVG chart (bench_report.cc).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/result.h"

namespace deltasync::cli {

// A deltasync child process (serve, serve-files), optionally inside a network namespace (`ip netns exec`).
// Stopped with SIGTERM (then waited for) by stop() or the destructor.
class bench_child {
 public:
  bench_child() = default;
  ~bench_child() { stop(); }
  bench_child(const bench_child&) = delete;
  bench_child& operator=(const bench_child&) = delete;
  // Runs `deltasync ARGS... --port-file PORT_FILE` and waits (up to timeout_s) for the port it bound.
  result<uint16_t> start(const std::vector<std::string>& args, const std::string& port_file, const std::string& netns,
                         int timeout_s);
  void stop();

 private:
  pid_t pid_ = -1;
};

// Sequential read throughput of `path` in 4 MiB blocks (O_DIRECT when the filesystem allows, else buffered
// after dropping the file's cached pages): bytes per second.
result<double> disk_read_bps(const std::string& path);
// Writes `bytes` of incompressible data to `path` (fsync'ed); returns bytes per second.
result<double> disk_write_bps(const std::string& path, uint64_t bytes);

// One measured sync.
struct bench_sample {
  std::string model, path, enc;
  double lr = 0, density = 0;
  uint64_t params = 0, changed = 0, wire_bytes = 0, files = 0;
  double diff_encode_s = 0, write_s = 0;                   // sender
  double sync_s = 0;                                       // POST /sync -> answer (receiver: transfer, decode, apply)
  double read_s = 0, decode_s = 0, apply_s = 0, verify_s = 0;  // receiver stages (decode/apply: worker time)
  double link_bps = 0;                                     // the path's baseline, measured in this run
  double limit_s() const { return link_bps > 0 ? static_cast<double>(wire_bytes) / link_bps : 0; }
  double total_s() const { return diff_encode_s + write_s + sync_s; }
};

struct bench_summary_row {
  std::string model, path, enc;
  double lr = 0, density = 0, link_bps = 0;
  uint64_t wire_bytes = 0, files = 0;
  double diff_encode_s = 0, write_s = 0, sync_s = 0, sync_min_s = 0, sync_max_s = 0, read_s = 0, decode_s = 0,
         apply_s = 0, verify_s = 0, total_s = 0, limit_s = 0;
  int reps = 0;
  double ratio() const { return limit_s > 0 ? sync_s / limit_s : 0; }
  // The target: sync <= 1.15 x limit + 0.3 s.
  bool within_target() const { return sync_s <= 1.15 * limit_s + 0.3; }
};

// Medians per (model, lr, path, encoding).
std::vector<bench_summary_row> summarize(const std::vector<bench_sample>& samples);
// Prints the table and, per (model, lr, path), the recommended encoding (the smallest median end-to-end
// time: sender diff+encode+write plus the sync) to stdout.
void print_report(const std::vector<bench_summary_row>& rows);
// The recommended encoding per "model|lr|path" key.
std::map<std::string, std::string> recommendations(const std::vector<bench_summary_row>& rows);
result<bool> write_json(const std::string& path, const std::vector<bench_sample>& samples,
                        const std::vector<bench_summary_row>& rows, const std::string& machine_note);
// Sync time vs link bandwidth per encoding (one panel per model/lr): each curve is the measured non-link time
// plus wire bytes / bandwidth; the dots are the measured syncs on their links.
result<bool> write_svg(const std::string& path, const std::vector<bench_summary_row>& rows);

}  // namespace deltasync::cli
