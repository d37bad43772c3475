// One capability build of the vector kernel library: the definitions
// (cell_math.h, gemm_kernels.h) and the list that registers each kernel with
// its stub in kernels.h. Included once by each kernels_<capability>.cpp, after
// it has defined CPU_CAPABILITY; a kernel missing from this list stays
// unregistered in every build.
#pragma once

#include "cell_math.h"
#include "dispatch.h"
#include "gemm_kernels.h"
#include "kernels.h"

namespace lstm_ext::cpu::vec::CPU_CAPABILITY {

LSTM_EXT_REGISTER_KERNEL(forward_pointwise)
LSTM_EXT_REGISTER_KERNEL(backward_pointwise)
LSTM_EXT_REGISTER_KERNEL(fused_forward_step)
LSTM_EXT_REGISTER_KERNEL(step_weights_size)
LSTM_EXT_REGISTER_KERNEL(pack_step_weights)
LSTM_EXT_REGISTER_KERNEL(small_gemm)
LSTM_EXT_REGISTER_KERNEL(gemm_panels_size)
LSTM_EXT_REGISTER_KERNEL(pack_gemm_panels)
LSTM_EXT_REGISTER_KERNEL(small_gemm_packed)
LSTM_EXT_REGISTER_KERNEL(gemv_rows)
LSTM_EXT_REGISTER_KERNEL(gemv_cols)

} // namespace lstm_ext::cpu::vec::CPU_CAPABILITY

#include "bf16_kernel_list.h"  // the bfloat16 kernels (bf16_kernels.h)
#include "int8_kernel_list.h"  // the int8 kernels (int8_kernels.h)
