// One pass of scattered writes: the floor of any receiver's apply. Writes `changed` bf16 values at ascending
// random positions (mean gap numel / changed) into a buffer of `bytes` bytes already in memory, on one thread,
// and prints the median of `reps` passes as JSON. bench/receiver_bench.sh adds it to the raw read of the same
// files (the 2-core target: POST -> commit <= 1.3 x (raw read + this)).
// Usage: scatter_pass BYTES CHANGED [REPS]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: scatter_pass BYTES CHANGED [REPS]\n");
    return 2;
  }
  const uint64_t bytes = std::strtoull(argv[1], nullptr, 10);
  const uint64_t changed = std::strtoull(argv[2], nullptr, 10);
  const int reps = argc > 3 ? std::atoi(argv[3]) : 5;
  const uint64_t numel = bytes / 2;
  if (numel == 0 || changed == 0 || changed > numel) {
    std::fprintf(stderr, "scatter_pass: need 0 < CHANGED <= BYTES / 2\n");
    return 2;
  }
  std::vector<uint16_t> dest(numel, 0x3F80);
  std::vector<uint64_t> pos(changed);
  std::vector<uint16_t> vals(changed);
  std::mt19937_64 rng(1);
  const uint64_t gap = numel / changed;
  uint64_t at = 0;
  for (uint64_t k = 0; k < changed; ++k) {
    pos[k] = std::min(at + rng() % gap, numel - 1);
    at += gap;
    vals[k] = static_cast<uint16_t>(rng());
  }
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (uint64_t k = 0; k < changed; ++k) dest[pos[k]] = vals[k];
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  uint64_t sum = 0;
  for (uint64_t k = 0; k < numel; k += 4096) sum += dest[k];  // keep the writes
  std::printf("{\"scatter_ms\": %.3f, \"changed\": %llu, \"bytes\": %llu, \"check\": %llu}\n", ms[ms.size() / 2],
              static_cast<unsigned long long>(changed), static_cast<unsigned long long>(bytes),
              static_cast<unsigned long long>(sum % 1000));
  return 0;
}
