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

// Whether a layer's steps run on lstm_ext's own step kernels
// (fused_forward_step, small_gemm in lstm_pointwise.h) rather than matmul plus
// separate pointwise passes. Per step, a library GEMM pays set-up, threading
// and the packing of W_hh again; the step kernels pack once per sequence (or
// read W_hh as it lies) and were faster at every benchmarked shape, from
// (32, 64) x (64, 256) (MKL: 2x slower) to (64, 512) x (512, 2048) (oneDNN:
// ~10% slower). LSTM_EXT_GEMM=aten turns them off, for comparison.
bool use_step_kernels();

} // namespace lstm_ext::cpu
