// The CPU kernel of the gemm op: out (M, N) = a (M, K) @ b (K, N), float32 or
// float64, on the GEMM library the LSTM kernels use for that shape (matmul,
// gemm.h: oneDNN or ATen's MKL). It exists so that the benchmarks measure the
// machine's GEMM ceiling and floor as the kernels see them. a and b are only
// read; out is a fresh tensor.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../ops.h"
#include "checks.h"
#include "gemm.h"

namespace lstm_ext::cpu {
namespace {

at::Tensor gemm(const at::Tensor& a, const at::Tensor& b) {
  check_gemm_args(a, b);
  return matmul_new(a, b);
}

LSTM_EXT_IMPL(CPU, gemm, gemm)

} // namespace
} // namespace lstm_ext::cpu
