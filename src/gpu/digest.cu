// XXH3-128 on the device, equal to libxxhash's XXH3_128bits (default secret) for every input length.
//
// For inputs over 240 bytes XXH3 consumes 1024-byte blocks of 16 stripes; within a block each of the 8
// accumulator lanes only receives additions, so a block's contribution S_b (8 lanes) depends on its bytes
// alone. The sums kernel computes every S_b in parallel (half a warp per block, one stripe per thread); the
// chain kernel then runs acc = scramble(acc + S_b) over the blocks in order (one thread per lane, the only
// sequential part), and its lane 0 finishes: the last partial block's stripes, the last stripe, and the
// 128-bit merge. Inputs of up to 240 bytes are hashed on the host.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "base/check.h"
#include "gpu/cuda_check.h"
#include "gpu/kernels.h"

namespace deltasync::gpu {
namespace detail {
const unsigned char* xxh3_default_secret() noexcept;
unsigned xxh3_default_secret_size() noexcept;
}  // namespace detail

namespace {

constexpr uint64_t kPrime32_1 = 0x9E3779B1U;
constexpr uint64_t kPrime32_2 = 0x85EBCA77U;
constexpr uint64_t kPrime32_3 = 0xC2B2AE3DU;
constexpr uint64_t kPrime64_1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kPrime64_2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kPrime64_3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kPrime64_4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kPrime64_5 = 0x27D4EB2F165667C5ULL;
constexpr uint64_t kBlockBytes = 1024;
constexpr uint64_t kMidSizeMax = 240;

__constant__ unsigned char c_secret[192];

// One region's share of a launch: blocks [block_begin, block_end) of the region; sums at sum_base.
struct job {
  const unsigned char* data;
  uint64_t len;
  uint64_t block_begin, block_end;
  uint64_t sum_base;  // index (in blocks) of this job's first S_b in the sums buffer
  uint32_t acc_slot;  // region index: its accumulators live at acc[8 * slot]
  uint32_t first, last;
};

__device__ __forceinline__ uint64_t read64_unaligned(const unsigned char* p) {
  uint64_t v = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

__device__ __forceinline__ uint64_t secret64(int byte_offset) { return read64_unaligned(c_secret + byte_offset); }

__device__ __forceinline__ uint64_t mul32to64(uint64_t k) { return (k & 0xFFFFFFFFULL) * (k >> 32); }

__device__ __forceinline__ uint64_t fold64(uint64_t a, uint64_t b) { return __umul64hi(a, b) ^ (a * b); }

__device__ __forceinline__ uint64_t avalanche(uint64_t h) {
  h ^= h >> 37;
  h *= 0x165667919E3779F9ULL;
  h ^= h >> 32;
  return h;
}

// Half a warp per 1 KiB block: thread s (0..15) takes stripe s, computes its 8 lane contributions, and the
// 16 threads sum them with shuffles; thread j < 8 writes lane j's sum.
__global__ void __launch_bounds__(256) sums_kernel(const job* jobs, int njobs, uint64_t total_blocks, uint64_t* sums) {
  __shared__ uint64_t key[24];
  if (threadIdx.x < 24) key[threadIdx.x] = secret64(8 * static_cast<int>(threadIdx.x));
  __syncthreads();
  const int s = threadIdx.x & 15;
  // The loop is uniform per warp (the shuffles need all 32 lanes): each warp takes two blocks per step.
  const uint64_t warps = (uint64_t{gridDim.x} * blockDim.x) / 32;
  for (uint64_t base = 2 * ((uint64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 32); base < total_blocks;
       base += 2 * warps) {
    const uint64_t g = base + ((threadIdx.x & 31) >> 4);
    const bool valid = g < total_blocks;
    uint64_t v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (valid) {
      int lo = 0, hi = njobs - 1;
      while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (jobs[mid].sum_base <= g) lo = mid; else hi = mid - 1;
      }
      const job& jb = jobs[lo];
      const unsigned char* p = jb.data + (jb.block_begin + (g - jb.sum_base)) * kBlockBytes + 64 * s;
      if ((reinterpret_cast<uintptr_t>(p) & 15) == 0) {
        const uint4* q = reinterpret_cast<const uint4*>(p);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          uint4 w = __ldg(q + i);
          v[2 * i] = (uint64_t{w.y} << 32) | w.x;
          v[2 * i + 1] = (uint64_t{w.w} << 32) | w.z;
        }
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = read64_unaligned(p + 8 * i);
      }
    }
    uint64_t c[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) c[j] = v[j ^ 1] + mul32to64(v[j] ^ key[s + j]);
#pragma unroll
    for (int off = 8; off >= 1; off >>= 1) {
#pragma unroll
      for (int j = 0; j < 8; ++j) c[j] += __shfl_xor_sync(0xFFFFFFFFu, c[j], off, 16);
    }
    uint64_t mine = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (j == s) mine = c[j];
    if (valid && s < 8) sums[g * 8 + s] = mine;
  }
}

__device__ void accumulate_512(uint64_t* acc, const unsigned char* p, int secret_off) {
  for (int j = 0; j < 8; ++j) {
    const uint64_t v = read64_unaligned(p + 8 * j);
    const uint64_t k = v ^ secret64(secret_off + 8 * j);
    acc[j ^ 1] += v;
    acc[j] += mul32to64(k);
  }
}

__device__ uint64_t merge_accs(const uint64_t* acc, int secret_off, uint64_t start) {
  uint64_t r = start;
  for (int i = 0; i < 4; ++i)
    r += fold64(acc[2 * i] ^ secret64(secret_off + 16 * i), acc[2 * i + 1] ^ secret64(secret_off + 16 * i + 8));
  return avalanche(r);
}

// One block of two warps per job. Warp 1 streams the job's sums into shared memory, a chunk ahead; lanes
// 0..7 of warp 0 run the chain of their accumulator lane out of shared memory (the chain's step is a few
// dependent integer operations, so it must not wait on device-memory latency).
constexpr int kChainChunk = 256;  // blocks per shared-memory chunk: 16 KiB, double-buffered

__device__ __forceinline__ void chain_job(const job jb, const uint64_t* sums, uint64_t* accs, uint64_t* out) {
  __shared__ __align__(16) uint64_t buf[2][kChainChunk * 8];
  __shared__ uint64_t tail_acc[8];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const uint64_t n = jb.block_end - jb.block_begin;
  const uint64_t* sp = sums + jb.sum_base * 8;
  const uint64_t chunks = (n + kChainChunk - 1) / kChainChunk;
  auto load_chunk = [&](uint64_t c) {
    const uint64_t b0 = c * kChainChunk;
    const uint64_t words = ((n - b0) < uint64_t{kChainChunk} ? (n - b0) : uint64_t{kChainChunk}) * 8;  // even: 8 words per block
    const uint2* src = reinterpret_cast<const uint2*>(sp + b0 * 8);
    uint2* dst = reinterpret_cast<uint2*>(buf[c & 1]);
    for (uint64_t w = lane; w < words; w += 32) dst[w] = src[w];
  };
  if (warp == 1 && chunks > 0) load_chunk(0);
  __syncthreads();
  const uint64_t init[8] = {kPrime32_3, kPrime64_1, kPrime64_2, kPrime64_3, kPrime64_4, kPrime32_2, kPrime64_5, kPrime32_1};
  uint64_t a = 0;
  if (warp == 0 && lane < 8) {
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (j == lane) a = init[j];
    if (!jb.first) a = accs[8 * jb.acc_slot + lane];
  }
  const uint64_t key = warp == 0 && lane < 8 ? secret64(128 + 8 * lane) : 0;
  for (uint64_t c = 0; c < chunks; ++c) {
    if (warp == 1 && c + 1 < chunks) load_chunk(c + 1);
    if (warp == 0 && lane < 8) {
      const uint64_t* b = buf[c & 1] + lane;
      const int m = static_cast<int>(((n - c * kChainChunk) < uint64_t{kChainChunk} ? (n - c * kChainChunk) : uint64_t{kChainChunk}));
      int k = 0;
      for (; k + 4 <= m; k += 4) {
        const uint64_t s0 = b[8 * k], s1 = b[8 * k + 8], s2 = b[8 * k + 16], s3 = b[8 * k + 24];
        a += s0; a ^= a >> 47; a ^= key; a *= kPrime32_1;
        a += s1; a ^= a >> 47; a ^= key; a *= kPrime32_1;
        a += s2; a ^= a >> 47; a ^= key; a *= kPrime32_1;
        a += s3; a ^= a >> 47; a ^= key; a *= kPrime32_1;
      }
      for (; k < m; ++k) {
        a += b[8 * k]; a ^= a >> 47; a ^= key; a *= kPrime32_1;
      }
    }
    __syncthreads();
  }
  if (warp == 0 && lane < 8) {
    if (!jb.last) accs[8 * jb.acc_slot + lane] = a;
    tail_acc[lane] = a;
  }
  __syncthreads();
  if (!jb.last || threadIdx.x != 0) return;
  uint64_t acc[8];
  for (int j = 0; j < 8; ++j) acc[j] = tail_acc[j];
  const uint64_t len = jb.len;
  const uint64_t nb = (len - 1) / kBlockBytes;
  const uint64_t stripes = ((len - 1) - kBlockBytes * nb) / 64;
  const unsigned char* tail = jb.data + nb * kBlockBytes;
  for (uint64_t k = 0; k < stripes; ++k) accumulate_512(acc, tail + 64 * k, static_cast<int>(8 * k));
  accumulate_512(acc, jb.data + len - 64, 192 - 64 - 7);
  const uint64_t low = merge_accs(acc, 11, len * kPrime64_1);
  const uint64_t high = merge_accs(acc, 192 - 64 - 11, ~(len * kPrime64_2));
  out[2 * jb.acc_slot] = high;
  out[2 * jb.acc_slot + 1] = low;
}

__global__ void __launch_bounds__(64) chain_kernel(const job* jobs, int njobs, const uint64_t* sums, uint64_t* accs,
                                                   uint64_t* out) {
  if (static_cast<int>(blockIdx.x) >= njobs) return;
  chain_job(jobs[blockIdx.x], sums, accs, out);
}

// One whole region (first and last), its job by value: the chain of digester::start, queued on a side stream
// after the region's bytes were read (jb.data then points at a copy of the region's tail).
__global__ void __launch_bounds__(64) chain_one_kernel(const job jb, const uint64_t* sums, uint64_t* out) {
  chain_job(jb, sums, nullptr, out);
}

}  // namespace

struct digester::impl {
  // One start()ed digest: its own sums and tail copy (reused from `spare` when large enough), its result.
  struct pending {
    device_buffer sums;  // the region's S_b, then the tail copy, then 16 bytes of result
    pinned_buffer result;
    std::unique_ptr<event> done;
    uint64_t sums_bytes = 0;
    bool ready = false;  // `value` holds the digest (hashed on the host or synchronously, or retired)
    digest128 value{};
  };
  std::map<uint64_t, pending> started;
  std::deque<uint64_t> order;   // tickets whose chains may still run, oldest first
  std::vector<device_buffer> spare;
  std::vector<pinned_buffer> spare_results;
  std::vector<std::unique_ptr<stream>> chain_streams;
  uint64_t next_ticket = 1, pending_sums = 0;
  uint64_t max_pending_bytes = 1ull << 30;
  status retire_oldest();

  device_buffer sums;      // S_b of one launch
  device_buffer accs;      // 8 lanes per region, carried between launches
  device_buffer out;       // 2 words per region
  device_buffer jobs_dev;
  pinned_buffer jobs_host;
  pinned_buffer out_host;
  bool secret_loaded = false;
  // Copies libxxhash's default secret into constant memory, once.
  status load_secret() {
    if (secret_loaded) return {};
    DS_CHECK(detail::xxh3_default_secret_size() == 192, "libxxhash's default secret is not 192 bytes");
    DS_CUDA_TRY(cudaMemcpyToSymbol(c_secret, detail::xxh3_default_secret(), 192));
    secret_loaded = true;
    return {};
  }
  uint64_t max_blocks_per_launch = (256ull << 20) / 64;  // 256 MiB of sums: 4 GiB of input per launch
};

digester::digester(uint64_t max_sums_bytes, uint64_t max_pending_bytes) : impl_(new impl) {
  impl_->max_blocks_per_launch = std::max<uint64_t>(1, max_sums_bytes / 64);
  impl_->max_pending_bytes = max_pending_bytes;
}
digester::~digester() { delete impl_; }

result<digest128> digester::digest(const void* data, uint64_t bytes, stream& s) {
  std::pair<const void*, uint64_t> r{data, bytes};
  digest128 d;
  DS_TRY_STATUS(digest_many({&r, 1}, {&d, 1}, s));
  return d;
}

result<uint64_t> digester::digest64(const void* data, uint64_t bytes, stream& s) {
  if (bytes <= kMidSizeMax) {
    unsigned char buf[kMidSizeMax];
    cudaStream_t cs = static_cast<cudaStream_t>(s.native());
    if (bytes > 0) DS_CUDA_TRY(cudaMemcpyAsync(buf, data, bytes, cudaMemcpyDeviceToHost, cs));
    DS_CUDA_TRY(cudaStreamSynchronize(cs));
    return xxh3_64(byte_span(reinterpret_cast<const std::byte*>(buf), bytes));
  }
  DS_ASSIGN_OR_RETURN(digest128 d, digest(data, bytes, s));
  return d.low;
}

status digester::digest_many(std::span<const std::pair<const void*, uint64_t>> regions, std::span<digest128> out,
                             stream& s) {
  DS_CHECK(regions.size() == out.size(), "digest_many: one output per region");
  impl& m = *impl_;
  cudaStream_t cs = static_cast<cudaStream_t>(s.native());
  DS_TRY_STATUS(m.load_secret());
  // Small regions: on the host.
  std::vector<size_t> longs;
  for (size_t i = 0; i < regions.size(); ++i) {
    const auto [p, n] = regions[i];
    if (n > kMidSizeMax) {
      longs.push_back(i);
      continue;
    }
    unsigned char buf[kMidSizeMax];
    if (n > 0) DS_CUDA_TRY(cudaMemcpyAsync(buf, p, n, cudaMemcpyDeviceToHost, cs));
    DS_CUDA_TRY(cudaStreamSynchronize(cs));
    out[i] = xxh3_128(byte_span(reinterpret_cast<const std::byte*>(buf), n));
  }
  if (longs.empty()) return {};
  const size_t nreg = longs.size();
  DS_TRY_STATUS(detail::ensure(m.accs, nreg * 64));
  DS_TRY_STATUS(detail::ensure(m.out, nreg * 16));
  DS_TRY_STATUS(detail::ensure_pinned(m.out_host, nreg * 16));

  // Plan launches: each takes whole or partial regions until its sums budget is full. A region's later
  // part goes to a later launch (its chain continues from the carried accumulators).
  std::vector<std::vector<job>> launches(1);
  uint64_t used = 0;
  for (size_t k = 0; k < nreg; ++k) {
    const auto [p, n] = regions[longs[k]];
    const uint64_t nb = (n - 1) / kBlockBytes;
    uint64_t b = 0;
    bool first = true;
    do {
      if (used == m.max_blocks_per_launch) {
        launches.emplace_back();
        used = 0;
      }
      const uint64_t take = std::min(nb - b, m.max_blocks_per_launch - used);
      job jb{static_cast<const unsigned char*>(p), n, b, b + take, used, static_cast<uint32_t>(k), first ? 1u : 0u, 0u};
      b += take;
      used += take;
      jb.last = b == nb ? 1u : 0u;
      launches.back().push_back(jb);
      first = false;
    } while (b < nb);
  }
  uint64_t max_used = 0;
  size_t max_jobs = 0;
  for (auto& l : launches) {
    uint64_t u = 0;
    for (auto& jb : l) u = std::max(u, jb.sum_base + (jb.block_end - jb.block_begin));
    max_used = std::max(max_used, u);
    max_jobs = std::max(max_jobs, l.size());
  }
  DS_TRY_STATUS(detail::ensure(m.sums, std::max<uint64_t>(max_used, 1) * 64));
  const size_t jobs_bytes = max_jobs * sizeof(job);
  DS_TRY_STATUS(detail::ensure(m.jobs_dev, jobs_bytes * launches.size()));
  DS_TRY_STATUS(detail::ensure_pinned(m.jobs_host, jobs_bytes * launches.size()));
  for (size_t li = 0; li < launches.size(); ++li) {
    const auto& l = launches[li];
    job* hj = reinterpret_cast<job*>(m.jobs_host.as<unsigned char>() + li * jobs_bytes);
    job* dj = reinterpret_cast<job*>(m.jobs_dev.as<unsigned char>() + li * jobs_bytes);
    std::copy(l.begin(), l.end(), hj);
    DS_CUDA_TRY(cudaMemcpyAsync(dj, hj, l.size() * sizeof(job), cudaMemcpyHostToDevice, cs));
    uint64_t total = 0;
    for (auto& jb : l) total = std::max(total, jb.sum_base + (jb.block_end - jb.block_begin));
    if (total > 0) {
      const uint64_t want = (total * 16 + 255) / 256;
      const unsigned grid = static_cast<unsigned>(std::min<uint64_t>(want, 132ull * 16));
      sums_kernel<<<grid, 256, 0, cs>>>(dj, static_cast<int>(l.size()), total, m.sums.as<uint64_t>());
      DS_CUDA_TRY(cudaGetLastError());
    }
    chain_kernel<<<static_cast<unsigned>(l.size()), 64, 0, cs>>>(dj, static_cast<int>(l.size()), m.sums.as<uint64_t>(), m.accs.as<uint64_t>(),
                                        m.out.as<uint64_t>());
    DS_CUDA_TRY(cudaGetLastError());
  }
  DS_CUDA_TRY(cudaMemcpyAsync(m.out_host.data(), m.out.data(), nreg * 16, cudaMemcpyDeviceToHost, cs));
  DS_CUDA_TRY(cudaStreamSynchronize(cs));
  const uint64_t* o = m.out_host.as<uint64_t>();
  for (size_t k = 0; k < nreg; ++k) out[longs[k]] = digest128{o[2 * k], o[2 * k + 1]};
  return {};
}

namespace {
constexpr uint64_t kTailCopy = kBlockBytes + 64;  // covers the last partial block and the last stripe
constexpr int kChainStreams = 8;
}  // namespace

status digester::impl::retire_oldest() {
  while (!order.empty()) {
    auto it = started.find(order.front());
    if (it == started.end() || it->second.ready) {
      order.pop_front();
      continue;
    }
    pending& p = it->second;
    DS_TRY_STATUS(p.done->synchronize());
    order.pop_front();
    const uint64_t* o = p.result.as<uint64_t>();
    p.value = digest128{o[0], o[1]};  // out[0] = high, out[1] = low, as digest_many reads them
    p.ready = true;
    pending_sums -= p.sums_bytes;
    spare.push_back(std::move(p.sums));
    spare_results.push_back(std::move(p.result));
    return {};
  }
  return error(errc::internal, "digester: no started chain left to wait for");
}

result<uint64_t> digester::start(const void* data, uint64_t bytes, stream& s) {
  impl& m = *impl_;
  const uint64_t ticket = m.next_ticket++;
  impl::pending p;
  const uint64_t nb = bytes > kMidSizeMax ? (bytes - 1) / kBlockBytes : 0;
  if (bytes <= kMidSizeMax || nb > m.max_blocks_per_launch) {
    // Short (hashed on the host) or longer than one launch: synchronously, as digest() does.
    DS_ASSIGN_OR_RETURN(p.value, digest(data, bytes, s));
    p.ready = true;
    m.started.emplace(ticket, std::move(p));
    return ticket;
  }
  DS_TRY_STATUS(m.load_secret());
  while (m.pending_sums > 0 && m.pending_sums + nb * 64 > m.max_pending_bytes) DS_TRY_STATUS(m.retire_oldest());
  if (m.chain_streams.empty())
    for (int i = 0; i < kChainStreams; ++i) m.chain_streams.push_back(std::make_unique<stream>());
  // Scratch: sums | tail copy | 16-byte result, from a spare buffer when one is large enough.
  const uint64_t tail = std::min<uint64_t>(bytes, kTailCopy);
  const uint64_t need = nb * 64 + kTailCopy + 16;
  for (size_t i = 0; i < m.spare.size(); ++i)
    if (m.spare[i].size() >= need) {
      p.sums = std::move(m.spare[i]);
      m.spare.erase(m.spare.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  if (p.sums.size() < need) {
    DS_ASSIGN_OR_RETURN(p.sums, device_buffer::allocate(need));
  }
  if (!m.spare_results.empty()) {
    p.result = std::move(m.spare_results.back());
    m.spare_results.pop_back();
  } else {
    DS_ASSIGN_OR_RETURN(p.result, pinned_buffer::allocate(16));
  }
  p.done = std::make_unique<event>();
  p.sums_bytes = nb * 64;
  unsigned char* base = p.sums.as<unsigned char>();
  unsigned char* tail_copy = base + nb * 64;
  uint64_t* out = reinterpret_cast<uint64_t*>(tail_copy + kTailCopy);
  cudaStream_t cs = static_cast<cudaStream_t>(s.native());
  // The sums read the region; the job goes in by value (kernel parameter), so nothing else is staged.
  job jb{static_cast<const unsigned char*>(data), bytes, 0, nb, 0, 0, 1u, 1u};
  DS_TRY_STATUS(detail::ensure(m.jobs_dev, sizeof(job)));
  DS_TRY_STATUS(detail::ensure_pinned(m.jobs_host, sizeof(job)));
  *m.jobs_host.as<job>() = jb;
  DS_CUDA_TRY(cudaMemcpyAsync(m.jobs_dev.data(), m.jobs_host.data(), sizeof(job), cudaMemcpyHostToDevice, cs));
  if (nb > 0) {  // 241..1024 bytes: no whole block before the last one, only the tail
    const uint64_t want = (nb * 16 + 255) / 256;
    const unsigned grid = static_cast<unsigned>(std::min<uint64_t>(want, 132ull * 16));
    sums_kernel<<<grid, 256, 0, cs>>>(m.jobs_dev.as<job>(), 1, nb, reinterpret_cast<uint64_t*>(base));
    DS_CUDA_TRY(cudaGetLastError());
  }
  DS_CUDA_TRY(cudaMemcpyAsync(tail_copy, static_cast<const unsigned char*>(data) + (bytes - tail), tail,
                              cudaMemcpyDeviceToDevice, cs));
  DS_CUDA_TRY(cudaStreamSynchronize(cs));  // the region is read: the caller may change it
  // The chain's finishing step reads jb.data + (len - tail ..): point it at the copy.
  jb.data = reinterpret_cast<const unsigned char*>(reinterpret_cast<uintptr_t>(tail_copy) - (bytes - tail));
  stream& cstream = *m.chain_streams[ticket % kChainStreams];
  cudaStream_t chs = static_cast<cudaStream_t>(cstream.native());
  chain_one_kernel<<<1, 64, 0, chs>>>(jb, reinterpret_cast<const uint64_t*>(base), out);
  DS_CUDA_TRY(cudaGetLastError());
  DS_CUDA_TRY(cudaMemcpyAsync(p.result.data(), out, 16, cudaMemcpyDeviceToHost, chs));
  DS_TRY_STATUS(p.done->record(cstream));
  m.pending_sums += p.sums_bytes;
  m.started.emplace(ticket, std::move(p));
  m.order.push_back(ticket);
  return ticket;
}

result<digest128> digester::collect(uint64_t ticket) {
  impl& m = *impl_;
  auto it = m.started.find(ticket);
  if (it == m.started.end())
    return error(errc::invalid_argument, "digester: ticket " + std::to_string(ticket) + " was never started or was collected");
  while (!it->second.ready) DS_TRY_STATUS(m.retire_oldest());
  const digest128 d = it->second.value;
  m.started.erase(it);
  return d;
}

void digester::drop_pending() noexcept {
  impl& m = *impl_;
  while (!m.order.empty())
    if (!m.retire_oldest()) m.order.clear();  // a failed chain: its buffers go with `started`
  m.started.clear();
  m.pending_sums = 0;
}

}  // namespace deltasync::gpu
