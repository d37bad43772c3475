// The AMX build of the int8 kernels (int8_kernels.h): the AVX512-VNNI build
// plus AMX tiles (tdpbusd) for the products of 4 rows or more. Compiled alone
// with -mamx-tile -mamx-int8 (csrc/sources.txt); run only where CPUID reports
// AMX-INT8 and the kernel grants this process the tile state
// (int8_dispatch.cpp), unless LSTM_EXT_INT8_AMX=0.
#define CPU_CAPABILITY AMX_INT8
#define CPU_CAPABILITY_AVX512
#define LSTM_EXT_INT8_VNNI
#define LSTM_EXT_INT8_AMX
#define LSTM_EXT_INT8_BUILD ::lstm_ext::cpu::vec::kAmxInt8Build
#include "int8_kernel_list.h"
