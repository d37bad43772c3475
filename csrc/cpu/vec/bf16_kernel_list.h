// One build's registration of the bfloat16 kernels (bf16_kernels.h) with
// their stubs. Included by kernel_list.h (every capability build, slot
// Capability::CPU_CAPABILITY) and by kernels_avx512_bf16.cpp (slot
// kAvx512Bf16Build, which defines LSTM_EXT_BF16_BUILD first).
#pragma once

#include "bf16_kernels.h"
#include "bf16_math.h"

#ifndef LSTM_EXT_BF16_BUILD
#define LSTM_EXT_BF16_BUILD static_cast<int>(::lstm_ext::cpu::vec::Capability::CPU_CAPABILITY)
#endif

namespace lstm_ext::cpu::vec::CPU_CAPABILITY {

#define LSTM_EXT_REGISTER_BF16_KERNEL(NAME)                       \
  const bool NAME##_registered = [] {                             \
    ::lstm_ext::cpu::vec::NAME.builds[LSTM_EXT_BF16_BUILD] = &NAME; \
    return true;                                                  \
  }();

LSTM_EXT_REGISTER_BF16_KERNEL(bf16_panel_size)
LSTM_EXT_REGISTER_BF16_KERNEL(bf16_pack_gates)
LSTM_EXT_REGISTER_BF16_KERNEL(bf16_pack_cols)
LSTM_EXT_REGISTER_BF16_KERNEL(bf16_forward_step)
LSTM_EXT_REGISTER_BF16_KERNEL(bf16_backward_pointwise)
LSTM_EXT_REGISTER_BF16_KERNEL(bf16_gemm)

} // namespace lstm_ext::cpu::vec::CPU_CAPABILITY
