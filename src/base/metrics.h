// Process metrics in the Prometheus text format: counters, gauges and fixed-bucket histograms. Thread-safe
// (atomics); registration happens at start-up, updates from any thread, rendering from the loop thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace deltasync {

class metric_counter {
 public:
  void add(uint64_t n = 1) noexcept { v_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

class metric_gauge {
 public:
  void set(double v) noexcept { v_.store(v, std::memory_order_relaxed); }
  double value() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0};
};

class metric_histogram {
 public:
  explicit metric_histogram(std::vector<double> upper_bounds);
  void observe(double v) noexcept;
  const std::vector<double>& bounds() const noexcept { return bounds_; }
  // Cumulative counts per bound (Prometheus `le` semantics), then +Inf; sum and count.
  void snapshot(std::vector<uint64_t>& cumulative, double& sum, uint64_t& count) const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1 (the last is +Inf)
  std::atomic<double> sum_{0};
  std::atomic<uint64_t> count_{0};
};

// Owns metrics by name; render() writes every one with its HELP and TYPE lines.
class metrics_registry {
 public:
  metrics_registry();
  ~metrics_registry();
  metrics_registry(const metrics_registry&) = delete;
  metrics_registry& operator=(const metrics_registry&) = delete;
  metric_counter& counter(const std::string& name, const std::string& help);
  metric_gauge& gauge(const std::string& name, const std::string& help);
  metric_histogram& histogram(const std::string& name, const std::string& help, std::vector<double> bounds);
  std::string render() const;

 private:
  struct entry;
  mutable std::mutex mu_;  // guards the list only; values are atomics
  std::vector<std::unique_ptr<entry>> entries_;
};

// Bounds for latencies in seconds: 1 ms .. ~60 s, roughly x2.5 apart.
std::vector<double> latency_buckets_s();

}  // namespace deltasync
