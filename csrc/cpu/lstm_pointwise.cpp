// Run-time choice between the capability builds of the pointwise kernels.
// ATen's own choice (at::get_cpu_capability) is reused so that the
// ATEN_CPU_CAPABILITY environment variable steers both alike, e.g. to test the
// AVX2 or default build on an AVX-512 machine.
#include "lstm_pointwise.h"

#include <ATen/Version.h>

namespace lstm_ext::cpu {
namespace {

enum class Capability { Default, Avx2, Avx512 };

Capability detect() {
  const std::string aten = at::get_cpu_capability();
#if defined(LSTM_EXT_HAVE_AVX512)
  if (aten == "AVX512") return Capability::Avx512;
#endif
#if defined(LSTM_EXT_HAVE_AVX2)
  if (aten == "AVX512" || aten == "AVX2") return Capability::Avx2;
#endif
  return Capability::Default;
}

Capability capability() {
  static const Capability cap = detect();
  return cap;
}

} // namespace

const char* pointwise_capability() {
  switch (capability()) {
    case Capability::Avx512: return "avx512";
    case Capability::Avx2: return "avx2";
    default: return "default";
  }
}

template <typename T>
void forward_pointwise(const PointwiseForward<T>& args) {
  switch (capability()) {
#if defined(LSTM_EXT_HAVE_AVX512)
    case Capability::Avx512: return AVX512::forward_pointwise(args);
#endif
#if defined(LSTM_EXT_HAVE_AVX2)
    case Capability::Avx2: return AVX2::forward_pointwise(args);
#endif
    default: return DEFAULT::forward_pointwise(args);
  }
}

template <typename T>
void backward_pointwise(const PointwiseBackward<T>& args) {
  switch (capability()) {
#if defined(LSTM_EXT_HAVE_AVX512)
    case Capability::Avx512: return AVX512::backward_pointwise(args);
#endif
#if defined(LSTM_EXT_HAVE_AVX2)
    case Capability::Avx2: return AVX2::backward_pointwise(args);
#endif
    default: return DEFAULT::backward_pointwise(args);
  }
}

template <typename T>
void gemv_rows(const T* w, int64_t rows, int64_t cols, const T* x, T* y) {
  switch (capability()) {
#if defined(LSTM_EXT_HAVE_AVX512)
    case Capability::Avx512: return AVX512::gemv_rows(w, rows, cols, x, y);
#endif
#if defined(LSTM_EXT_HAVE_AVX2)
    case Capability::Avx2: return AVX2::gemv_rows(w, rows, cols, x, y);
#endif
    default: return DEFAULT::gemv_rows(w, rows, cols, x, y);
  }
}

template <typename T>
void gemv_cols(const T* w, int64_t rows, int64_t cols, const T* x, T* y) {
  switch (capability()) {
#if defined(LSTM_EXT_HAVE_AVX512)
    case Capability::Avx512: return AVX512::gemv_cols(w, rows, cols, x, y);
#endif
#if defined(LSTM_EXT_HAVE_AVX2)
    case Capability::Avx2: return AVX2::gemv_cols(w, rows, cols, x, y);
#endif
    default: return DEFAULT::gemv_cols(w, rows, cols, x, y);
  }
}

template <typename T>
void fused_forward_step(const StepForward<T>& args) {
  switch (capability()) {
#if defined(LSTM_EXT_HAVE_AVX512)
    case Capability::Avx512: return AVX512::fused_forward_step(args);
#endif
#if defined(LSTM_EXT_HAVE_AVX2)
    case Capability::Avx2: return AVX2::fused_forward_step(args);
#endif
    default: return DEFAULT::fused_forward_step(args);
  }
}

template <typename T>
int64_t step_weights_size(int64_t hidden) {
  switch (capability()) {
#if defined(LSTM_EXT_HAVE_AVX512)
    case Capability::Avx512: return AVX512::step_weights_size<T>(hidden);
#endif
#if defined(LSTM_EXT_HAVE_AVX2)
    case Capability::Avx2: return AVX2::step_weights_size<T>(hidden);
#endif
    default: return DEFAULT::step_weights_size<T>(hidden);
  }
}

template <typename T>
void pack_step_weights(const T* w_hh, int64_t hidden, T* packed) {
  switch (capability()) {
#if defined(LSTM_EXT_HAVE_AVX512)
    case Capability::Avx512: return AVX512::pack_step_weights(w_hh, hidden, packed);
#endif
#if defined(LSTM_EXT_HAVE_AVX2)
    case Capability::Avx2: return AVX2::pack_step_weights(w_hh, hidden, packed);
#endif
    default: return DEFAULT::pack_step_weights(w_hh, hidden, packed);
  }
}

template void fused_forward_step<float>(const StepForward<float>&);
template void fused_forward_step<double>(const StepForward<double>&);
template int64_t step_weights_size<float>(int64_t);
template int64_t step_weights_size<double>(int64_t);
template void pack_step_weights<float>(const float*, int64_t, float*);
template void pack_step_weights<double>(const double*, int64_t, double*);

template <typename T>
void small_gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                int64_t ldb, T* C, int64_t ldc, bool accumulate) {
  switch (capability()) {
#if defined(LSTM_EXT_HAVE_AVX512)
    case Capability::Avx512: return AVX512::small_gemm(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
#endif
#if defined(LSTM_EXT_HAVE_AVX2)
    case Capability::Avx2: return AVX2::small_gemm(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
#endif
    default: return DEFAULT::small_gemm(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
  }
}

template void small_gemm<float>(int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                                int64_t, float*, int64_t, bool);
template void small_gemm<double>(int64_t, int64_t, int64_t, const double*, int64_t,
                                 const double*, int64_t, double*, int64_t, bool);
template void gemv_rows<float>(const float*, int64_t, int64_t, const float*, float*);
template void gemv_rows<double>(const double*, int64_t, int64_t, const double*, double*);
template void gemv_cols<float>(const float*, int64_t, int64_t, const float*, float*);
template void gemv_cols<double>(const double*, int64_t, int64_t, const double*, double*);
template void forward_pointwise<float>(const PointwiseForward<float>&);
template void forward_pointwise<double>(const PointwiseForward<double>&);
template void backward_pointwise<float>(const PointwiseBackward<float>&);
template void backward_pointwise<double>(const PointwiseBackward<double>&);

} // namespace lstm_ext::cpu
