// Float32 matrix products for CPUs through OpenBLAS, called from JAX through the XLA FFI.
//
// XLA:CPU's own float32 GEMM reaches 60-85% of an AVX-512 core's multiply-add peak on the shapes of ESM's
// dense layers; OpenBLAS's (the scipy-openblas32 package, its symbols prefixed `scipy_`) reaches more. One call
// computes c (m x n) = op(a) · op(b), where op transposes its argument when the matching attribute says so:
// a is (m, k), or (k, m) transposed; b is (k, n), or (n, k) transposed. The rows of c are split into equal
// runs over the calling thread and XLA's CPU thread pool, each run one single-threaded OpenBLAS call, so no
// thread outside XLA's pool is started (OpenBLAS's own threads would keep spinning after a call, on the cores
// XLA's next operation needs).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

#include "cblas.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

using Matrix = ffi::Buffer<ffi::F32, 2>;
using ResultMatrix = ffi::ResultBuffer<ffi::F32, 2>;

namespace {

constexpr int64_t kRowAlignment = 16;  // a run's first row: a multiple of this, so runs start on whole tiles
constexpr int64_t kMinimumRowsPerRun = 64;

// Tasks that have started on the pool, and whether the caller has stopped waiting for more to start.
struct HelperJob {
  std::mutex mutex;
  int64_t active = 0;
  bool closed = false;
};

// Runs run(i) for every i < runs, on the calling thread and on up to (pool threads - 1) helper tasks, taking
// runs from a shared counter. Helpers that start after every run is taken do nothing, so the caller never
// waits for a task the pool has not started (its threads may all be busy).
template <typename RunFn>
void ForEachRun(ffi::ThreadPool& pool, int64_t runs, RunFn run) {
  std::atomic<int64_t> next{0};
  auto work = [&]() {
    for (int64_t i = next++; i < runs; i = next++) run(i);
  };
  auto job = std::make_shared<HelperJob>();
  const int64_t helpers = std::min<int64_t>(std::max<int64_t>(pool.num_threads(), 1), runs) - 1;
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

ffi::Error Product(ffi::ThreadPool pool, Matrix a, Matrix b, ResultMatrix c, bool transpose_a, bool transpose_b) {
  const int64_t m = c->dimensions()[0], n = c->dimensions()[1];
  const int64_t k = transpose_a ? a.dimensions()[0] : a.dimensions()[1];
  if ((transpose_a ? a.dimensions()[1] : a.dimensions()[0]) != m ||
      (transpose_b ? b.dimensions()[1] : b.dimensions()[0]) != k ||
      (transpose_b ? b.dimensions()[0] : b.dimensions()[1]) != n)
    return ffi::Error::InvalidArgument("operand shapes do not fit the product's output");
  if (std::max({m, n, k}) > INT32_MAX) return ffi::Error::InvalidArgument("a dimension above 2^31 - 1");
  static const bool single_threaded = [] {  // once per process; OpenBLAS's own threads then stay asleep
    scipy_openblas_set_num_threads(1);
    return true;
  }();
  static_cast<void>(single_threaded);
  const float* a_data = a.typed_data();
  const float* b_data = b.typed_data();
  float* c_data = c->typed_data();
  const int64_t lda = a.dimensions()[1], ldb = b.dimensions()[1];
  const int64_t threads = std::max<int64_t>(pool.num_threads(), 1);
  const int64_t runs = std::clamp<int64_t>(m / kMinimumRowsPerRun, 1, threads);
  const int64_t rows_per_run = (m / runs + kRowAlignment - 1) / kRowAlignment * kRowAlignment;
  ForEachRun(pool, runs, [&](int64_t i) {
    const int64_t first = std::min(m, i * rows_per_run), rows = std::min(m, first + rows_per_run) - first;
    if (rows == 0 || n == 0) return;
    const float* a_rows = a_data + (transpose_a ? first : first * lda);
    scipy_cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans,
                      rows, n, k, 1.0f, a_rows, lda, b_data, ldb, 0.0f, c_data + first * n, n);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(EsmJaxDenseProduct, Product,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Matrix>()
                                  .Arg<Matrix>()
                                  .Ret<Matrix>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b"));
