// The AVX512-VNNI build of the int8 kernels (int8_kernels.h): the same source
// as every build's (int8_math.h), with vpdpbusd for the quad products and
// AVX-512 quantization. Compiled alone with -mavx512vnni (csrc/sources.txt);
// int8_dispatch.cpp runs it only where CPUID reports AVX512-VNNI and ATen's
// capability is AVX-512. Its own namespace (CPU_CAPABILITY AVX512_VNNI) keeps
// its inline functions, compiled with these flags, apart from the others'.
#define CPU_CAPABILITY AVX512_VNNI
#define CPU_CAPABILITY_AVX512
#define LSTM_EXT_INT8_VNNI
#define LSTM_EXT_INT8_BUILD ::lstm_ext::cpu::vec::kAvx512VnniBuild
#include "int8_kernel_list.h"
