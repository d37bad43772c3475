// The AMX build of the bfloat16 kernels (bf16_kernels.h): the AVX512-BF16
// build plus AMX tiles for the products of 16 rows at a time (bf16_math.h).
// Compiled alone with -mamx-tile -mamx-bf16 (csrc/sources.txt); run only where
// CPUID reports AMX-BF16 and the kernel grants this process the tile state
// (bf16_dispatch.cpp), unless LSTM_EXT_BF16_AMX=0.
#define CPU_CAPABILITY AMX_BF16
#define CPU_CAPABILITY_AVX512
#define LSTM_EXT_BF16_DPBF16
#define LSTM_EXT_BF16_AMX
#define LSTM_EXT_BF16_BUILD ::lstm_ext::cpu::vec::kAmxBf16Build
#include "bf16_kernel_list.h"
