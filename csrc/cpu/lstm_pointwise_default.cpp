// The default build of the pointwise kernels.
#define CPU_CAPABILITY DEFAULT

#include "lstm_pointwise_impl.h"
