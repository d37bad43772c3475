// The default build of the vector kernels: portable code, compiled with the
// library's common flags. Always present; chosen where no wider build is.
#define CPU_CAPABILITY DEFAULT

#include "kernel_list.h"
