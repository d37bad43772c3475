// The AVX512-BF16 build of the bfloat16 kernels (bf16_kernels.h): the same
// source as every build's (bf16_math.h), with vdpbf16ps for the pair products.
// setup.py and CMakeLists.txt compile this file alone with -mavx512bf16
// (csrc/sources.txt); bf16_dispatch.cpp runs it only where CPUID reports
// AVX512-BF16 and ATen's capability is AVX-512. Its own namespace
// (CPU_CAPABILITY AVX512_BF16) keeps its inline functions, compiled with
// these flags, apart from the plain AVX-512 build's.
#define CPU_CAPABILITY AVX512_BF16
#define CPU_CAPABILITY_AVX512
#define LSTM_EXT_BF16_DPBF16
#define LSTM_EXT_BF16_BUILD ::lstm_ext::cpu::vec::kAvx512Bf16Build
#include "bf16_kernel_list.h"
