// out = beta * out + a @ b, on whichever GEMM is fastest for the shape.
//
// ATen's float32 GEMM is MKL, whose kernels on AMD CPUs run at half the speed
// of oneDNN's (measured on this project's EPYC machines: 200 vs 410 GFLOP/s on
// two cores), which is what torch.nn.LSTM uses. oneDNN's matmul costs ~15 us of
// set-up per call, so small products stay on MKL. oneDNN is reached through
// ATen's exported at::native::mkldnn_matmul, bound weakly: a torch without it
// (or with another signature) keeps MKL. LSTM_EXT_GEMM=aten forces MKL.
#pragma once

#include <ATen/core/Tensor.h>

namespace lstm_ext::cpu {

void matmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out, double beta);

// Whether a per-step recurrent product of this size is faster on small_gemm
// (lstm_pointwise.h) than through matmul. LSTM_EXT_GEMM=aten turns it off.
bool use_small_gemm(int64_t m, int64_t n, int64_t k);

// Whether oneDNN's matmul was found in this torch (for benchmarks and tests).
bool onednn_matmul_available();

} // namespace lstm_ext::cpu
