#include "gemm.h"

#include <ATen/ATen.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>

#include "config.h"
#include "step_team.h"

// Declared weak: if this torch lacks the symbol (or changed its signature, and
// so its mangled name), the address is null and MKL serves every product.
namespace at::native {
__attribute__((weak)) void mkldnn_matmul(const at::Tensor& mat1, const at::Tensor& mat2,
                                         const at::Tensor& result, float beta, float alpha);
} // namespace at::native

namespace lstm_ext::cpu {
namespace {

// Products below this many FLOPs run faster on MKL than oneDNN's per-call
// overhead allows (crossover measured between (64,64,256) and (32,256,1024)).
constexpr double kOneDnnMinFlops = 4.0e6;

using OneDnnMatmul = void (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&, float,
                              float);

// Whether this torch's mkldnn_matmul computes a float32 product on this CPU.
// It may refuse: torch 2.13 sends float32 down its bf16 path, which needs
// avx512bw/vl/dq or avx_ne_convert ("mkldnn_matmul: mkldnn_matmul bf16 path
// needs the cpu support ..."), so on an AVX2-only CPU (an AMD EPYC 7003 VM)
// every product above kOneDnnMinFlops threw. Asked once, with a 1 x 1
// product; a refusal (or a wrong answer) keeps every product on MKL.
bool onednn_takes_float() {
  if (&at::native::mkldnn_matmul == nullptr) return false;
  try {
    const at::Tensor a = at::full({1, 1}, 3.0f);
    const at::Tensor out = at::zeros({1, 1});
    at::native::mkldnn_matmul(a, a, out, 0.0f, 1.0f);
    return out.item<float>() == 9.0f;
  } catch (const c10::Error&) {
    return false;
  }
}

// Not MKL on Intel CPUs, though there it was 7-30% faster at one thread
// (3200x512 @ 512x2048: 32.5 vs 36.0 ms): MKL splits a long sum (a weight
// gradient's T * B rows) between its threads, so a layer's result changed
// when the step team fell back to one thread, and a resumed training run no
// longer reproduced an uninterrupted one (tests/forecast/test_cli.py, found
// by CI). oneDNN splits such sums too where the output is small for the
// thread count; the backward runs those products on one thread each
// (backward_products.h).
OneDnnMatmul onednn() {
  // LSTM_EXT_GEMM=aten keeps every product on ATen's GEMM (for comparisons).
  static const OneDnnMatmul fn =
      config().onednn_gemm && onednn_takes_float() ? &at::native::mkldnn_matmul : nullptr;
  return fn;
}

// ATen's GEMM (MKL for float32 and float64): out = beta * out + a @ b.
void aten_matmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out, double beta) {
  if (beta == 0.0) {
    at::mm_out(const_cast<at::Tensor&>(out), a, b);
  } else {
    const_cast<at::Tensor&>(out).addmm_(a, b, beta, 1.0);
  }
}

// MKL splits a product of few rows between its threads otherwise than it
// computes it on one: the bits then change with the thread count (and with
// the one-thread fallback, step_team.h). Scanned on an AMD EPYC (Zen 3),
// torch 2.13, a (M, K) @ (K, N) float32 product against one thread, M up to
// 128 and 200-4096, K x N 32 x 512 and 256 x 1024: M 5-7 and 9-11 differed
// with 2, 5, 6 and 8 threads, and also 17-19 and 25-27 with 12 and 16 (none
// with 3 or 4; K = 1 never). A layer's input projection of 6 rows and the
// cell's gate products at batch 6 changed so (tests/ops/test_threads.py).
// Below this many rows, such a product runs in column tiles fixed by its
// shape, each one MKL call on one thread, side by side on the threads.
constexpr int64_t kMklFewRows = 64;
// A tile has at least this many columns, in multiples of 16 (a cache line of
// float32), and at least this many FLOPs (tens of microseconds on one core).
// Against MKL on 2 threads (lstm_ext.ops.gemm, this EPYC, 2 threads, medians
// of 3 alternating runs, us, very noisy): (8,512)@(512,4096) 1165 -> 650,
// (6,32)@(32,512) 14 -> 10, (32,256)@(256,2048) 340-377 -> 417-420,
// (40,64)@(64,1024) 77-87 -> 60-106; with 1e6 FLOPs per tile (more tiles)
// 95 at (40,64)@(64,1024) and 585 at (32,256)@(256,2048), with 4e6 no better.
// A product of one tile (N below 128: (40,1024)@(1024,64), as a cell's dx)
// runs on one thread: 85 against 62-102. Tiles of rows as well were slower
// (101-107 there).
constexpr int64_t kTileMinColumns = 64;
constexpr int64_t kTileAlign = 16;
constexpr double kTileMinFlops = 2.0e6;

// aten_matmul whose result does not depend on the thread count (see above).
void aten_matmul_fixed(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out,
                       double beta) {
  const int64_t M = a.size(0), N = b.size(1);
  if (M >= kMklFewRows) {
    aten_matmul(a, b, out, beta);
    return;
  }
  const double flops = 2.0 * M * a.size(1) * N;
  const int64_t tiles = std::min(N / kTileMinColumns, static_cast<int64_t>(flops / kTileMinFlops));
  if (tiles <= 1) {
    const OneThread one;
    aten_matmul(a, b, out, beta);
    return;
  }
  int64_t width = (N + tiles - 1) / tiles;
  width = (width + kTileAlign - 1) / kTileAlign * kTileAlign;
  // The caller's thread-local state (dispatch keys, grad mode) on every
  // thread: an ATen op on an OpenMP thread would otherwise run as if called
  // from Python, autograd included (backward_products.cpp does the same).
  const at::ThreadLocalState state;
  for_each_task((N + width - 1) / width, [&](int64_t k) {
    const at::ThreadLocalStateGuard guard(state);
    const int64_t j = k * width, n = std::min(width, N - j);
    aten_matmul(a, b.narrow(1, j, n), out.narrow(1, j, n), beta);
  });
}

} // namespace

bool aten_bf16_gemm_is_native() {
  static const bool native = [] {
    const auto op =
        c10::Dispatcher::singleton().findSchema({"mkldnn::_is_mkldnn_bf16_supported", ""});
    // A torch without the op: trust its bf16 GEMM, as before this check.
    if (!op.has_value()) return true;
    return op->typed<bool()>().call();
  }();
  return native;
}

void matmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out, double beta) {
  const double flops = 2.0 * a.size(0) * a.size(1) * b.size(1);
  if (out.numel() == 0) return;
  if (out.scalar_type() == at::kBFloat16 && !aten_bf16_gemm_is_native()) {
    // In float32 (gemm.h): 100x faster than ATen's scalar bf16 fallback.
    const at::Tensor out_f = beta == 0.0 ? at::empty(out.sizes(), out.options().dtype(at::kFloat))
                                         : out.to(at::kFloat);
    matmul(a.to(at::kFloat), b.to(at::kFloat), out_f, beta);
    const_cast<at::Tensor&>(out).copy_(out_f);
    return;
  }
  if (a.size(1) == 0) {  // empty reduction: a @ b is zero
    // beta == 0 means "out is not read" (as in BLAS): it may hold anything,
    // NaN included, and NaN * 0 would stay NaN.
    if (beta == 0.0) {
      const_cast<at::Tensor&>(out).zero_();
    } else {
      const_cast<at::Tensor&>(out).mul_(beta);
    }
    return;
  }
  if (out.scalar_type() == at::kFloat && flops >= kOneDnnMinFlops && onednn() != nullptr) {
    onednn()(a, b, out, static_cast<float>(beta), 1.0f);
  } else {
    aten_matmul_fixed(a, b, out, beta);
  }
}

at::Tensor matmul_new(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor out = at::empty({a.size(0), b.size(1)}, a.options());
  matmul(a, b, out, 0.0);
  return out;
}

void matmul_one_thread(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out,
                       double beta) {
#if defined(__x86_64__) || defined(__i386__)
  static const bool amd = __builtin_cpu_is("amd");
#else
  constexpr bool amd = false;
#endif
  if (amd || out.numel() == 0 || a.size(1) == 0) {
    matmul(a, b, out, beta);
  } else {
    aten_matmul(a, b, out, beta);
  }
}

} // namespace lstm_ext::cpu
