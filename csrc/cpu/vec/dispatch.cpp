// Which capability build of the vector kernels runs (dispatch.h). A build is a
// candidate only where it was compiled in (LSTM_EXT_HAVE_*, defined by
// setup.py and CMakeLists.txt for the per-capability lines of sources.txt that
// match the machine) and where ATen's own choice allows it.
#include "dispatch.h"

#include <ATen/Version.h>

#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace lstm_ext::cpu::vec {

namespace {

// Whether the CPU runs a build's instructions (sources.txt's flags for it).
// ATen's choice alone is not enough: ATEN_CPU_CAPABILITY=avx512 on an
// AVX2-only CPU (an AMD EPYC 7003) made ATen report AVX512, and our AVX-512
// kernels died there of SIGILL at their first instruction.
[[maybe_unused]] bool cpu_runs_avx512() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

[[maybe_unused]] bool cpu_runs_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

} // namespace

Capability detect_capability() {
  const std::string aten = at::get_cpu_capability();
#if defined(LSTM_EXT_HAVE_AVX512)
  if (aten == "AVX512" && cpu_runs_avx512()) return Capability::AVX512;
#endif
#if defined(LSTM_EXT_HAVE_AVX2)
  if ((aten == "AVX512" || aten == "AVX2") && cpu_runs_avx2()) return Capability::AVX2;
#endif
  return Capability::DEFAULT;
}

const char* capability_name() {
  switch (capability()) {
    case Capability::AVX512: return "avx512";
    case Capability::AVX2: return "avx2";
    default: return "default";
  }
}

bool cpu_has_amx(int unit_bit) {
#if defined(__x86_64__) && defined(__linux__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  if (((edx >> unit_bit) & 1u) == 0 || ((edx >> 24) & 1u) == 0) return false;
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  (void)unit_bit;
  return false;
#endif
}

} // namespace lstm_ext::cpu::vec
