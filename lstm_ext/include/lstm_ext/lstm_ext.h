// lstm_ext's ops for C++ programs built against the installed Python package
// (no source tree needed):
//
//   find_package(Torch REQUIRED)
//   find_package(lstm_ext REQUIRED)        # lstm_extConfig.cmake, in the package
//   target_link_libraries(app PRIVATE lstm_ext::lstm_ext)
//
// configured with
//   -DCMAKE_PREFIX_PATH="$(python -c 'import torch, lstm_ext.export as e;
//                          print(torch.utils.cmake_prefix_path + ";" + e.cmake_prefix_path)')"
//
// lstm_ext::lstm_ext links the op library (the package's _C.abi3.so, which has
// no Python in it) with --no-as-needed, so its TORCH_LIBRARY registrations run
// when the program starts: torch::jit::load of a scripted lstm_ext model, an
// AOTInductor .pt2 package (torch::inductor::AOTIModelPackageLoader) and the
// calls below all find the ops. A program that prefers to dlopen the library
// finds its path in the CMake variable lstm_ext_LIBRARY.
//
// Each op is declared once in lstm_ext/ops.h as a typed dispatcher handle,
// callable as a function; the schemas and conventions (gate order i, f, g, o;
// time-major input; optional arguments) are documented there:
//
//   auto [out, h_n, c_n, gates, cs] = lstm_ext::ops::lstm_layer_forward(
//       x, h0, c0, w_ih, w_hh, b_ih, b_hh, /*lengths=*/std::nullopt, /*w_hr=*/std::nullopt);
//
// Calls go through the dispatcher (autograd included: gradients flow in C++).
#pragma once

#include "lstm_ext/ops.h"  // IWYU pragma: export

#define LSTM_EXT_VERSION "0.1.0"
