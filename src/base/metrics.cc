// Prometheus text rendering and the histogram's lock-free updates.
#include "base/metrics.h"

#include <cstdio>

#include "base/check.h"

namespace deltasync {

struct metrics_registry::entry {
  std::string name, help, type;
  std::unique_ptr<metric_counter> c;
  std::unique_ptr<metric_gauge> g;
  std::unique_ptr<metric_histogram> h;
};

metrics_registry::metrics_registry() = default;
metrics_registry::~metrics_registry() = default;

metric_histogram::metric_histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 1; i < bounds_.size(); ++i) DS_CHECK(bounds_[i - 1] < bounds_[i], "histogram bounds must ascend");
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void metric_histogram::observe(double v) noexcept {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  double cur = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
  count_.fetch_add(1, std::memory_order_relaxed);
}

void metric_histogram::snapshot(std::vector<uint64_t>& cumulative, double& sum, uint64_t& count) const {
  cumulative.assign(bounds_.size() + 1, 0);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    cumulative[i] = running;
  }
  sum = sum_.load(std::memory_order_relaxed);
  count = count_.load(std::memory_order_relaxed);
}

metric_counter& metrics_registry::counter(const std::string& name, const std::string& help) {
  std::lock_guard lock(mu_);
  auto e = std::make_unique<entry>();
  e->name = name, e->help = help, e->type = "counter";
  e->c = std::make_unique<metric_counter>();
  auto& ref = *e->c;
  entries_.push_back(std::move(e));
  return ref;
}

metric_gauge& metrics_registry::gauge(const std::string& name, const std::string& help) {
  std::lock_guard lock(mu_);
  auto e = std::make_unique<entry>();
  e->name = name, e->help = help, e->type = "gauge";
  e->g = std::make_unique<metric_gauge>();
  auto& ref = *e->g;
  entries_.push_back(std::move(e));
  return ref;
}

metric_histogram& metrics_registry::histogram(const std::string& name, const std::string& help,
                                              std::vector<double> bounds) {
  std::lock_guard lock(mu_);
  auto e = std::make_unique<entry>();
  e->name = name, e->help = help, e->type = "histogram";
  e->h = std::make_unique<metric_histogram>(std::move(bounds));
  auto& ref = *e->h;
  entries_.push_back(std::move(e));
  return ref;
}

std::string metrics_registry::render() const {
  std::lock_guard lock(mu_);
  std::string out;
  char buf[512];
  for (const auto& e : entries_) {
    out += "# HELP " + e->name + " " + e->help + "\n# TYPE " + e->name + " " + e->type + "\n";
    if (e->c) {
      std::snprintf(buf, sizeof buf, "%s %llu\n", e->name.c_str(), static_cast<unsigned long long>(e->c->value()));
      out += buf;
    } else if (e->g) {
      std::snprintf(buf, sizeof buf, "%s %.17g\n", e->name.c_str(), e->g->value());
      out += buf;
    } else {
      std::vector<uint64_t> cum;
      double sum = 0;
      uint64_t count = 0;
      e->h->snapshot(cum, sum, count);
      for (size_t i = 0; i < cum.size(); ++i) {
        if (i < e->h->bounds().size())
          std::snprintf(buf, sizeof buf, "%s_bucket{le=\"%g\"} %llu\n", e->name.c_str(), e->h->bounds()[i],
                        static_cast<unsigned long long>(cum[i]));
        else
          std::snprintf(buf, sizeof buf, "%s_bucket{le=\"+Inf\"} %llu\n", e->name.c_str(),
                        static_cast<unsigned long long>(cum[i]));
        out += buf;
      }
      std::snprintf(buf, sizeof buf, "%s_sum %.17g\n%s_count %llu\n", e->name.c_str(), sum, e->name.c_str(),
                    static_cast<unsigned long long>(count));
      out += buf;
    }
  }
  return out;
}

std::vector<double> latency_buckets_s() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60};
}

}  // namespace deltasync
