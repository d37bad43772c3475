// The vectorised kernels of an LSTM step, on raw row-major buffers: the fused
// element-wise passes (forward and backward), the fused forward step of a layer
// (recurrent product + cell update), a small GEMM and batch-1 GEMVs for the
// per-step products. Large products stay in ATen (gemm.h). Implemented once
// (lstm_pointwise_impl.h), compiled once per CPU capability
// (lstm_pointwise_{default,avx2,avx512}.cpp), and picked at run time by
// lstm_pointwise.cpp, as ATen's own DispatchStub does.
#pragma once

#include <cstdint>

namespace lstm_ext::cpu {

constexpr int64_t kStandaloneElementsPerThread = 16384;
constexpr int64_t kLayerElementsPerThread = 1024;

// Gate layout of one row: [i | f | g | o], each `hidden` wide.
template <typename T>
struct PointwiseForward {
  T* gates;          // (rows, 4H): pre-activations in, activated gates out
  const T* b_ih;     // (4H) added to the pre-activations, or nullptr
  const T* b_hh;     // (4H) likewise, or nullptr
  const T* c_prev;   // (rows, H)
  T* c_next;         // (rows, H)
  T* h_next;         // (rows, H)
  int64_t rows;
  int64_t hidden;
  // Work per thread before a second thread joins. A standalone cell step
  // (between Python calls) gains little from threads on small passes; a layer
  // step must not leave a serial gap between its parallel regions, or OpenMP's
  // idle threads go to sleep and are woken every step (see parallel_spans).
  int64_t elements_per_thread = kStandaloneElementsPerThread;
};

template <typename T>
struct PointwiseBackward {
  const T* gates;        // (rows, 4H) activated gates saved by the forward
  const T* c_prev;       // (rows, H)
  const T* c_next;       // (rows, H)
  const T* grad_h;       // (rows, H) or nullptr (zeros)
  const T* grad_h_extra; // (rows, H) added to grad_h, or nullptr: a layer's
                         // output gradient at this step
  const T* grad_c;       // (rows, H) or nullptr (zeros)
  T* grad_gates;         // (rows, 4H) gradient w.r.t. the pre-activations
  T* grad_c_prev;        // (rows, H); may alias grad_c (read before written)
  int64_t rows;
  int64_t hidden;
  int64_t elements_per_thread = kStandaloneElementsPerThread;  // as above
};

// One whole forward step of a layer, fused: gates += h_prev @ W_hh^T for all
// four gates of a block of hidden units, then the cell update on those units
// while the sums are still in registers. One parallel region per step, no
// second pass over the gates.
template <typename T>
struct StepForward {
  T* gates;          // (rows, 4H): input projection in, activated gates out
  const T* w_packed; // W_hh as pack_step_weights lays it out
  const T* h_prev;   // (rows, H)
  const T* c_prev;   // (rows, H)
  T* c_next;         // (rows, H)
  T* h_next;         // (rows, H)
  const T* b_ih;     // (4H) or nullptr
  const T* b_hh;     // (4H) or nullptr
  int64_t rows;
  int64_t hidden;
};

template <typename T>
void fused_forward_step(const StepForward<T>& args);
// The packed layout of W_hh (4H, H) that fused_forward_step reads, and its
// size in elements; both depend on the vector width of the capability in use.
template <typename T>
int64_t step_weights_size(int64_t hidden);
template <typename T>
void pack_step_weights(const T* w_hh, int64_t hidden, T* packed);

template <typename T>
void forward_pointwise(const PointwiseForward<T>& args);
template <typename T>
void backward_pointwise(const PointwiseBackward<T>& args);

// Batch-1 recurrent products, where a GEMM library's set-up costs more than the
// arithmetic (a streaming step, one sequence at a time). w is row-major
// (rows, cols), rows = 4H.
//   gemv_rows: y[r] += dot(w[r, :], x)          (gates += W_hh h)
//   gemv_cols: y[j]  = sum_r x[r] * w[r, j]     (dh = dgates W_hh)
template <typename T>
void gemv_rows(const T* w, int64_t rows, int64_t cols, const T* x, T* y);
template <typename T>
void gemv_cols(const T* w, int64_t rows, int64_t cols, const T* x, T* y);

// C (M, N) = [C +] A (M, K) @ B (K, N), all row-major with leading dimensions
// lda, ldb, ldc. For the per-step recurrent products of a layer, where a BLAS
// call's fixed cost (set-up, threading, packing B again every step) weighs:
// B (W_hh or its transpose) stays as it is, and register-blocked vector FMAs
// run straight from it.
template <typename T>
void small_gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                int64_t ldb, T* C, int64_t ldc, bool accumulate);

// Explicit instantiations of every kernel for one scalar type; used by each
// capability build and by the run-time dispatcher alike.
#define LSTM_EXT_INSTANTIATE_KERNELS(T)                                                 \
  template void forward_pointwise<T>(const PointwiseForward<T>&);                       \
  template void backward_pointwise<T>(const PointwiseBackward<T>&);                     \
  template void fused_forward_step<T>(const StepForward<T>&);                           \
  template int64_t step_weights_size<T>(int64_t);                                       \
  template void pack_step_weights<T>(const T*, int64_t, T*);                            \
  template void gemv_rows<T>(const T*, int64_t, int64_t, const T*, T*);                 \
  template void gemv_cols<T>(const T*, int64_t, int64_t, const T*, T*);                 \
  template void small_gemm<T>(int64_t, int64_t, int64_t, const T*, int64_t, const T*,   \
                              int64_t, T*, int64_t, bool);

// The name of the kernel build chosen at run time ("avx512", "avx2", "default").
const char* pointwise_capability();

// One declaration per capability build; see lstm_pointwise_impl.h.
#define LSTM_EXT_DECLARE_POINTWISE(CAP)                                   \
  namespace CAP {                                                         \
  template <typename T>                                                   \
  void forward_pointwise(const PointwiseForward<T>& args);                \
  template <typename T>                                                   \
  void backward_pointwise(const PointwiseBackward<T>& args);              \
  template <typename T>                                                   \
  void gemv_rows(const T* w, int64_t rows, int64_t cols, const T* x, T* y); \
  template <typename T>                                                   \
  void gemv_cols(const T* w, int64_t rows, int64_t cols, const T* x, T* y); \
  template <typename T>                                                   \
  void fused_forward_step(const StepForward<T>& args);                    \
  template <typename T>                                                   \
  int64_t step_weights_size(int64_t hidden);                              \
  template <typename T>                                                   \
  void pack_step_weights(const T* w_hh, int64_t hidden, T* packed);       \
  template <typename T>                                                   \
  void small_gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, \
                  const T* B, int64_t ldb, T* C, int64_t ldc, bool accumulate); \
  }

LSTM_EXT_DECLARE_POINTWISE(DEFAULT)
LSTM_EXT_DECLARE_POINTWISE(AVX2)
LSTM_EXT_DECLARE_POINTWISE(AVX512)

} // namespace lstm_ext::cpu
