// What this CPU's cores can do without XLA or PyTorch in between: their float32 multiply-add peak, their bfloat16
// dot-product peak where they have AVX-512 BF16, and a plain blocked float32 GEMM (packed tiles of two vectors'
// width, the standard scheme of BLIS-like libraries: 6 x 16 with AVX2's 8-float vectors, 12 x 32 with AVX-512's
// 16-float ones) run on several threads.
// benchmarks/gemm_peak.py builds it with -march=native and calls it through ctypes, so that the libraries' GEMM
// rates can be read against what the hardware allows.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

#if defined(__AVX512F__)
constexpr int kWidth = 16, kRows = 12;  // a tile: 24 of the 32 registers accumulate
#else
constexpr int kWidth = 8, kRows = 6;  // a tile: 12 of the 16 registers accumulate
#endif
typedef float Vec __attribute__((vector_size(4 * kWidth)));
constexpr int kColumns = 2 * kWidth;  // besides the accumulators: 2 vectors of B and a broadcast of A
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
    acc[i][1] = Load(c + i * ldc + kWidth);
  }
  for (int64_t k = 0; k < depth; ++k) {
    Vec b0 = Load(b + k * kColumns), b1 = Load(b + k * kColumns + kWidth);
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
    Store(c + i * ldc + kWidth, acc[i][1]);
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

// Seconds until `threads` threads, each running body(its index), have all finished.
template <typename Body>
double SecondsOnThreads(int threads, Body body) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) workers.emplace_back(body, t);
  for (std::thread& worker : workers) worker.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

// Ten independent chains of one vector instruction, OP(n) accumulating into register n after ZERO(n) clears it,
// repeated `left` times: enough to cover the latency of two pipelines, and in assembly so that the compiler can
// neither spill nor fold them.
#define PEAK_CHAINS(ZERO, OP, left)                                                                                \
  asm volatile(ZERO(0) ZERO(1) ZERO(2) ZERO(3) ZERO(4) ZERO(5) ZERO(6) ZERO(7) ZERO(8) ZERO(9) ZERO(10) ZERO(11) \
               "1:\n" OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7) OP(8) OP(9)                                  \
               "dec %0\n jnz 1b\n vzeroupper\n"                                                                   \
               : "+r"(left)                                                                                      \
               :                                                                                                 \
               : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "cc")

extern "C" {

// Rows of a problem this GEMM takes: m must be a multiple of this times the thread count.
int64_t native_gemm_row_block() { return kRowBlock; }

// Seconds of one c = a · b split by rows over `threads` threads (each packs its own copy of b's blocks into
// buffers allocated before the clock starts).
double native_gemm_seconds(const float* a, const float* b, float* c, int64_t m, int64_t k, int64_t n,
                           int threads) {
  std::vector<Packed> packed(threads, Packed(n));
  const int64_t part = m / threads;
  return SecondsOnThreads(threads, [=, &packed](int t) {
    Gemm(a + t * part * k, b, c + t * part * n, part, k, n, packed[t]);
  });
}

// Floats per vector in this build's GEMM and multiply-add peak.
int native_vector_floats() { return kWidth; }

// The float32 multiply-add rate of `threads` threads in GFLOP/s, in vectors of native_vector_floats() (x86-64
// with FMA3 only, else 0).
double native_fma_peak(int threads, int64_t iterations) {
#if defined(__x86_64__) && defined(__FMA__)
#if defined(__AVX512F__)
#define PEAK_REGISTER(n) "%%zmm" #n
#else
#define PEAK_REGISTER(n) "%%ymm" #n
#endif
#define PEAK_ZERO(n) "vxorps " PEAK_REGISTER(n) ", " PEAK_REGISTER(n) ", " PEAK_REGISTER(n) "\n"
#define PEAK_FMA(n) "vfmadd231ps " PEAK_REGISTER(10) ", " PEAK_REGISTER(11) ", " PEAK_REGISTER(n) "\n"
  const double seconds = SecondsOnThreads(threads, [=](int) {
    int64_t left = iterations;
    PEAK_CHAINS(PEAK_ZERO, PEAK_FMA, left);
  });
  return 2.0 * kWidth * 10 * iterations * threads / seconds / 1e9;
#else
  return 0.0;
#endif
}

// The bfloat16 rate of `threads` threads in GFLOP/s through AVX-512 BF16's dot-product instruction (each one
// multiplies 16 pairs of bfloat16 pairs and adds both products to 16 float32 sums: 64 FLOPs), which is what
// bfloat16 GEMMs with float32 sums run on; 0 where the build has no AVX-512 BF16.
double native_bf16_dot_peak(int threads, int64_t iterations) {
#if defined(__x86_64__) && defined(__AVX512BF16__)
#define PEAK_ZERO_512(n) "vpxord %%zmm" #n ", %%zmm" #n ", %%zmm" #n "\n"
#define PEAK_DOT(n) "vdpbf16ps %%zmm10, %%zmm11, %%zmm" #n "\n"
  const double seconds = SecondsOnThreads(threads, [=](int) {
    int64_t left = iterations;
    PEAK_CHAINS(PEAK_ZERO_512, PEAK_DOT, left);
  });
  return 64.0 * 10 * iterations * threads / seconds / 1e9;
#else
  return 0.0;
#endif
}
}
