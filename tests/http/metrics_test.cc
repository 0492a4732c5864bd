// The metrics registry's Prometheus text: HELP/TYPE per metric, counters, gauges, and histograms with
// cumulative buckets, +Inf, _sum and _count; parsed back line by line.
#include "base/metrics.h"

#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace deltasync {
namespace {

// Sample lines as name{labels} -> value; comments collected separately.
struct parsed_exposition {
  std::map<std::string, std::string> samples;
  std::vector<std::string> comments;
  std::vector<std::string> sample_order;
};

parsed_exposition parse(const std::string& text) {
  parsed_exposition p;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    EXPECT_FALSE(line.empty()) << "no blank lines in the exposition";
    if (line.rfind("#", 0) == 0) {
      p.comments.push_back(line);
      continue;
    }
    const auto sp = line.rfind(' ');
    EXPECT_NE(sp, std::string::npos) << line;
    const std::string key = line.substr(0, sp);
    EXPECT_EQ(p.samples.count(key), 0u) << "duplicate sample " << key;
    p.samples[key] = line.substr(sp + 1);
    p.sample_order.push_back(key);
  }
  EXPECT_TRUE(text.empty() || text.back() == '\n') << "the exposition ends with a newline";
  return p;
}

TEST(metrics_test, counter_and_gauge_render_with_help_and_type) {
  metrics_registry reg;
  auto& syncs = reg.counter("deltasync_syncs_ok_total", "Syncs committed.");
  auto& version = reg.gauge("deltasync_version", "Current store version.");
  syncs.add();
  syncs.add(4);
  version.set(12);
  const auto p = parse(reg.render());
  EXPECT_EQ(p.samples.at("deltasync_syncs_ok_total"), "5");
  EXPECT_EQ(p.samples.at("deltasync_version"), "12");
  const std::vector<std::string> want = {
      "# HELP deltasync_syncs_ok_total Syncs committed.", "# TYPE deltasync_syncs_ok_total counter",
      "# HELP deltasync_version Current store version.", "# TYPE deltasync_version gauge"};
  EXPECT_EQ(p.comments, want);
}

TEST(metrics_test, gauge_keeps_fractions) {
  metrics_registry reg;
  reg.gauge("g", "A gauge.").set(0.125);
  EXPECT_DOUBLE_EQ(std::stod(parse(reg.render()).samples.at("g")), 0.125);
}

TEST(metrics_test, histogram_buckets_are_cumulative_with_inf_sum_and_count) {
  metrics_registry reg;
  auto& h = reg.histogram("deltasync_apply_seconds", "Apply latency.", {0.1, 1, 10});
  for (double v : {0.05, 0.1, 0.5, 2.0, 20.0, 30.0}) h.observe(v);
  const auto p = parse(reg.render());
  EXPECT_EQ(p.samples.at("deltasync_apply_seconds_bucket{le=\"0.1\"}"), "2") << "le is inclusive";
  EXPECT_EQ(p.samples.at("deltasync_apply_seconds_bucket{le=\"1\"}"), "3");
  EXPECT_EQ(p.samples.at("deltasync_apply_seconds_bucket{le=\"10\"}"), "4");
  EXPECT_EQ(p.samples.at("deltasync_apply_seconds_bucket{le=\"+Inf\"}"), "6");
  EXPECT_EQ(p.samples.at("deltasync_apply_seconds_count"), "6");
  EXPECT_NEAR(std::stod(p.samples.at("deltasync_apply_seconds_sum")), 52.65, 1e-9);
  const std::vector<std::string> order = {
      "deltasync_apply_seconds_bucket{le=\"0.1\"}", "deltasync_apply_seconds_bucket{le=\"1\"}",
      "deltasync_apply_seconds_bucket{le=\"10\"}",  "deltasync_apply_seconds_bucket{le=\"+Inf\"}",
      "deltasync_apply_seconds_sum",                "deltasync_apply_seconds_count"};
  EXPECT_EQ(p.sample_order, order) << "buckets ascend, then +Inf, _sum, _count";
  ASSERT_EQ(p.comments.size(), 2u);
  EXPECT_EQ(p.comments[1], "# TYPE deltasync_apply_seconds histogram");
}

TEST(metrics_test, empty_histogram_renders_zeros) {
  metrics_registry reg;
  reg.histogram("h", "Empty.", latency_buckets_s());
  const auto p = parse(reg.render());
  EXPECT_EQ(p.samples.at("h_bucket{le=\"+Inf\"}"), "0");
  EXPECT_EQ(p.samples.at("h_count"), "0");
  EXPECT_EQ(p.samples.at("h_sum"), "0");
  EXPECT_EQ(p.samples.size(), latency_buckets_s().size() + 3);
}

TEST(metrics_test, concurrent_updates_are_all_counted) {
  metrics_registry reg;
  auto& c = reg.counter("c_total", "Counter.");
  auto& h = reg.histogram("h", "Histogram.", {1.0});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.add();
        h.observe(i % 2 ? 0.5 : 2.0);
      }
    });
  for (auto& th : threads) th.join();
  const auto p = parse(reg.render());
  EXPECT_EQ(p.samples.at("c_total"), "40000");
  EXPECT_EQ(p.samples.at("h_bucket{le=\"1\"}"), "20000");
  EXPECT_EQ(p.samples.at("h_count"), "40000");
  EXPECT_DOUBLE_EQ(std::stod(p.samples.at("h_sum")), 20000 * 0.5 + 20000 * 2.0);
}

TEST(metrics_test, latency_buckets_ascend) {
  const auto b = latency_buckets_s();
  ASSERT_FALSE(b.empty());
  for (size_t i = 1; i < b.size(); ++i) EXPECT_LT(b[i - 1], b[i]);
}

}  // namespace
}  // namespace deltasync
