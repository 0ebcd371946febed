// What this CPU's cores can do in float32, without XLA or PyTorch in between: their multiply-add peak, and a
// plain blocked GEMM (packed 6 x 16 tiles of 8-float vectors, the standard scheme of BLIS-like libraries)
// run on several threads. benchmarks/gemm_peak.py builds it with -march=native and calls it through ctypes,
// so that the libraries' GEMM rates can be read against what the hardware allows.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

typedef float Vec __attribute__((vector_size(32)));
constexpr int kRows = 6, kColumns = 16;  // a tile: 12 accumulators, 2 vectors of B and a broadcast of A
constexpr int64_t kDepthBlock = 256, kRowBlock = 72;

inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof(v)); }
inline Vec Splat(float x) { return x - Vec{}; }

// c (kRows x kColumns, row stride ldc) += packed a (depth x kRows) times packed b (depth x kColumns).
void Tile(const float* a, const float* b, int64_t depth, float* c, int64_t ldc) {
  Vec acc[kRows][2];
  for (int i = 0; i < kRows; ++i) {
    acc[i][0] = Load(c + i * ldc);
    acc[i][1] = Load(c + i * ldc + 8);
  }
  for (int64_t k = 0; k < depth; ++k) {
    Vec b0 = Load(b + k * kColumns), b1 = Load(b + k * kColumns + 8);
#if defined(__x86_64__)
    asm("" : "+x"(b0), "+x"(b1));  // keep them in registers rather than folded into every multiply-add
#endif
    for (int i = 0; i < kRows; ++i) {
      const Vec x = Splat(a[k * kRows + i]);
      acc[i][0] += x * b0;
      acc[i][1] += x * b1;
    }
  }
  for (int i = 0; i < kRows; ++i) {
    Store(c + i * ldc, acc[i][0]);
    Store(c + i * ldc + 8, acc[i][1]);
  }
}

// Packing buffers of one thread, allocated and touched before the clock starts (a fresh allocation of this size
// may be mapped anew, and page-faulted, on every call).
struct Packed {
  explicit Packed(int64_t n) : b(kDepthBlock * n), a(kDepthBlock * kRowBlock) {}
  std::vector<float> b, a;
};

// c = a · b for row-major a (m x k), b (k x n) and c (m x n); m a multiple of kRowBlock, n of kColumns.
void Gemm(const float* a, const float* b, float* c, int64_t m, int64_t k, int64_t n, Packed& packed) {
  std::fill(c, c + m * n, 0.0f);
  for (int64_t p = 0; p < k; p += kDepthBlock) {
    const int64_t depth = std::min(kDepthBlock, k - p);
    for (int64_t j = 0; j < n; j += kColumns)
      for (int64_t d = 0; d < depth; ++d)
        std::memcpy(&packed.b[j * depth + d * kColumns], b + (p + d) * n + j, sizeof(float) * kColumns);
    for (int64_t block = 0; block < m; block += kRowBlock) {
      for (int64_t r = 0; r < kRowBlock; r += kRows)
        for (int64_t d = 0; d < depth; ++d)
          for (int i = 0; i < kRows; ++i) packed.a[r * depth + d * kRows + i] = a[(block + r + i) * k + p + d];
      for (int64_t j = 0; j < n; j += kColumns)
        for (int64_t r = 0; r < kRowBlock; r += kRows)
          Tile(&packed.a[r * depth], &packed.b[j * depth], depth, c + (block + r) * n + j, n);
    }
  }
}

}  // namespace

extern "C" {

// Rows of a problem this GEMM takes: m must be a multiple of this times the thread count.
int64_t native_gemm_row_block() { return kRowBlock; }

// Seconds of one c = a · b split by rows over `threads` threads (each packs its own copy of b's blocks into
// buffers allocated before the clock starts).
double native_gemm_seconds(const float* a, const float* b, float* c, int64_t m, int64_t k, int64_t n,
                           int threads) {
  std::vector<Packed> packed(threads, Packed(n));
  const auto start = std::chrono::steady_clock::now();
  const int64_t part = m / threads;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([=, &packed] { Gemm(a + t * part * k, b, c + t * part * n, part, k, n, packed[t]); });
  for (std::thread& worker : workers) worker.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The float32 multiply-add rate of `threads` threads in GFLOP/s, 8-float vectors (x86-64 with FMA3 only, else
// 0): ten independent chains of multiply-adds per thread, enough to cover the latency of two pipelines, written
// in assembly so that the compiler can neither spill nor fold them.
double native_fma_peak(int threads, int64_t iterations) {
#if defined(__x86_64__) && defined(__FMA__)
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t)
    workers.emplace_back([=] {
      int64_t left = iterations;
      asm volatile(
          "vxorps %%ymm0, %%ymm0, %%ymm0\n vxorps %%ymm1, %%ymm1, %%ymm1\n vxorps %%ymm2, %%ymm2, %%ymm2\n"
          "vxorps %%ymm3, %%ymm3, %%ymm3\n vxorps %%ymm4, %%ymm4, %%ymm4\n vxorps %%ymm5, %%ymm5, %%ymm5\n"
          "vxorps %%ymm6, %%ymm6, %%ymm6\n vxorps %%ymm7, %%ymm7, %%ymm7\n vxorps %%ymm8, %%ymm8, %%ymm8\n"
          "vxorps %%ymm9, %%ymm9, %%ymm9\n vxorps %%ymm10, %%ymm10, %%ymm10\n vxorps %%ymm11, %%ymm11, %%ymm11\n"
          "1:\n"
          "vfmadd231ps %%ymm10, %%ymm11, %%ymm0\n vfmadd231ps %%ymm10, %%ymm11, %%ymm1\n"
          "vfmadd231ps %%ymm10, %%ymm11, %%ymm2\n vfmadd231ps %%ymm10, %%ymm11, %%ymm3\n"
          "vfmadd231ps %%ymm10, %%ymm11, %%ymm4\n vfmadd231ps %%ymm10, %%ymm11, %%ymm5\n"
          "vfmadd231ps %%ymm10, %%ymm11, %%ymm6\n vfmadd231ps %%ymm10, %%ymm11, %%ymm7\n"
          "vfmadd231ps %%ymm10, %%ymm11, %%ymm8\n vfmadd231ps %%ymm10, %%ymm11, %%ymm9\n"
          "dec %0\n jnz 1b\n vzeroupper\n"
          : "+r"(left)
          :
          : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "cc");
    });
  for (std::thread& worker : workers) worker.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return 2.0 * 8 * 10 * iterations * threads / seconds / 1e9;
#else
  return 0.0;
#endif
}
}
