// Run-time choice between the capability builds of the vector kernels, in the
// manner of ATen's DispatchStub: a kernel's stub (LSTM_EXT_DECLARE_KERNEL, in
// kernels.h) holds one function pointer per capability build; each build
// registers its own compilation of the kernel (LSTM_EXT_REGISTER_KERNEL, in
// kernel_list.h); a call through the stub runs the build chosen for this CPU.
//
// The choice reuses ATen's (at::get_cpu_capability), so that the
// ATEN_CPU_CAPABILITY environment variable steers both alike, e.g. to test the
// AVX2 or default build on an AVX-512 machine; never above what the CPU runs
// (ATen reports AVX512 for ATEN_CPU_CAPABILITY=avx512 on any CPU).
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>

namespace lstm_ext::cpu::vec {

// The capability builds; each enumerator is also the CPU_CAPABILITY name (and
// namespace) its translation unit is compiled under.
enum class Capability : int { DEFAULT = 0, AVX2 = 1, AVX512 = 2 };
constexpr int kCapabilities = 3;

// The best build that was compiled in and that ATen allows on this CPU.
Capability detect_capability();

// detect_capability(), decided once.
inline Capability capability() {
  static const Capability chosen = detect_capability();
  return chosen;
}

// The name of the build chosen at run time ("avx512", "avx2", "default").
const char* capability_name();

// Whether this CPU has AMX-TILE and the AMX unit of CPUID leaf 7 EDX bit
// `unit_bit` (22: AMX-BF16, 25: AMX-INT8), and Linux grants this process the
// tile data state (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA;
// without it the first tile instruction faults). For bf16_dispatch.cpp and
// int8_dispatch.cpp.
bool cpu_has_amx(int unit_bit);

template <typename Signature>
struct KernelStub;

// A kernel of signature R(Args...): one pointer per capability build, all
// null until the builds register (at library load, see LSTM_EXT_REGISTER_KERNEL).
// Constant-initialised, so registration order does not matter.
template <typename R, typename... Args>
struct KernelStub<R(Args...)> {
  using Fn = R (*)(Args...);
  Fn builds[kCapabilities] = {};

  R operator()(Args... args) const {
    const Fn fn = builds[static_cast<int>(capability())];
    TORCH_INTERNAL_ASSERT_DEBUG_ONLY(fn != nullptr, "lstm_ext: a vector kernel is not registered");
    return fn(args...);
  }
};

} // namespace lstm_ext::cpu::vec

// Declares kernel NAME, a template over the scalar type T (float, double)
// whose signature (the remaining arguments, in terms of T) is given once here;
// call it as NAME<T>(...). Like ATen's DECLARE_DISPATCH, in a header (kernels.h).
#define LSTM_EXT_DECLARE_KERNEL(NAME, ...) \
  template <typename T>                    \
  inline ::lstm_ext::cpu::vec::KernelStub<__VA_ARGS__> NAME {}

// In a capability build (CPU_CAPABILITY defined, inside its namespace):
// registers this build's float and double compilations of kernel NAME with
// the stub NAME of kernels.h. A definition whose signature differs from the
// stub's does not compile here.
#define LSTM_EXT_REGISTER_KERNEL(NAME)                                                     \
  const bool NAME##_registered = [] {                                                      \
    constexpr int build = static_cast<int>(::lstm_ext::cpu::vec::Capability::CPU_CAPABILITY); \
    ::lstm_ext::cpu::vec::NAME<float>.builds[build] = &NAME<float>;                        \
    ::lstm_ext::cpu::vec::NAME<double>.builds[build] = &NAME<double>;                      \
    return true;                                                                           \
  }();
