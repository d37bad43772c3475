// Which build the bfloat16 kernels run (bf16_kernels.h): the AVX512-BF16 one
// where it was compiled in (LSTM_EXT_HAVE_AVX512_BF16, from sources.txt), the
// CPU reports AVX512-BF16 (CPUID leaf 7, sub-leaf 1, EAX bit 5) and ATen's
// capability build is AVX-512 (so ATEN_CPU_CAPABILITY=avx2|default also turns
// it off) -- and within it the AMX one where that was compiled in, the CPU has
// AMX-BF16 and LSTM_EXT_BF16_AMX is not 0; else the capability build's own
// compilation.
#include "bf16_kernels.h"

#include <torch/library.h>

#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

#include "../config.h"

namespace lstm_ext::cpu::vec {
namespace {

bool cpu_has_avx512_bf16() {
#if defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (eax >> 5) & 1u;
#else
  return false;
#endif
}

int detect_bf16_build() {
#if defined(LSTM_EXT_HAVE_AVX512_BF16)
  if (capability() == Capability::AVX512 && cpu_has_avx512_bf16()) {
#if defined(LSTM_EXT_HAVE_AMX_BF16)
    if (config().bf16_amx && cpu_has_amx(22)) return kAmxBf16Build;
#endif
    return kAvx512Bf16Build;
  }
#endif
  return static_cast<int>(capability());
}

} // namespace

int bf16_build() {
  static const int chosen = detect_bf16_build();
  return chosen;
}

const char* bf16_build_name() {
  switch (bf16_build()) {
    case kAmxBf16Build: return "amx_bf16";
    case kAvx512Bf16Build: return "avx512_bf16";
    default: return capability_name();
  }
}

} // namespace lstm_ext::cpu::vec

// The bf16 kernels' build, for tests and benchmarks.
TORCH_LIBRARY_FRAGMENT(lstm_ext, m) {
  m.def("bf16_kernel_build() -> str",
        [] { return std::string(lstm_ext::cpu::vec::bf16_build_name()); });
}
