// Fused attention forward for CPUs, called from JAX through the XLA FFI.
//
// XLA runs attention as separate kernels (a product, a masked softmax, a product), each of which
// reads or writes the (T, T) scores. This kernel computes one block of queries at a time: its
// scores, softmax and context stay in cache and the scores are never written back to memory.
// Inputs: queries (already scaled), keys and values (B, T, H * D) in float32, H heads of size D at most
// 128, read in place; int32 row keys (B, T): a query attends to the keys whose row key equals its own when `packed`
// (segment ids), else to the keys whose row key is 0 (the padding mask); and the rotary tables (T, D) of
// esm_jax.model.rotary.rotation_tables, or empty arrays for no rotation. Outputs: the context (B, T, H * D)
// and each query's log-sum-exp (B, H, T), which the backward pass (in JAX) uses to rebuild the
// probabilities.
//
// Vectors are GCC vector extensions of 16 floats: one AVX-512 register where the CPU has them,
// two AVX2 registers otherwise (compiled with -march=native on the machine that runs it).

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

using Array3 = ffi::Buffer<ffi::F32, 3>;  // (B, T, H * D)
using RowKeys = ffi::Buffer<ffi::S32, 2>;  // (B, T)
using Result3 = ffi::ResultBuffer<ffi::F32, 3>;
using ResultAny = ffi::ResultBuffer<ffi::F32>;

namespace {

typedef float Vec __attribute__((vector_size(64)));
typedef float HalfVec __attribute__((vector_size(32)));
typedef int32_t IntVec __attribute__((vector_size(64)));
constexpr int kLanes = 16;
constexpr int kQueryBlock = 32;  // rows of scores computed together: 32 x 512 floats stay in L2
constexpr int kScoreRows = 8;    // query rows per score micro-kernel call
constexpr int kScoreKeys = 2;    // key vectors per score micro-kernel call

inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline IntVec LoadInt(const int32_t* p) {
  IntVec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline HalfVec LoadHalf(const float* p) {
  HalfVec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof(v)); }
inline void StoreHalf(float* p, HalfVec v) { std::memcpy(p, &v, sizeof(v)); }
inline Vec Splat(float x) { return x - Vec{}; }  // x - (+0) is x even for -0, so this compiles to a broadcast
inline Vec Max(Vec a, Vec b) { return a > b ? a : b; }
inline float HorizontalSum(Vec v) {
  float total = 0.0f;
  for (int i = 0; i < kLanes; ++i) total += v[i];
  return total;
}
inline float HorizontalMax(Vec v) {
  float peak = v[0];
  for (int i = 1; i < kLanes; ++i) peak = std::max(peak, v[i]);
  return peak;
}

// exp(x) for x <= 0: 2^n times a degree-7 Taylor polynomial of the remainder |r| <= ln(2)/2 (truncation
// error below 1e-8 relative). The masked pairs (-inf) weigh exactly 0: with AVX-512, scalef scales by 2^n
// in one instruction and underflows to 0 below about -104; without it, results below -87 are set to 0.
inline Vec Exp(Vec x) {
#ifdef __AVX512F__
  const Vec clamped = Max(x, Splat(-150.0f));
  const __m512 scaled = (__m512)(clamped * 1.44269504088896341f);
  const Vec n = (Vec)_mm512_roundscale_ps(scaled, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  const Vec clamped = Max(x, Splat(-87.0f));
  const Vec scaled = clamped * 1.44269504088896341f;
  const Vec n = (scaled + 12582912.0f) - 12582912.0f;  // round to nearest integer
#endif
  Vec r = clamped - n * 0.693359375f;  // ln 2 in two parts
  r = r - n * -2.12194440e-4f;
  Vec p = Splat(1.0f / 5040.0f);
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
#ifdef __AVX512F__
  return (Vec)_mm512_scalef_ps((__m512)p, (__m512)n);
#else
  const IntVec exponent = (__builtin_convertvector(n, IntVec) + 127) << 23;
  const Vec result = p * (Vec)exponent;
  return x < -87.0f ? Splat(0.0f) : result;
#endif
}

// Scratch of one worker: one head's transposed keys, padded values and row keys, one block's scores.
struct Scratch {
  std::vector<float> keys_t;   // (D, padded T), zero past T
  std::vector<float> values;   // (T, padded D), zero past D
  std::vector<int32_t> row_keys;  // (padded T), INT_MIN past T
  std::vector<float> queries;  // (kQueryBlock, D)
  std::vector<float> scores;   // (kQueryBlock, padded T)
  std::vector<float> context;  // (kQueryBlock, padded D)
};

// Which helper tasks of one call are still working; shared with tasks that may start after the call ends.
struct HelperJob {
  std::mutex mutex;
  bool closed = false;
  int active = 0;
};

struct Shape {
  int64_t heads, length, dim, padded_length, padded_dim;
};

// scores[r, j] = sum_d queries[r, d] * keys_t[d, j] for kScoreRows rows and kScoreKeys key vectors, masked
// to -inf where the key's row key differs from the row's own; peaks[r] keeps each row's lane-wise maximum.
inline void ScoreTile(const float* queries, const float* keys_t, const int32_t* row_keys, const int32_t* own_keys,
                      float* scores, Vec* peaks, const Shape& s) {
  Vec acc[kScoreRows][kScoreKeys] = {};
  for (int64_t d = 0; d < s.dim; ++d) {
    Vec keys[kScoreKeys];
    for (int k = 0; k < kScoreKeys; ++k) keys[k] = Load(keys_t + d * s.padded_length + k * kLanes);
    for (int r = 0; r < kScoreRows; ++r) {
      const Vec q = Splat(queries[r * s.dim + d]);
      for (int k = 0; k < kScoreKeys; ++k) acc[r][k] += q * keys[k];
    }
  }
  const Vec minus_inf = Splat(-INFINITY);
  IntVec key_ids[kScoreKeys];
  for (int k = 0; k < kScoreKeys; ++k) key_ids[k] = LoadInt(row_keys + k * kLanes);
  for (int r = 0; r < kScoreRows; ++r) {
    for (int k = 0; k < kScoreKeys; ++k) {
      const Vec masked = key_ids[k] == own_keys[r] ? acc[r][k] : minus_inf;
      Store(scores + r * s.padded_length + k * kLanes, masked);
      peaks[r] = Max(peaks[r], masked);
    }
  }
}

// context[r, :] = sum_j weights[r, j] * values[j, :] for Rows rows; the head size is covered by Full
// vectors of 16 floats and, when Half, one of 8 (head size 24 = 16 + 8 wastes no lanes).
template <int Rows, int Full, bool Half>
inline void ContextTile(const float* weights, const float* values, float* context, const Shape& s) {
  Vec acc[Rows][Full > 0 ? Full : 1] = {};
  HalfVec half_acc[Rows] = {};
  for (int64_t j = 0; j < s.length; ++j) {
    Vec v[Full > 0 ? Full : 1];
    for (int c = 0; c < Full; ++c) v[c] = Load(values + j * s.padded_dim + c * kLanes);
    HalfVec half_v = {};
    if (Half) half_v = LoadHalf(values + j * s.padded_dim + Full * kLanes);
    for (int r = 0; r < Rows; ++r) {
      const float w = weights[r * s.padded_length + j];
      for (int c = 0; c < Full; ++c) acc[r][c] += w * v[c];
      if (Half) half_acc[r] += w * half_v;
    }
  }
  for (int r = 0; r < Rows; ++r) {
    for (int c = 0; c < Full; ++c) Store(context + r * s.padded_dim + c * kLanes, acc[r][c]);
    if (Half) StoreHalf(context + r * s.padded_dim + Full * kLanes, half_acc[r]);
  }
}

template <int Full, bool Half>
void ContextBlock(const float* weights, const float* values, float* context, int64_t rows, const Shape& s) {
  constexpr int kRows = Full <= 2 ? 8 : (Full <= 4 ? 4 : 2);
  int64_t r = 0;
  for (; r + kRows <= rows; r += kRows)
    ContextTile<kRows, Full, Half>(weights + r * s.padded_length, values, context + r * s.padded_dim, s);
  for (; r < rows; ++r)
    ContextTile<1, Full, Half>(weights + r * s.padded_length, values, context + r * s.padded_dim, s);
}

// The head size is padded to a multiple of 8 floats (s.padded_dim).
void Context(const float* weights, const float* values, float* context, int64_t rows, const Shape& s) {
  switch (s.padded_dim / 8) {
    case 1: return ContextBlock<0, true>(weights, values, context, rows, s);
    case 2: return ContextBlock<1, false>(weights, values, context, rows, s);
    case 3: return ContextBlock<1, true>(weights, values, context, rows, s);
    case 4: return ContextBlock<2, false>(weights, values, context, rows, s);
    case 5: return ContextBlock<2, true>(weights, values, context, rows, s);
    case 6: return ContextBlock<3, false>(weights, values, context, rows, s);
    case 7: return ContextBlock<3, true>(weights, values, context, rows, s);
    case 8: return ContextBlock<4, false>(weights, values, context, rows, s);
    case 9: return ContextBlock<4, true>(weights, values, context, rows, s);
    case 10: return ContextBlock<5, false>(weights, values, context, rows, s);
    case 11: return ContextBlock<5, true>(weights, values, context, rows, s);
    case 12: return ContextBlock<6, false>(weights, values, context, rows, s);
    case 13: return ContextBlock<6, true>(weights, values, context, rows, s);
    case 14: return ContextBlock<7, false>(weights, values, context, rows, s);
    case 15: return ContextBlock<7, true>(weights, values, context, rows, s);
    default: return ContextBlock<8, false>(weights, values, context, rows, s);
  }
}

// Softmax of one row of masked scores in place, unnormalised; returns the sum of the weights.
float SoftmaxRow(float* scores, float peak, const Shape& s) {
  Vec total = {};
  for (int64_t j = 0; j < s.padded_length; j += kLanes) {
    const Vec weight = Exp(Load(scores + j) - peak);
    Store(scores + j, weight);
    total += weight;
  }
  return HorizontalSum(total);
}

// The inputs of one call: (B, T, H * D) queries, keys and values, (B, T) row keys, optional (T, D) rotation
// tables, and the (B, T, H * D) context and (B, H, T) log-sum-exp it writes.
struct Inputs {
  const float *query, *key, *value, *cos, *sin;
  const int32_t* row_keys;
  bool packed;
  float *context, *log_sum_exp;
};

// Row t of one head's (T, D) slice of a (B, T, H * D) array, rotated by table row t when there are tables.
inline void HeadRow(const float* array, int64_t b, int64_t t, int64_t h, const Inputs& in, const Shape& s,
                    float* out) {
  const float* row = array + ((b * s.length + t) * s.heads + h) * s.dim;
  if (in.cos == nullptr) {
    std::copy(row, row + s.dim, out);
    return;
  }
  const int64_t half = s.dim / 2;
  const float *cos = in.cos + t * s.dim, *sin = in.sin + t * s.dim;
  for (int64_t d = 0; d < s.dim; ++d) out[d] = row[d] * cos[d] + row[d < half ? d + half : d - half] * sin[d];
}

void OneHead(int64_t pair, const Inputs& in, const Shape& s, Scratch& scratch) {
  const int64_t b = pair / s.heads, h = pair % s.heads, T = s.length, D = s.dim;
  const int32_t* keys = in.row_keys + b * T;
  float row[128];
  for (int64_t j = 0; j < T; ++j) {
    HeadRow(in.key, b, j, h, in, s, row);
    for (int64_t d = 0; d < D; ++d) scratch.keys_t[d * s.padded_length + j] = row[d];
    const float* value = in.value + ((b * T + j) * s.heads + h) * D;
    std::copy(value, value + D, scratch.values.data() + j * s.padded_dim);
    scratch.row_keys[j] = keys[j];
  }
  for (int64_t start = 0; start < T; start += kQueryBlock) {
    const int64_t rows = std::min<int64_t>(kQueryBlock, T - start);
    for (int64_t r = 0; r < rows; ++r) HeadRow(in.query, b, start + r, h, in, s, scratch.queries.data() + r * D);
    int32_t own_keys[kQueryBlock];
    Vec row_peaks[kQueryBlock];
    for (int64_t r = 0; r < kQueryBlock; ++r) {
      own_keys[r] = in.packed && r < rows ? keys[start + r] : 0;
      row_peaks[r] = Splat(-INFINITY);
    }
    for (int64_t j = 0; j < s.padded_length; j += kScoreKeys * kLanes)
      for (int64_t r = 0; r < rows; r += kScoreRows)
        ScoreTile(scratch.queries.data() + r * D, scratch.keys_t.data() + j, scratch.row_keys.data() + j,
                  own_keys + r, scratch.scores.data() + r * s.padded_length + j, row_peaks + r, s);
    float peaks[kQueryBlock], totals[kQueryBlock];
    for (int64_t r = 0; r < rows; ++r) {
      peaks[r] = HorizontalMax(row_peaks[r]);
      totals[r] = SoftmaxRow(scratch.scores.data() + r * s.padded_length, peaks[r], s);
    }
    Context(scratch.scores.data(), scratch.values.data(), scratch.context.data(), rows, s);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = start + r;
      float* out = in.context + ((b * T + t) * s.heads + h) * D;
      const float scale = 1.0f / totals[r];
      for (int64_t d = 0; d < D; ++d) out[d] = scratch.context[r * s.padded_dim + d] * scale;
      in.log_sum_exp[pair * T + t] = peaks[r] + std::log(totals[r]);
    }
  }
}

ffi::Error AttentionForward(ffi::ThreadPool pool, Array3 query, Array3 key, Array3 value, RowKeys row_keys,
                            ffi::Buffer<ffi::F32> cos, ffi::Buffer<ffi::F32> sin, bool packed, int64_t heads,
                            Result3 context, ResultAny log_sum_exp) {
  const auto dims = query.dimensions();  // (B, T, H * D)
  const int64_t block = kScoreKeys * kLanes, dim = dims[2] / heads;
  Shape s{heads, dims[1], dim, (dims[1] + block - 1) / block * block, (dim + 7) / 8 * 8};
  if (s.dim > 128) return ffi::Error::InvalidArgument("head size above 128");
  const bool rotates = cos.element_count() > 0;
  if (rotates && (cos.element_count() != s.length * s.dim || s.dim % 2 != 0))
    return ffi::Error::InvalidArgument("rotation tables must be (T, D) with D even");
  const Inputs in{query.typed_data(), key.typed_data(), value.typed_data(),
                  rotates ? cos.typed_data() : nullptr, rotates ? sin.typed_data() : nullptr,
                  row_keys.typed_data(), packed, context->typed_data(), log_sum_exp->typed_data()};
  const int64_t pairs = dims[0] * s.heads;
  std::atomic<int64_t> next_pair{0};
  auto work = [&]() {
    Scratch scratch{std::vector<float>(s.dim * s.padded_length), std::vector<float>(s.length * s.padded_dim),
                    std::vector<int32_t>(s.padded_length, INT_MIN), std::vector<float>(kQueryBlock * s.dim),
                    std::vector<float>(kQueryBlock * s.padded_length),
                    std::vector<float>(kQueryBlock * s.padded_dim)};
    for (int64_t n = next_pair++; n < pairs; n = next_pair++) OneHead(n, in, s, scratch);
  };
  // Helpers that start after the caller has finished every pair do nothing, so the caller never waits
  // for a task the pool has not started (its threads may all be busy).
  auto job = std::make_shared<HelperJob>();
  const int64_t helpers = std::min<int64_t>(std::max<int64_t>(pool.num_threads(), 1), pairs) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([job, &work]() {
    {
      std::lock_guard<std::mutex> lock(job->mutex);
      if (job->closed) return;
      job->active++;
    }
    work();
    std::lock_guard<std::mutex> lock(job->mutex);
    job->active--;
  });
  work();
  for (bool waiting = true; waiting; std::this_thread::yield()) {
    std::lock_guard<std::mutex> lock(job->mutex);
    job->closed = true;
    waiting = job->active > 0;
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(EsmJaxAttentionForward, AttentionForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Array3>()
                                  .Arg<Array3>()
                                  .Arg<Array3>()
                                  .Arg<RowKeys>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("packed")
                                  .Attr<int64_t>("heads")
                                  .Ret<Array3>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
