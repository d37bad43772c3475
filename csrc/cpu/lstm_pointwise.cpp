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

template void forward_pointwise<float>(const PointwiseForward<float>&);
template void forward_pointwise<double>(const PointwiseForward<double>&);
template void backward_pointwise<float>(const PointwiseBackward<float>&);
template void backward_pointwise<double>(const PointwiseBackward<double>&);

} // namespace lstm_ext::cpu
