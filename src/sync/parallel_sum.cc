#include "sync/parallel_sum.h"

#include <algorithm>
#include <thread>

#include "codec/sum_digest.h"

namespace deltasync {

std::vector<digest128> parallel_sum_digests(std::span<const sum_input> inputs) {
  struct slice {
    size_t input;
    uint64_t first, count;
  };
  constexpr uint64_t kSliceBytes = 1u << 20;  // ~1 ms of work: a Sender's 8 MB tensor still spreads
  std::vector<slice> slices;
  uint64_t total = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const uint32_t eb = inputs[i].elem_bytes;
    if (eb != 1 && eb != 2 && eb != 4 && eb != 8) continue;
    const uint64_t n = inputs[i].bytes.size() / eb, per = std::max<uint64_t>(1, kSliceBytes / eb);
    for (uint64_t first = 0; first < n; first += per) slices.push_back({i, first, std::min(per, n - first)});
    total += inputs[i].bytes.size();
  }
  std::vector<digest128> parts(slices.size());
  auto work = [&](size_t from, size_t step) {
    for (size_t s = from; s < slices.size(); s += step) {
      const slice& c = slices[s];
      const uint32_t eb = inputs[c.input].elem_bytes;
      parts[s] = sum_digest_part(inputs[c.input].bytes.subspan(c.first * eb, c.count * eb), eb, c.first);
    }
  };
  const size_t threads = total < (4u << 20) ? 1 : std::min<size_t>(slices.size(), std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work, t, threads);
  work(0, threads);
  for (auto& th : pool) th.join();
  std::vector<digest128> sums(inputs.size());
  for (size_t s = 0; s < slices.size(); ++s) sums[slices[s].input] = sum_add(sums[slices[s].input], parts[s]);
  return sums;
}

}  // namespace deltasync
