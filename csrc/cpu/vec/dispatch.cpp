// Which capability build of the vector kernels runs (dispatch.h). A build is a
// candidate only where it was compiled in (LSTM_EXT_HAVE_*, defined by
// setup.py and CMakeLists.txt for the per-capability lines of sources.txt that
// match the machine) and where ATen's own choice allows it.
#include "dispatch.h"

#include <ATen/Version.h>

#include <string>

namespace lstm_ext::cpu::vec {

Capability detect_capability() {
  const std::string aten = at::get_cpu_capability();
#if defined(LSTM_EXT_HAVE_AVX512)
  if (aten == "AVX512") return Capability::AVX512;
#endif
#if defined(LSTM_EXT_HAVE_AVX2)
  if (aten == "AVX512" || aten == "AVX2") return Capability::AVX2;
#endif
  return Capability::DEFAULT;
}

const char* capability_name() {
  switch (capability()) {
    case Capability::AVX512: return "avx512";
    case Capability::AVX2: return "avx2";
    default: return "default";
  }
}

} // namespace lstm_ext::cpu::vec
