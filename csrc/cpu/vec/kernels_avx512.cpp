// The avx512 build of the vector kernels. setup.py and CMakeLists.txt compile
// this file alone with the matching -m flags (csrc/sources.txt); it runs only
// where dispatch.cpp has checked that the CPU supports them.
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#include "kernel_list.h"
