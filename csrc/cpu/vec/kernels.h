// lstm_ext's vector kernel library: every kernel the ops call on raw
// row-major buffers, its arguments and their shapes, in one place.
//
//   forward_pointwise, backward_pointwise   the cell's element-wise passes
//   fused_forward_step (+ pack_step_weights) one whole forward step of a layer
//   small_gemm, gemv_rows, gemv_cols          the per-step recurrent products
//
// Large products stay in a GEMM library (../gemm.h). Each kernel is written
// once (cell_math.h, gemm_kernels.h), compiled once per CPU capability
// (kernels_{default,avx2,avx512}.cpp, each with its own -m flags) and called
// through the stub declared here, which runs the build chosen for this CPU
// (dispatch.h). Call a kernel as a function: vec::gemv_rows<float>(...).
//
// Adding a kernel touches three places:
//   1. here: its stub, LSTM_EXT_DECLARE_KERNEL(name, signature), with its
//      arguments documented;
//   2. its definition, a template of the same name and signature in
//      namespace CPU_CAPABILITY (cell_math.h or gemm_kernels.h);
//   3. kernel_list.h: LSTM_EXT_REGISTER_KERNEL(name).
//
// Shapes: H = hidden size; "rows" = batch rows. A row's gates are laid out
// [i | f | g | o], each H wide (torch.nn.LSTM's order). Every buffer is
// row-major and contiguous unless a leading dimension says otherwise.
#pragma once

#include <cstdint>

#include "dispatch.h"

namespace lstm_ext::cpu::vec {

// Work per thread before a second thread joins a pointwise pass. A standalone
// cell step (between Python calls) gains little from threads on small passes;
// a layer step must not leave a serial gap between its parallel regions, or
// OpenMP's idle threads go to sleep and are woken every step (see
// parallel_spans in cell_math.h).
constexpr int64_t kStandaloneElementsPerThread = 16384;
constexpr int64_t kLayerElementsPerThread = 1024;

// ---------------------------------------------------------------------------
// The cell's element-wise passes (cell_math.h).

// The extent of an element-wise pass: `rows` rows of `hidden` units, and the
// work per thread before a second thread joins (the constants above).
struct PassExtent {
  int64_t rows;
  int64_t hidden;
  int64_t elements_per_thread = kStandaloneElementsPerThread;
};

// Forward: gates (+ b_ih + b_hh) are the pre-activations; writes the
// activated gates i, f, g, o back into gates, then
//   c_next = f * c_prev + i * g,   h_next = o * tanh(c_next).
template <typename T>
struct PointwiseForward : PassExtent {
  T* gates;          // (rows, 4H): pre-activations in, activated gates out
  const T* b_ih;     // (4H) added to the pre-activations, or nullptr
  const T* b_hh;     // (4H) likewise, or nullptr
  const T* c_prev;   // (rows, H)
  T* c_next;         // (rows, H)
  T* h_next;         // (rows, H)
};
LSTM_EXT_DECLARE_KERNEL(forward_pointwise, void(const PointwiseForward<T>& args));

// Backward of PointwiseForward: the gradient w.r.t. the pre-activations and
// w.r.t. c_prev, from the gradients w.r.t. h_next and c_next.
template <typename T>
struct PointwiseBackward : PassExtent {
  const T* gates;        // (rows, 4H) activated gates saved by the forward
  const T* c_prev;       // (rows, H)
  const T* c_next;       // (rows, H)
  const T* grad_h;       // (rows, H) or nullptr (zeros)
  const T* grad_h_extra; // (rows, H) added to grad_h, or nullptr: a layer's
                         // output gradient at this step
  const T* grad_c;       // (rows, H) or nullptr (zeros)
  T* grad_gates;         // (rows, 4H) gradient w.r.t. the pre-activations
  T* grad_c_prev;        // (rows, H); may alias grad_c (read before written)
};
LSTM_EXT_DECLARE_KERNEL(backward_pointwise, void(const PointwiseBackward<T>& args));

// ---------------------------------------------------------------------------
// One whole forward step of a layer, fused (gemm_kernels.h): gates +=
// h_prev @ W_hh^T for all four gates of a block of hidden units, then the cell
// update (as PointwiseForward) on those units while their sums are still in
// L1. One parallel region per step, no second pass over the gates.
template <typename T>
struct StepForward {
  T* gates;          // (rows, 4H): input projection in, activated gates out
  const T* w_packed; // W_hh (4H, H) as pack_step_weights lays it out
  const T* h_prev;   // (rows, H)
  const T* c_prev;   // (rows, H)
  T* c_next;         // (rows, H)
  T* h_next;         // (rows, H)
  const T* b_ih;     // (4H) or nullptr
  const T* b_hh;     // (4H) or nullptr
  int64_t rows;
  int64_t hidden;
  // A small input (lstm_layer_kernel.cpp, kStepProjectionMaxInput): the
  // step's input projection is made here, each thread for its own units,
  // gates[r, u] = sum over i in order of x[r, i] * w_ih[i, u] (one FMA each,
  // the first onto -0), instead of read from gates; in inference gates is
  // then one step's scratch.
  const T* x = nullptr;     // (rows, input_size) this step's input, or nullptr
  const T* w_ih = nullptr;  // (input_size, 4H): W_ih transposed, with x
  int64_t input_size = 0;   // with x
};
LSTM_EXT_DECLARE_KERNEL(fused_forward_step, void(const StepForward<T>& args));

// The packed layout of W_hh that fused_forward_step reads: its size in
// elements for a hidden size, and the packing of w_hh (4H, H) into `packed`
// (step_weights_size(H) elements). Both depend on the vector width of the
// build in use: pack and step with the same one (the stub guarantees it).
LSTM_EXT_DECLARE_KERNEL(step_weights_size, int64_t(int64_t hidden));
LSTM_EXT_DECLARE_KERNEL(pack_step_weights, void(const T* w_hh, int64_t hidden, T* packed));

// ---------------------------------------------------------------------------
// Per-step recurrent products (gemm_kernels.h).

// C (M, N) = [C +] A (M, K) @ B (K, N), all row-major with leading dimensions
// lda, ldb, ldc; `accumulate` adds to C instead of overwriting it. For the
// per-step recurrent products of a layer, where a BLAS call's fixed cost
// (set-up, threading, packing B again every step) weighs: B (W_hh or its
// transpose) stays as it is, and register-blocked vector FMAs run straight
// from it.
LSTM_EXT_DECLARE_KERNEL(small_gemm, void(int64_t M, int64_t N, int64_t K, const T* A,
                                         int64_t lda, const T* B, int64_t ldb, T* C,
                                         int64_t ldc, bool accumulate));

// small_gemm on a right operand packed once for many products (a layer's
// W_hh for every step): B (K, N, leading dimension ldb) laid out by
// pack_gemm_panels as column panels of small_gemm's block width, each K rows
// contiguous and zero past N (gemm_panels_size(K, N) elements). W_hh read in
// place has a power-of-two stride between its rows, whose cache lines collide:
// the backward's dh = dgates @ W_hh at (64, 2048) x (2048, 512) ran at
// ~50 GFLOP/s. The product runs K in chunks that stay in L1.
LSTM_EXT_DECLARE_KERNEL(gemm_panels_size, int64_t(int64_t K, int64_t N));
LSTM_EXT_DECLARE_KERNEL(pack_gemm_panels, void(const T* B, int64_t K, int64_t N, int64_t ldb,
                                               T* packed));
LSTM_EXT_DECLARE_KERNEL(small_gemm_packed, void(int64_t M, int64_t N, int64_t K, const T* A,
                                                int64_t lda, const T* packed, T* C, int64_t ldc,
                                                bool accumulate));

// Batch-1 recurrent products, where a GEMM library's set-up costs more than the
// arithmetic (a streaming step, one sequence at a time). w is row-major
// (rows, cols), rows = 4H; x and y are vectors.
//   gemv_rows: y[r] += dot(w[r, :], x)          (gates += W_hh h)
//   gemv_cols: y[j]  = sum_r x[r] * w[r, j]     (dh = dgates W_hh)
LSTM_EXT_DECLARE_KERNEL(gemv_rows, void(const T* w, int64_t rows, int64_t cols, const T* x, T* y));
LSTM_EXT_DECLARE_KERNEL(gemv_cols, void(const T* w, int64_t rows, int64_t cols, const T* x, T* y));

} // namespace lstm_ext::cpu::vec
