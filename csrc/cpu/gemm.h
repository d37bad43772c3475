// out = beta * out + a @ b, on whichever GEMM library is fastest for the shape.
//
// ATen's float32 GEMM is MKL, whose kernels on AMD CPUs run at half the speed
// of oneDNN's (measured on this project's EPYC machines: 200 vs 410 GFLOP/s on
// two cores), which is what torch.nn.LSTM uses. oneDNN's matmul costs ~15 us of
// set-up per call, so small products stay on MKL. oneDNN is reached through
// ATen's exported at::native::mkldnn_matmul, bound weakly: a torch without it
// (or with another signature) keeps MKL. LSTM_EXT_GEMM=aten forces MKL
// (config.h).
//
// The per-step products of a layer, where a library call's fixed cost weighs,
// have their own kernels instead (vec/kernels.h: small_gemm, the GEMVs and the
// fused step).
#pragma once

#include <ATen/core/Tensor.h>

namespace lstm_ext::cpu {

// a (M, K), b (K, N), out (M, N), any strides ATen's GEMMs accept. beta == 0
// means out is not read (as in BLAS): it may hold anything, NaN included.
// On MKL, a product of fewer than 64 rows runs in column tiles fixed by its
// shape, one thread each: MKL split such products by thread count (gemm.cpp).
// bfloat16 operands and out: see aten_bf16_gemm_is_native.
void matmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out, double beta);

// a @ b into a fresh (M, N) tensor of a's dtype, by the matmul above.
at::Tensor matmul_new(const at::Tensor& a, const at::Tensor& b);

// Whether ATen's bfloat16 GEMM runs on oneDNN on this CPU (torch's
// mkldnn::_is_mkldnn_bf16_supported: avx512bw/vl/dq or avx_ne_convert for
// torch 2.13). Where it does not (an AVX2-only CPU), ATen falls back to
// scalar loops: (3200, 2048) @ (2048, 512) took 7.8 s there against 76 ms
// through float32. So there matmul computes a bfloat16 product in float32
// (the operands converted: a product of two bf16 values is exact in float32,
// the sums are float32 as oneDNN's, one rounding of the result to bf16).
bool aten_bf16_gemm_is_native();

// The same, for a caller that runs it on one thread (OneThread, step_team.h):
// ATen's GEMM (MKL) except on AMD CPUs, where it is oneDNN as in matmul. MKL
// is kept off multi-threaded products because it splits their sums by thread
// count (gemm.cpp); on one thread it was faster on this project's Intel Xeon:
// training with the backward's one-thread products (backward_products.h) on
// MKL against oneDNN, 2 threads, 0.91-0.93 of the time at (32,32,64,50),
// 0.85-0.86 at (64,1,32,336), 0.91-0.93 at (16,64,128,100).
void matmul_one_thread(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out,
                       double beta);

} // namespace lstm_ext::cpu
