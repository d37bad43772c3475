// One build's registration of the int8 kernels (int8_kernels.h) with their
// stubs. Included by kernel_list.h (every capability build, slot
// Capability::CPU_CAPABILITY) and by kernels_{avx512_vnni,amx_int8}.cpp (slots
// kAvx512VnniBuild, kAmxInt8Build, which define LSTM_EXT_INT8_BUILD first).
#pragma once

#include "int8_kernels.h"
#include "int8_math.h"

#ifndef LSTM_EXT_INT8_BUILD
#define LSTM_EXT_INT8_BUILD static_cast<int>(::lstm_ext::cpu::vec::Capability::CPU_CAPABILITY)
#endif

namespace lstm_ext::cpu::vec::CPU_CAPABILITY {

#define LSTM_EXT_REGISTER_INT8_KERNEL(NAME)                       \
  const bool NAME##_registered = [] {                             \
    ::lstm_ext::cpu::vec::NAME.builds[LSTM_EXT_INT8_BUILD] = &NAME; \
    return true;                                                  \
  }();

LSTM_EXT_REGISTER_INT8_KERNEL(int8_panel_size)
LSTM_EXT_REGISTER_INT8_KERNEL(int8_pack_gates)
LSTM_EXT_REGISTER_INT8_KERNEL(int8_row_bytes)
LSTM_EXT_REGISTER_INT8_KERNEL(int8_quantize_rows)
LSTM_EXT_REGISTER_INT8_KERNEL(int8_forward_step)

} // namespace lstm_ext::cpu::vec::CPU_CAPABILITY
