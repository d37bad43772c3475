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

// Calls NS::CALL in the capability build chosen for this CPU.
#if defined(LSTM_EXT_HAVE_AVX512)
#define LSTM_EXT_CASE_AVX512(CALL) \
  case Capability::Avx512:         \
    return AVX512::CALL;
#else
#define LSTM_EXT_CASE_AVX512(CALL)
#endif
#if defined(LSTM_EXT_HAVE_AVX2)
#define LSTM_EXT_CASE_AVX2(CALL) \
  case Capability::Avx2:         \
    return AVX2::CALL;
#else
#define LSTM_EXT_CASE_AVX2(CALL)
#endif
#define LSTM_EXT_DISPATCH(CALL)  \
  switch (capability()) {        \
    LSTM_EXT_CASE_AVX512(CALL)   \
    LSTM_EXT_CASE_AVX2(CALL)     \
    default:                     \
      return DEFAULT::CALL;      \
  }

template <typename T>
void forward_pointwise(const PointwiseForward<T>& args) {
  LSTM_EXT_DISPATCH(forward_pointwise(args))
}

template <typename T>
void backward_pointwise(const PointwiseBackward<T>& args) {
  LSTM_EXT_DISPATCH(backward_pointwise(args))
}

template <typename T>
void fused_forward_step(const StepForward<T>& args) {
  LSTM_EXT_DISPATCH(fused_forward_step(args))
}

template <typename T>
int64_t step_weights_size(int64_t hidden) {
  LSTM_EXT_DISPATCH(step_weights_size<T>(hidden))
}

template <typename T>
void pack_step_weights(const T* w_hh, int64_t hidden, T* packed) {
  LSTM_EXT_DISPATCH(pack_step_weights(w_hh, hidden, packed))
}

template <typename T>
void gemv_rows(const T* w, int64_t rows, int64_t cols, const T* x, T* y) {
  LSTM_EXT_DISPATCH(gemv_rows(w, rows, cols, x, y))
}

template <typename T>
void gemv_cols(const T* w, int64_t rows, int64_t cols, const T* x, T* y) {
  LSTM_EXT_DISPATCH(gemv_cols(w, rows, cols, x, y))
}

template <typename T>
void small_gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                int64_t ldb, T* C, int64_t ldc, bool accumulate) {
  LSTM_EXT_DISPATCH(small_gemm(M, N, K, A, lda, B, ldb, C, ldc, accumulate))
}

LSTM_EXT_INSTANTIATE_KERNELS(float)
LSTM_EXT_INSTANTIATE_KERNELS(double)

} // namespace lstm_ext::cpu
