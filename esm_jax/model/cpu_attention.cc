// Fused attention for CPUs, forward and backward, called from JAX through the XLA FFI.
//
// XLA runs attention as separate kernels (a product, a masked softmax, a product), each of which
// reads or writes the (T, T) scores. These kernels compute one block of queries at a time: its
// scores, softmax and products stay in cache and the scores are never written back to memory.
// Forward inputs: queries (already scaled), keys and values (B, T, H * D) in float32, H heads of size D at
// most 128, read in place; int32 row keys (B, T): a query attends to the keys whose row key equals its own
// when `packed` (segment ids), else to the keys whose row key is 0 (the padding mask); and the rotary tables
// (T, D) of esm_jax.model.rotary.rotation_tables, or empty arrays for no rotation. Forward outputs: the
// context (B, T, H * D) and each query's log-sum-exp (B, H, T). The backward pass takes the same inputs,
// the context, the log-sum-exp and the context's gradient, rebuilds each block's probabilities from the
// log-sum-exp (as flash attention does) and returns the gradients of the (unrotated) queries, keys and values.
//
// Vectors are GCC vector extensions of one register (compiled with -march=native on the machine that runs
// it): 16 floats with AVX-512, 8 floats otherwise (AVX2). Vectors wider than the CPU's registers would not do:
// GCC then spills them and turns their comparisons and selects into one scalar operation per lane, which made
// the AVX2 build of 16-float vectors run at about 7 GFLOP/s per core.

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
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

#ifdef __AVX512F__
constexpr int kLanes = 16;
constexpr int kScoreRows = 8;  // query rows per score micro-kernel call
constexpr int kScoreKeys = 2;  // key vectors per score micro-kernel call: 16 accumulators of 32 registers
#else
constexpr int kLanes = 8;
constexpr int kScoreRows = 4;
constexpr int kScoreKeys = 3;  // 12 accumulators, 3 key vectors and a broadcast query fill AVX2's 16 registers
#endif
constexpr int kQueryBlock = 32;  // rows of scores the backward pass computes together: 32 x 512 floats stay in L2
static_assert(kQueryBlock % kScoreRows == 0 && 8 % kScoreRows == 0, "tiles cover query blocks and padded heads");
typedef float Vec __attribute__((vector_size(4 * kLanes)));
typedef int32_t IntVec __attribute__((vector_size(4 * kLanes)));
typedef float HalfVec __attribute__((vector_size(32)));  // 8 floats: half a vector with AVX-512

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
// Keeps a loaded vector in a register. Without AVX-512, GCC otherwise folds each of its uses in the
// micro-kernels below into a memory operand: one load per multiply-add, so that on AVX2 they wait on loads
// rather than on multiply-adds. The AVX-512 build was tuned without it and is left as it was.
inline void InRegister(Vec& v) {
#if defined(__x86_64__) && !defined(__AVX512F__)
  asm("" : "+x"(v));
#endif
}
inline void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof(v)); }
inline void StoreHalf(float* p, HalfVec v) { std::memcpy(p, &v, sizeof(v)); }
inline Vec Splat(float x) { return x - Vec{}; }  // x - (+0) is x even for -0, so this compiles to a broadcast
inline Vec Max(Vec a, Vec b) { return a > b ? a : b; }

// exp(x) for x <= 0, as 2^n times exp of the remainder |r| <= ln(2)/2. Masked pairs (x = -inf, or NaN in a row
// with no key to attend to) weigh exactly 0. tests/test_cpu_attention.py holds the contexts to dense attention
// and the gradients to float64 dense attention.
#ifdef __AVX512F__
// A degree-7 Taylor polynomial of r (truncation error below 1e-8 relative); scalef scales by 2^n in one
// instruction and underflows to 0 below about -104.
inline Vec Exp(Vec x) {
  const Vec clamped = Max(x, Splat(-150.0f));
  const __m512 scaled = (__m512)(clamped * 1.44269504088896341f);
  const Vec n = (Vec)_mm512_roundscale_ps(scaled, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
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
  return (Vec)_mm512_scalef_ps((__m512)p, (__m512)n);
}
// The AVX2 build below splits Exp in two stages for loops to overlap; this one is computed whole.
struct ExpStarted {
  Vec x;
};
inline ExpStarted ExpStart(Vec x) { return {x}; }
inline Vec ExpFinish(const ExpStarted& e) { return Exp(e.x); }
#else
// Written for a short chain of dependent operations, which is what bounds the softmax loop on AVX2: n = x / ln 2
// rounded by adding 1.5 * 2^23 (the sum's low bits then hold n); exp(r) by a degree-5 polynomial fitted for the
// least maximum relative error on [-ln(2)/2, ln(2)/2] (Remez), evaluated in pairs; n added to the result's exponent.
// Below -86, where that exponent would not fit, 0. In two stages, so that a loop can start one vector's
// exponential while it finishes the one before: the second stage's operations then find their inputs ready
// instead of filling the scheduler while they wait, which is what bounds a loop of whole exponentials.
struct ExpStarted {
  Vec shifted, remainder;
  IntVec in_range;
};
constexpr float kShift = 12582912.0f;
inline ExpStarted ExpStart(Vec x) {
  const Vec shifted = x * 1.44269504088896341f + kShift;
  return {shifted, x - (shifted - kShift) * 0.693147180559945309f, x >= -86.0f};
}
inline Vec ExpFinish(const ExpStarted& e) {
  const Vec r = e.remainder, r2 = r * r;
  const Vec low = r * 0.9999997019767761f + 1.0000001192092896f;
  const Vec mid = r * 0.16667574644088745f + 0.49998894333839417f;
  const Vec high = r * 0.008297654800117016f + 0.04191538318991661f;
  const Vec p = low + r2 * (mid + r2 * high);
  const IntVec result = (IntVec)p + ((IntVec)e.shifted << 23);
  return (Vec)(result & e.in_range);
}
inline Vec Exp(Vec x) { return ExpFinish(ExpStart(x)); }
#endif

// Which helper tasks of one call are still working; shared with tasks that may start after the call ends.
struct HelperJob {
  std::mutex mutex;
  bool closed = false;
  int active = 0;
};

struct Shape {
  int64_t heads, length, dim, padded_length, padded_dim;
};

// The forward pass lays out a block's scores transposed, (keys, query rows), with the block's query rows along
// the vectors' lanes: its products then fill whole vectors whatever the head size, and each row's maximum and
// sum are lane-wise. A block is kForwardRowVectors vectors of query rows.
constexpr int kForwardRowVectors = 2;
constexpr int kForwardBlock = kForwardRowVectors * kLanes;  // 32 query rows with AVX-512, 16 with AVX2
#ifdef __AVX512F__
constexpr int kForwardTile = 12;  // keys or head dimensions per tile: 24 accumulators of 32 registers
#else
constexpr int kForwardTile = 6;  // 12 accumulators of AVX2's 16 registers
#endif

// Scratch of one forward worker: one head's rotated keys, values and row keys; one block's transposed queries,
// scores and context.
struct Scratch {
  explicit Scratch(const Shape& s)
      : keys(s.length * s.dim), values(s.length * s.dim), row_keys(s.length), queries_t(s.dim * kForwardBlock),
        scores_t(s.length * kForwardBlock), context_t(s.dim * kForwardBlock) {}
  std::vector<float> keys, values;  // (T, D)
  std::vector<int32_t> row_keys;    // (T)
  std::vector<float> queries_t;     // (D, block rows), zero past the block's last row
  std::vector<float> scores_t;      // (T, block rows)
  std::vector<float> context_t;     // (D, block rows)
};

// acc[r][k] += a[i * a_step + r * a_stride] * b[i * ldb + k * kLanes + lane] over i < depth: the micro-kernel of
// every product: Rows broadcast values of a against Columns vectors of b, sized for registers by the caller.
template <int Rows, int Columns>
inline void BroadcastTile(const float* a, int64_t a_step, int64_t a_stride, const float* b, int64_t ldb,
                          int64_t depth, Vec (&acc)[Rows][Columns]) {
  for (int64_t i = 0; i < depth; ++i) {
    Vec columns[Columns];
    for (int k = 0; k < Columns; ++k) {
      columns[k] = Load(b + i * ldb + k * kLanes);
      InRegister(columns[k]);
    }
    for (int r = 0; r < Rows; ++r) {
      const Vec x = Splat(a[i * a_step + r * a_stride]);
      for (int k = 0; k < Columns; ++k) acc[r][k] += x * columns[k];
    }
  }
}

// Stores a score tile, masked to -inf where the key's row key differs from the row's own when Masked, and keeps
// each row's lane-wise maximum in peaks[r].
template <bool Masked>
inline void StoreScoreTile(const Vec (&acc)[kScoreRows][kScoreKeys], const int32_t* row_keys,
                           const int32_t* own_keys, float* scores, Vec* peaks, const Shape& s) {
  const Vec minus_inf = Splat(-INFINITY);
  IntVec key_ids[kScoreKeys];
  if (Masked)
    for (int k = 0; k < kScoreKeys; ++k) key_ids[k] = LoadInt(row_keys + k * kLanes);
  for (int r = 0; r < kScoreRows; ++r) {
    for (int k = 0; k < kScoreKeys; ++k) {
      const Vec score = Masked ? (key_ids[k] == own_keys[r] ? acc[r][k] : minus_inf) : acc[r][k];
      Store(scores + r * s.padded_length + k * kLanes, score);
      peaks[r] = Max(peaks[r], score);
    }
  }
}

// The row key shared by the kScoreKeys * kLanes keys of a score tile from `row_keys`, or null when they differ.
inline const int32_t* SharedRowKey(const int32_t* row_keys) {
  for (int i = 1; i < kScoreKeys * kLanes; ++i)
    if (row_keys[i] != row_keys[0]) return nullptr;
  return row_keys;
}

// scores[r, j] = sum_d queries[r, d] * keys_t[d, j] for kScoreRows rows and kScoreKeys key vectors, masked
// to -inf where the key's row key differs from the row's own; peaks[r] keeps each row's lane-wise maximum.
// Most tiles need no mask: all their keys share one row key (shared_key, else null) and so do their rows.
inline void ScoreTile(const float* queries, const float* keys_t, const int32_t* row_keys, const int32_t* shared_key,
                      const int32_t* own_keys, float* scores, Vec* peaks, const Shape& s) {
  Vec acc[kScoreRows][kScoreKeys] = {};
  BroadcastTile(queries, 1, s.dim, keys_t, s.padded_length, s.dim, acc);
  bool open = shared_key != nullptr;
  for (int r = 0; r < kScoreRows && open; ++r) open = own_keys[r] == *shared_key;
  if (open)
    StoreScoreTile<false>(acc, row_keys, own_keys, scores, peaks, s);
  else
    StoreScoreTile<true>(acc, row_keys, own_keys, scores, peaks, s);
}

// c = a · b, or c += a · b when `accumulate`: a (rows, depth) with row stride lda, b (depth, columns) and c
// (rows, columns) with row strides ldb and ldc; rows a multiple of kScoreRows, columns of kScoreKeys vectors.
void Product(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t depth, float* c, int64_t ldc,
             int64_t rows, int64_t columns, bool accumulate) {
  for (int64_t j = 0; j < columns; j += kScoreKeys * kLanes) {
    for (int64_t r = 0; r < rows; r += kScoreRows) {
      Vec acc[kScoreRows][kScoreKeys] = {};
      BroadcastTile(a + r * lda, 1, lda, b + j, ldb, depth, acc);
      for (int i = 0; i < kScoreRows; ++i) {
        for (int k = 0; k < kScoreKeys; ++k) {
          float* out = c + (r + i) * ldc + j + k * kLanes;
          Store(out, accumulate ? Load(out) + acc[i][k] : acc[i][k]);
        }
      }
    }
  }
}

// context[r, :] = sum_j weights[r, j] * values[j, :] for Rows rows; the head size is covered by Full
// vectors and, when Half, one of 8 floats (with AVX-512, head size 24 = 16 + 8 wastes no lanes).
template <int Rows, int Full, bool Half>
inline void ContextTile(const float* weights, const float* values, float* context, const Shape& s) {
  Vec acc[Rows][Full > 0 ? Full : 1] = {};
  HalfVec half_acc[Rows] = {};
  for (int64_t j = 0; j < s.length; ++j) {
    Vec v[Full > 0 ? Full : 1];
    for (int c = 0; c < Full; ++c) {
      v[c] = Load(values + j * s.padded_dim + c * kLanes);
      InRegister(v[c]);
    }
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

// Vectors of the head size that one context tile covers: all of them with AVX-512's 32 registers; with
// AVX2's 16, at most three, so that a tile's accumulators and one key's values stay in registers.
#ifdef __AVX512F__
constexpr int kContextColumns = 16;
#else
constexpr int kContextColumns = 3;
#endif

// Rows of a context tile of `full` vectors: as many as keep their accumulators and one key's values in registers.
constexpr int ContextRows(int full) {
#ifdef __AVX512F__
  return full <= 2 ? 8 : (full <= 4 ? 4 : 2);
#else
  return std::clamp((15 - full) / full, 1, 8);
#endif
}

// Context rows for a head size of Full vectors and, when Half, one of 8 floats, kContextColumns at a time.
template <int Full, bool Half>
void ContextBlock(const float* weights, const float* values, float* context, int64_t rows, const Shape& s) {
  if constexpr (Full > kContextColumns) {
    ContextBlock<kContextColumns, false>(weights, values, context, rows, s);
    constexpr int kDone = kContextColumns * kLanes;
    ContextBlock<Full - kContextColumns, Half>(weights, values + kDone, context + kDone, rows, s);
  } else {
    constexpr int kRows = ContextRows(Full);
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows)
      ContextTile<kRows, Full, Half>(weights + r * s.padded_length, values, context + r * s.padded_dim, s);
    for (; r < rows; ++r)
      ContextTile<1, Full, Half>(weights + r * s.padded_length, values, context + r * s.padded_dim, s);
  }
}

// Context for a head size padded to Eighths times 8 floats (s.padded_dim).
template <int Eighths>
void ContextOf(const float* weights, const float* values, float* context, int64_t rows, const Shape& s) {
  ContextBlock<Eighths * 8 / kLanes, Eighths * 8 % kLanes != 0>(weights, values, context, rows, s);
}

void Context(const float* weights, const float* values, float* context, int64_t rows, const Shape& s) {
  switch (s.padded_dim / 8) {
    case 1: return ContextOf<1>(weights, values, context, rows, s);
    case 2: return ContextOf<2>(weights, values, context, rows, s);
    case 3: return ContextOf<3>(weights, values, context, rows, s);
    case 4: return ContextOf<4>(weights, values, context, rows, s);
    case 5: return ContextOf<5>(weights, values, context, rows, s);
    case 6: return ContextOf<6>(weights, values, context, rows, s);
    case 7: return ContextOf<7>(weights, values, context, rows, s);
    case 8: return ContextOf<8>(weights, values, context, rows, s);
    case 9: return ContextOf<9>(weights, values, context, rows, s);
    case 10: return ContextOf<10>(weights, values, context, rows, s);
    case 11: return ContextOf<11>(weights, values, context, rows, s);
    case 12: return ContextOf<12>(weights, values, context, rows, s);
    case 13: return ContextOf<13>(weights, values, context, rows, s);
    case 14: return ContextOf<14>(weights, values, context, rows, s);
    case 15: return ContextOf<15>(weights, values, context, rows, s);
    default: return ContextOf<16>(weights, values, context, rows, s);
  }
}

// The rotary tables (T, D) of a call, or null pointers when it rotates nothing.
struct Rotation {
  const float *cos, *sin;
};

// Where row t of head h of sequence b starts in a (B, T, H * D) array.
inline int64_t HeadRowOffset(int64_t b, int64_t t, int64_t h, const Shape& s) {
  return ((b * s.length + t) * s.heads + h) * s.dim;
}

// Row t of one head's (T, D) slice of a (B, T, H * D) array, rotated by table row t when there are tables.
inline void HeadRow(const float* array, int64_t b, int64_t t, int64_t h, const Rotation& rotation, const Shape& s,
                    float* out) {
  const float* row = array + HeadRowOffset(b, t, h, s);
  if (rotation.cos == nullptr) {
    std::copy(row, row + s.dim, out);
    return;
  }
  const int64_t half = s.dim / 2;
  const float *cos = rotation.cos + t * s.dim, *sin = rotation.sin + t * s.dim;
  for (int64_t d = 0; d < s.dim; ++d) out[d] = row[d] * cos[d] + row[d < half ? d + half : d - half] * sin[d];
}

// Writes the gradient of a rotated head row (D floats) to row t of one head's slice of a (B, T, H * D) array,
// rotated back: the transpose of HeadRow's rotation.
inline void StoreHeadRow(const float* gradient, int64_t b, int64_t t, int64_t h, const Rotation& rotation,
                         const Shape& s, float* array) {
  float* row = array + HeadRowOffset(b, t, h, s);
  if (rotation.cos == nullptr) {
    std::copy(gradient, gradient + s.dim, row);
    return;
  }
  const int64_t half = s.dim / 2;
  const float *cos = rotation.cos + t * s.dim, *sin = rotation.sin + t * s.dim;
  for (int64_t d = 0; d < s.dim; ++d) {
    const int64_t partner = d < half ? d + half : d - half;
    row[d] = gradient[d] * cos[d] + gradient[partner] * sin[partner];
  }
}

// How far ahead the loops over a head's keys fetch the rows they read or write. A head's rows of a (B, T, H * D)
// array lie H * D floats apart, too far apart for the hardware prefetchers: unasked, each arrives as its own miss.
constexpr int64_t kRowsAhead = 8;

// Asks the cache for row t of one head's slice of a (B, T, H * D) array: the first and last line it spans.
inline void PrefetchHeadRow(const float* array, int64_t b, int64_t t, int64_t h, const Shape& s) {
  const float* row = array + HeadRowOffset(b, t, h, s);
  __builtin_prefetch(row);
  __builtin_prefetch(row + s.dim - 1);
}

// The arrays of one forward call: (B, T, H * D) queries, keys and values, (B, T) row keys, the rotation, and
// the (B, T, H * D) context and (B, H, T) log-sum-exp it writes.
struct Inputs {
  const float *query, *key, *value;
  Rotation rotation;
  const int32_t* row_keys;
  bool packed;
  float *context, *log_sum_exp;
};

// Calls tile(width, first) on consecutive tiles covering [0, count): of Width items, then one narrower tile for
// the rest. width is a std::integral_constant, so that each tile width compiles to its own register-held tile.
template <int Width, typename TileFn>
inline void ForEachTile(int64_t count, const TileFn& tile) {
  int64_t first = 0;
  for (; first + Width <= count; first += Width) tile(std::integral_constant<int, Width>{}, first);
  if constexpr (Width > 1) {
    if (first < count)
      ForEachTile<Width - 1>(count - first, [&](auto width, int64_t offset) { tile(width, first + offset); });
  }
}

// One block's transposed scores for Width keys from `first`: -inf where the key's row key differs from the
// query's own (own_keys, lane-wise) when packed, else where it is not 0 (padding). peaks keeps each row's maximum.
template <int Width>
inline void ScoreKeys(int64_t first, const IntVec (&own_keys)[kForwardRowVectors], bool packed, const Shape& s,
                      Scratch& w, Vec (&peaks)[kForwardRowVectors]) {
  Vec acc[Width][kForwardRowVectors] = {};
  BroadcastTile(w.keys.data() + first * s.dim, 1, s.dim, w.queries_t.data(), kForwardBlock, s.dim, acc);
  const Vec minus_inf = Splat(-INFINITY);
  const int32_t* row_keys = w.row_keys.data() + first;
  float* scores = w.scores_t.data() + first * kForwardBlock;
  Vec peak[kForwardRowVectors];  // a local copy: stores to `scores` might alias `peaks`, which would keep it in memory
  std::copy(peaks, peaks + kForwardRowVectors, peak);
#pragma GCC unroll 16
  for (int a = 0; a < Width; ++a) {
#pragma GCC unroll 4
    for (int v = 0; v < kForwardRowVectors; ++v) {
      Vec score = acc[a][v];
      if (packed)
        score = own_keys[v] == row_keys[a] ? score : minus_inf;
      else if (row_keys[a] != 0)
        score = minus_inf;
      peak[v] = Max(peak[v], score);
      Store(scores + a * kForwardBlock + v * kLanes, score);
    }
  }
  std::copy(peak, peak + kForwardRowVectors, peaks);
}

// A block's transposed scores exponentiated in place, less their row's peak; totals gets each row's sum.
inline void SoftmaxBlock(float* scores_t, int64_t length, const Vec (&peaks)[kForwardRowVectors],
                         Vec (&totals)[kForwardRowVectors]) {
  for (int64_t j = 0; j < length; ++j) {
    float* scores = scores_t + j * kForwardBlock;
    ExpStarted started[kForwardRowVectors];
    for (int v = 0; v < kForwardRowVectors; ++v) started[v] = ExpStart(Load(scores + v * kLanes) - peaks[v]);
    for (int v = 0; v < kForwardRowVectors; ++v) {
      const Vec weight = ExpFinish(started[v]);
      Store(scores + v * kLanes, weight);
      totals[v] += weight;
    }
  }
}

// One block's transposed context for Width head dimensions from `first`, each row scaled by its inverse total.
template <int Width>
inline void ContextDims(int64_t first, const Vec (&inverse_totals)[kForwardRowVectors], const Shape& s,
                        Scratch& w) {
  Vec acc[Width][kForwardRowVectors] = {};
  BroadcastTile(w.values.data() + first, s.dim, 1, w.scores_t.data(), kForwardBlock, s.length, acc);
  for (int a = 0; a < Width; ++a)
    for (int v = 0; v < kForwardRowVectors; ++v)
      Store(w.context_t.data() + (first + a) * kForwardBlock + v * kLanes, acc[a][v] * inverse_totals[v]);
}

void OneHead(int64_t pair, const Inputs& in, const Shape& s, Scratch& w) {
  const int64_t b = pair / s.heads, h = pair % s.heads, T = s.length, D = s.dim;
  const int32_t* keys = in.row_keys + b * T;
  for (int64_t j = 0; j < T; ++j) {
    if (j + kRowsAhead < T) {
      PrefetchHeadRow(in.key, b, j + kRowsAhead, h, s);
      PrefetchHeadRow(in.value, b, j + kRowsAhead, h, s);
    }
    HeadRow(in.key, b, j, h, in.rotation, s, w.keys.data() + j * D);
    const float* value = in.value + HeadRowOffset(b, j, h, s);
    std::copy(value, value + D, w.values.data() + j * D);
  }
  std::copy(keys, keys + T, w.row_keys.begin());
  for (int64_t start = 0; start < T; start += kForwardBlock) {
    const int64_t rows = std::min<int64_t>(kForwardBlock, T - start);
    float query[128];
    int32_t own[kForwardBlock];
    for (int64_t r = 0; r < kForwardBlock; ++r) {
      if (r < rows) HeadRow(in.query, b, start + r, h, in.rotation, s, query);
      for (int64_t d = 0; d < D; ++d) w.queries_t[d * kForwardBlock + r] = r < rows ? query[d] : 0.0f;
      own[r] = r < rows ? keys[start + r] : INT_MIN;
    }
    for (int64_t t = start + kForwardBlock; t < std::min<int64_t>(start + 2 * kForwardBlock, T); ++t) {
      PrefetchHeadRow(in.query, b, t, h, s);  // the next block's queries and context rows
      PrefetchHeadRow(in.context, b, t, h, s);
    }
    IntVec own_keys[kForwardRowVectors];
    Vec peaks[kForwardRowVectors], totals[kForwardRowVectors] = {}, inverse_totals[kForwardRowVectors];
    for (int v = 0; v < kForwardRowVectors; ++v) {
      own_keys[v] = LoadInt(own + v * kLanes);
      peaks[v] = Splat(-INFINITY);
    }
    ForEachTile<kForwardTile>(T, [&](auto width, int64_t first) {
      ScoreKeys<decltype(width)::value>(first, own_keys, in.packed, s, w, peaks);
    });
    SoftmaxBlock(w.scores_t.data(), T, peaks, totals);
    for (int v = 0; v < kForwardRowVectors; ++v)  // a row with no key to attend to gets 0
      inverse_totals[v] = totals[v] > 0.0f ? Splat(1.0f) / totals[v] : Splat(0.0f);
    ForEachTile<kForwardTile>(D, [&](auto width, int64_t first) {
      ContextDims<decltype(width)::value>(first, inverse_totals, s, w);
    });
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = start + r;
      float* out = in.context + HeadRowOffset(b, t, h, s);
      for (int64_t d = 0; d < D; ++d) out[d] = w.context_t[d * kForwardBlock + r];
      const int v = r / kLanes, lane = r % kLanes;
      in.log_sum_exp[pair * T + t] = peaks[v][lane] + std::log(totals[v][lane]);
    }
  }
}

// The arrays of one backward call: the forward's inputs, context and log-sum-exp, the context's gradient, and
// the (B, T, H * D) gradients of the queries, keys and values it writes.
struct GradientInputs {
  const float *query, *key, *value;
  Rotation rotation;
  const int32_t* row_keys;
  bool packed;
  const float *context, *log_sum_exp, *d_context;
  float *d_query, *d_key, *d_value;
};

// Scratch of one backward worker. Names ending in _t are transposed: (head dimension, tokens).
struct GradientScratch {
  explicit GradientScratch(const Shape& s)
      : keys_t(s.dim * s.padded_length), keys(s.length * s.padded_dim), values_t(s.dim * s.padded_length),
        row_keys(s.padded_length, INT_MIN), queries(kQueryBlock * s.dim), queries_t(s.padded_dim * kQueryBlock),
        d_context(kQueryBlock * s.dim), d_context_t(s.padded_dim * kQueryBlock),
        probs(kQueryBlock * s.padded_length), d_scores(kQueryBlock * s.padded_length),
        d_queries(kQueryBlock * s.padded_dim), d_keys_t(s.padded_dim * s.padded_length),
        d_values_t(s.padded_dim * s.padded_length) {}
  std::vector<float> keys_t, keys, values_t;  // one head's rotated keys, both ways, and values; zero past T and D
  std::vector<int32_t> row_keys;              // (padded T), INT_MIN past T
  std::vector<float> queries, queries_t;      // one block's rotated queries
  std::vector<float> d_context, d_context_t;  // one block's context gradients
  std::vector<float> probs, d_scores;         // (kQueryBlock, padded T)
  std::vector<float> d_queries;               // (kQueryBlock, padded D)
  std::vector<float> d_keys_t, d_values_t;    // summed over the head's query blocks
};

// One head's gradients. Per block of queries: probabilities P = exp(scores - log-sum-exp), the probabilities'
// gradients dP = dC V^T, the scores' gradients dS = P (dP - rowsum(dC * C)); then dV += P^T dC, dK += dS^T Q
// and dQ = dS K, with Q and K rotated; the rotations are transposed as the gradients are written.
void OneHeadGradients(int64_t pair, const GradientInputs& in, const Shape& s, GradientScratch& w) {
  const int64_t b = pair / s.heads, h = pair % s.heads, T = s.length, D = s.dim;
  const int64_t padded_t = s.padded_length, padded_d = s.padded_dim;
  const int32_t* keys = in.row_keys + b * T;
  for (int64_t j = 0; j < T; ++j) {
    if (j + kRowsAhead < T) {
      PrefetchHeadRow(in.key, b, j + kRowsAhead, h, s);
      PrefetchHeadRow(in.value, b, j + kRowsAhead, h, s);
    }
    float* key = w.keys.data() + j * padded_d;
    HeadRow(in.key, b, j, h, in.rotation, s, key);
    const float* value = in.value + HeadRowOffset(b, j, h, s);
    for (int64_t d = 0; d < D; ++d) {
      w.keys_t[d * padded_t + j] = key[d];
      w.values_t[d * padded_t + j] = value[d];
    }
    w.row_keys[j] = keys[j];
  }
  std::fill(w.d_keys_t.begin(), w.d_keys_t.end(), 0.0f);
  std::fill(w.d_values_t.begin(), w.d_values_t.end(), 0.0f);
  for (int64_t start = 0; start < T; start += kQueryBlock) {
    const int64_t rows = std::min<int64_t>(kQueryBlock, T - start);
    const int64_t tile_rows = (rows + kScoreRows - 1) / kScoreRows * kScoreRows;
    int32_t own_keys[kQueryBlock];
    float log_sum_exp[kQueryBlock], delta[kQueryBlock];
    Vec unused_peaks[kQueryBlock];
    for (int64_t r = 0; r < kQueryBlock; ++r) {
      own_keys[r] = in.packed && r < rows ? keys[start + r] : 0;
      unused_peaks[r] = Splat(-INFINITY);
    }
    for (int64_t t = start + kQueryBlock; t < std::min<int64_t>(start + 2 * kQueryBlock, T); ++t) {
      for (const float* array : {in.query, in.context, in.d_context, static_cast<const float*>(in.d_query)})
        PrefetchHeadRow(array, b, t, h, s);  // the next block's rows
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = start + r, offset = HeadRowOffset(b, t, h, s);
      float *query = w.queries.data() + r * D, *d_context = w.d_context.data() + r * D;
      HeadRow(in.query, b, t, h, in.rotation, s, query);
      std::copy(in.d_context + offset, in.d_context + offset + D, d_context);
      delta[r] = 0.0f;
      for (int64_t d = 0; d < D; ++d) {
        w.queries_t[d * kQueryBlock + r] = query[d];
        w.d_context_t[d * kQueryBlock + r] = d_context[d];
        delta[r] += d_context[d] * in.context[offset + d];
      }
      log_sum_exp[r] = in.log_sum_exp[pair * T + t];
    }
    for (int64_t j = 0; j < padded_t; j += kScoreKeys * kLanes) {
      const int32_t* shared_key = SharedRowKey(w.row_keys.data() + j);
      for (int64_t r = 0; r < rows; r += kScoreRows)
        ScoreTile(w.queries.data() + r * D, w.keys_t.data() + j, w.row_keys.data() + j, shared_key, own_keys + r,
                  w.probs.data() + r * padded_t + j, unused_peaks + r, s);
    }
    Product(w.d_context.data(), D, w.values_t.data(), padded_t, D, w.d_scores.data(), padded_t, tile_rows, padded_t,
            false);
    for (int64_t r = 0; r < rows; ++r) {
      float *probs = w.probs.data() + r * padded_t, *d_scores = w.d_scores.data() + r * padded_t;
      for (int64_t j = 0; j < padded_t; j += kLanes) {
        const Vec prob = Exp(Load(probs + j) - log_sum_exp[r]);
        Store(probs + j, prob);
        Store(d_scores + j, prob * (Load(d_scores + j) - delta[r]));
      }
    }
    Product(w.d_context_t.data(), kQueryBlock, w.probs.data(), padded_t, rows, w.d_values_t.data(), padded_t,
            padded_d, padded_t, true);
    Product(w.queries_t.data(), kQueryBlock, w.d_scores.data(), padded_t, rows, w.d_keys_t.data(), padded_t,
            padded_d, padded_t, true);
    Context(w.d_scores.data(), w.keys.data(), w.d_queries.data(), rows, s);
    for (int64_t r = 0; r < rows; ++r)
      StoreHeadRow(w.d_queries.data() + r * padded_d, b, start + r, h, in.rotation, s, in.d_query);
  }
  float row[128];
  for (int64_t j = 0; j < T; ++j) {
    if (j + kRowsAhead < T) {
      PrefetchHeadRow(in.d_key, b, j + kRowsAhead, h, s);
      PrefetchHeadRow(in.d_value, b, j + kRowsAhead, h, s);
    }
    for (int64_t d = 0; d < D; ++d) row[d] = w.d_keys_t[d * padded_t + j];
    StoreHeadRow(row, b, j, h, in.rotation, s, in.d_key);
    float* d_value = in.d_value + HeadRowOffset(b, j, h, s);
    for (int64_t d = 0; d < D; ++d) d_value[d] = w.d_values_t[d * padded_t + j];
  }
}

// Runs one_head(pair, scratch) for every (sequence, head) pair, on the calling thread and on up to (pool
// threads - 1) helper tasks, each with its own ScratchT(s), taking pairs from a shared counter until none are
// left. Helpers that start after the caller has finished every pair do nothing, so the caller never waits for
// a task the pool has not started (its threads may all be busy).
template <typename ScratchT, typename OneHeadFn>
void ForEachPair(ffi::ThreadPool& pool, int64_t pairs, const Shape& s, OneHeadFn one_head) {
  std::atomic<int64_t> next_pair{0};
  auto work = [&]() {
    ScratchT scratch(s);
    for (int64_t n = next_pair++; n < pairs; n = next_pair++) one_head(n, scratch);
  };
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
}

// The shape of a call's (B, T, H * D) arrays, or an error when the head size or the rotary tables do not fit.
ffi::Error ShapeOf(const Array3& query, int64_t heads, const ffi::Buffer<ffi::F32>& cos, Shape& s) {
  const auto dims = query.dimensions();
  const int64_t block = kScoreKeys * kLanes, dim = dims[2] / heads;
  s = Shape{heads, dims[1], dim, (dims[1] + block - 1) / block * block, (dim + 7) / 8 * 8};
  if (s.dim > 128) return ffi::Error::InvalidArgument("head size above 128");
  const int64_t table_size = static_cast<int64_t>(cos.element_count());
  if (table_size > 0 && (table_size != s.length * s.dim || s.dim % 2 != 0))
    return ffi::Error::InvalidArgument("rotation tables must be (T, D) with D even");
  return ffi::Error::Success();
}

Rotation RotationOf(const ffi::Buffer<ffi::F32>& cos, const ffi::Buffer<ffi::F32>& sin) {
  if (cos.element_count() == 0) return Rotation{nullptr, nullptr};
  return Rotation{cos.typed_data(), sin.typed_data()};
}

ffi::Error AttentionForward(ffi::ThreadPool pool, Array3 query, Array3 key, Array3 value, RowKeys row_keys,
                            ffi::Buffer<ffi::F32> cos, ffi::Buffer<ffi::F32> sin, bool packed, int64_t heads,
                            Result3 context, ResultAny log_sum_exp) {
  Shape s;
  if (ffi::Error error = ShapeOf(query, heads, cos, s); error.failure()) return error;
  const Inputs in{query.typed_data(),    key.typed_data(), value.typed_data(),   RotationOf(cos, sin),
                  row_keys.typed_data(), packed,           context->typed_data(), log_sum_exp->typed_data()};
  ForEachPair<Scratch>(pool, query.dimensions()[0] * s.heads, s,
                       [&](int64_t pair, Scratch& scratch) { OneHead(pair, in, s, scratch); });
  return ffi::Error::Success();
}

ffi::Error AttentionBackward(ffi::ThreadPool pool, Array3 query, Array3 key, Array3 value, RowKeys row_keys,
                             ffi::Buffer<ffi::F32> cos, ffi::Buffer<ffi::F32> sin, Array3 context,
                             ffi::Buffer<ffi::F32> log_sum_exp, Array3 d_context, bool packed, int64_t heads,
                             Result3 d_query, Result3 d_key, Result3 d_value) {
  Shape s;
  if (ffi::Error error = ShapeOf(query, heads, cos, s); error.failure()) return error;
  const GradientInputs in{query.typed_data(),    key.typed_data(),         value.typed_data(),
                          RotationOf(cos, sin),   row_keys.typed_data(),    packed,
                          context.typed_data(),   log_sum_exp.typed_data(), d_context.typed_data(),
                          d_query->typed_data(), d_key->typed_data(),      d_value->typed_data()};
  ForEachPair<GradientScratch>(pool, query.dimensions()[0] * s.heads, s,
                               [&](int64_t pair, GradientScratch& scratch) { OneHeadGradients(pair, in, s, scratch); });
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(EsmJaxAttentionBackward, AttentionBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Array3>()
                                  .Arg<Array3>()
                                  .Arg<Array3>()
                                  .Arg<RowKeys>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<Array3>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<Array3>()
                                  .Attr<bool>("packed")
                                  .Attr<int64_t>("heads")
                                  .Ret<Array3>()
                                  .Ret<Array3>()
                                  .Ret<Array3>());
