// The Sender's fleet state file (acknowledged versions) and the retention of published version dirs.
#include "sync/fleet_state.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace deltasync {
namespace {

namespace fs = std::filesystem;

TEST(FleetState, RoundTripsAndRefusesBadInput) {
  fleet_state s;
  s.published = 7;
  s.acked = {{"http://a:1", 7}, {"http://b:2", 5}};
  auto back = parse_fleet_state(serialize_fleet_state(s));
  ASSERT_TRUE(back.ok()) << back.err().describe();
  EXPECT_EQ(back->published, 7u);
  EXPECT_EQ(back->acked, s.acked);
  EXPECT_FALSE(parse_fleet_state("[]").ok());
  EXPECT_FALSE(parse_fleet_state(R"({"format": "other", "published": 1, "acked": {}})").ok());
  auto neg = parse_fleet_state(R"({"format": "deltasync-fleet/1", "published": 1, "acked": {"u": -1}})");
  ASSERT_FALSE(neg.ok());
  EXPECT_NE(neg.err().message.find("'u'"), std::string::npos) << neg.err().message;
}

TEST(FleetState, MinAckedCountsUnknownReceiversAtTheBase) {
  fleet_state s;
  s.acked = {{"http://a:1", 7}, {"http://b:2", 5}};
  EXPECT_EQ(s.min_acked({"http://a:1", "http://b:2"}, 7), 5u);
  EXPECT_EQ(s.min_acked({"http://c:3"}, 3), 3u);  // c is new: it holds the base
  EXPECT_EQ(fleet_state{}.min_acked({}, 4), 4u);
}

TEST(FleetState, PrunesOnlyPublishedDirsAtOrBelowAndKeepsTheNewest) {
  const fs::path d = fs::temp_directory_path() / ("fleet_state_test_" + std::to_string(::getpid()));
  fs::remove_all(d);
  for (int v = 1; v <= 4; ++v) {
    char name[32];
    std::snprintf(name, sizeof name, "weight_v%06d", v);
    fs::create_directories(d / name);
    if (v != 2) std::ofstream(d / name / "published.json") << "{}";  // v2: no marker (left alone)
  }
  EXPECT_TRUE(version_published(d.string(), 1));
  EXPECT_FALSE(version_published(d.string(), 2));
  EXPECT_EQ(prune_published(d.string(), 3, 3), std::vector<uint64_t>{1});
  EXPECT_FALSE(fs::exists(d / "weight_v000001"));
  EXPECT_TRUE(fs::exists(d / "weight_v000002"));
  EXPECT_TRUE(fs::exists(d / "weight_v000003"));
  EXPECT_TRUE(fs::exists(d / "weight_v000004"));
  EXPECT_EQ(prune_published(d.string(), 4, 4), std::vector<uint64_t>{3});
  fleet_state s;
  s.published = 4;
  ASSERT_TRUE(save_fleet_state(d.string(), s).ok());
  auto loaded = load_fleet_state(d.string());
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->published, 4u);
  EXPECT_EQ(load_fleet_state((d / "none").string())->published, 0u);  // missing: empty state
  fs::remove_all(d);
}

}  // namespace
}  // namespace deltasync
