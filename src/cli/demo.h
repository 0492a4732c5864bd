// The two halves of `deltasync demo`: the service demo (default) and the codec-only run (--offline).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace deltasync::cli {

struct demo_options {
  std::string model = "qwen2.5-0.5b";
  int steps = 3;
  double lr = 1e-6;
  bool offline = false;
  std::vector<std::string> encodings{"indices", "deltas", "deltas_zstd"};  // offline: each of them
  std::string encoding = "deltas";                                       // service demo
  std::string format = "native";                                         // service: native | slime
  uint64_t bucket_bytes = 512ull << 20;
  std::string dir;   // where files go; a temp dir removed at the end when empty
  std::string keep;  // keep every file here (offline: plus base.safetensors and new.safetensors)
  std::string pre_push_hook;
  uint64_t seed = 1;
  unsigned threads = 2;
};

int run_offline_demo(const demo_options& opt);
int run_service_demo(const demo_options& opt);

}  // namespace deltasync::cli
