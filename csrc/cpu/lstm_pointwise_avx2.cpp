// The avx2 build of the pointwise kernels. setup.py and CMakeLists.txt compile
// this file alone with the matching -m flags; it runs only where
// lstm_pointwise.cpp has checked that the CPU supports them.
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "lstm_pointwise_impl.h"
