// Which build the int8 kernels run (int8_kernels.h): the AMX one where it was
// compiled in (LSTM_EXT_HAVE_AMX_INT8, from sources.txt), the CPU has
// AMX-TILE and AMX-INT8 (CPUID leaf 7, EDX bits 24 and 25), Linux grants the
// tile data state and LSTM_EXT_INT8_AMX is not 0; else the AVX512-VNNI one
// where compiled in and the CPU has AVX512-VNNI (CPUID leaf 7, ECX bit 11);
// both only where ATen's capability build is AVX-512 (so
// ATEN_CPU_CAPABILITY=avx2|default turns them off); else the capability
// build's own compilation.
#include "int8_kernels.h"

#include <torch/library.h>

#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

#include "../config.h"

namespace lstm_ext::cpu::vec {
namespace {

[[maybe_unused]] bool cpu_has_avx512_vnni() {
#if defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (ecx >> 11) & 1u;
#else
  return false;
#endif
}

int detect_int8_build() {
  if (capability() != Capability::AVX512) return static_cast<int>(capability());
#if defined(LSTM_EXT_HAVE_AMX_INT8)
  if (config().int8_amx && cpu_has_amx(25)) return kAmxInt8Build;
#endif
#if defined(LSTM_EXT_HAVE_AVX512_VNNI)
  if (cpu_has_avx512_vnni()) return kAvx512VnniBuild;
#endif
  return static_cast<int>(capability());
}

} // namespace

int int8_build() {
  static const int chosen = detect_int8_build();
  return chosen;
}

const char* int8_build_name() {
  switch (int8_build()) {
    case kAmxInt8Build: return "amx_int8";
    case kAvx512VnniBuild: return "avx512_vnni";
    default: return capability_name();
  }
}

} // namespace lstm_ext::cpu::vec

// The int8 kernels' build, for tests and benchmarks.
TORCH_LIBRARY_FRAGMENT(lstm_ext, m) {
  m.def("int8_kernel_build() -> str",
        [] { return std::string(lstm_ext::cpu::vec::int8_build_name()); });
}
