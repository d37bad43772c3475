#include "gemm.h"

#include <ATen/ATen.h>

#include "config.h"

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

// Whether oneDNN beats MKL on this CPU. MKL is Intel's: on an Intel Xeon
// (with AMX, one thread) it was 7-30% faster than oneDNN at every float32
// product of the layers, large and small (3200x512 @ 512x2048: 32.5 vs 36.0
// ms; 256x1600 @ 1600x64, a small layer's dW_hh: 271 vs 353 us). On AMD
// EPYC oneDNN was twice as fast (the header).
bool onednn_faster_here() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return !__builtin_cpu_is("intel");
#else
  return true;
#endif
}

OneDnnMatmul onednn() {
  // LSTM_EXT_GEMM=aten keeps every product on ATen's GEMM (for comparisons).
  static const OneDnnMatmul fn =
      config().onednn_gemm && onednn_faster_here() ? &at::native::mkldnn_matmul : nullptr;
  return fn;
}

} // namespace

void matmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out, double beta) {
  const double flops = 2.0 * a.size(0) * a.size(1) * b.size(1);
  if (out.numel() == 0) return;
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
  } else if (beta == 0.0) {
    at::mm_out(const_cast<at::Tensor&>(out), a, b);
  } else {
    const_cast<at::Tensor&>(out).addmm_(a, b, beta, 1.0);
  }
}

} // namespace lstm_ext::cpu
