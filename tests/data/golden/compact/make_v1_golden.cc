// Wrote the compact/1 golden streams here with the first release's encoder (main at ae24d76, before compact/2):
// g++ -std=c++20 -Isrc -Ibuild/generated make_v1_golden.cc build/src/codec/libdeltasync_codec.a
// build/src/base/libdeltasync_base.a. Not built: the encoder it calls writes compact/2 now. Each .expect file is
// u64 count, u64 numel, u64 element bytes, count u32 positions, count differences (tests/codec/compact_golden_test.cc).
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include "codec/compact.h"
using namespace deltasync;
static void put(const std::string& path, const void* p, size_t n) { FILE* f = fopen(path.c_str(), "wb"); fwrite(p, 1, n, f); fclose(f); }
int main(int, char** argv) {
  std::string dir = argv[1];
  struct spec { const char* name; uint32_t eb; uint64_t numel; double density; bool random; };
  for (spec sp : {spec{"bf16_adamw", 2, 1500000, 0.012, false}, spec{"f32_random", 4, 40000, 0.3, true}, spec{"u8_dense", 1, 5000, 1.0, false}, spec{"f64_sparse", 8, 3000000, 0.0005, false}}) {
    std::mt19937_64 rng(sp.eb * 7 + 1);
    std::bernoulli_distribution pick(sp.density);
    std::vector<uint32_t> pos; byte_buffer o, v;
    const uint64_t mask = sp.eb == 8 ? ~0ull : (1ull << (8 * sp.eb)) - 1;
    for (uint64_t i = 0; i < sp.numel; ++i) if (sp.density >= 1 || pick(rng)) pos.push_back(i);
    for (size_t i = 0; i < pos.size(); ++i) {
      uint64_t a = rng() & mask, b;
      do { b = sp.random ? (rng() & mask) : ((a + ((rng() & 1) ? 1 : mask) * (1 + (rng() % 8 == 0 ? rng() % 5 : 0))) & mask); } while (b == a);
      o.insert(o.end(), (std::byte*)&a, (std::byte*)&a + sp.eb); v.insert(v.end(), (std::byte*)&b, (std::byte*)&b + sp.eb);
    }
    byte_buffer s; compact::encode(pos, o, v, sp.eb, s);
    std::vector<uint32_t> p2; byte_buffer d; if (!compact::decode(s, pos.size(), sp.numel, sp.eb, p2, d).ok()) return 1;
    put(dir + "/v1_" + sp.name + ".stream", s.data(), s.size());
    byte_buffer e(24); uint64_t n = pos.size(); memcpy(e.data(), &n, 8); memcpy(e.data() + 8, &sp.numel, 8); uint64_t eb = sp.eb; memcpy(e.data() + 16, &eb, 8);
    e.insert(e.end(), (std::byte*)p2.data(), (std::byte*)(p2.data() + p2.size())); e.insert(e.end(), d.begin(), d.end());
    put(dir + "/v1_" + sp.name + ".expect", e.data(), e.size());
    printf("%s: %zu changes, %zu stream bytes\n", sp.name, pos.size(), s.size());
  }
}
