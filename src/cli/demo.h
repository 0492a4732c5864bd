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
  std::vector<std::string> encodings{"indices", "deltas", "deltas_zstd", "compact"};  // offline: each of them
  std::string encoding = "deltas";                                       // service demo
  std::string format = "native";                                         // service: native | slime
  uint64_t bucket_bytes = 512ull << 20;
  std::string dir;   // where files go; a temp dir removed at the end when empty
  std::string keep;  // keep every file here (offline: plus base.safetensors and new.safetensors)
  std::string pre_push_hook;
  uint64_t seed = 1;
  unsigned threads = 2;
  std::string transport = "disk";  // service demo: disk, or nccl (sender on GPU 0, receiver on GPU 1)
};

// Exit status of a demo that cannot run here (the nccl variant without two GPUs): CTest's skip code.
inline constexpr int demo_skipped = 77;

int run_offline_demo(const demo_options& opt);
int run_service_demo(const demo_options& opt);

}  // namespace deltasync::cli
