# find_package(lstm_ext): lstm_ext's op library and header for C++ programs,
# from the installed Python package (as torchvision ships TorchVisionConfig.cmake).
#
#   find_package(Torch REQUIRED)
#   find_package(lstm_ext REQUIRED)
#   target_link_libraries(app PRIVATE lstm_ext::lstm_ext)
#
# configured with both packages' prefixes:
#   -DCMAKE_PREFIX_PATH="$(python -c 'import torch, lstm_ext.export as e;
#                          print(torch.utils.cmake_prefix_path + ";" + e.cmake_prefix_path)')"
#
# Defines
#   lstm_ext::lstm_ext     imported target: include directory (lstm_ext/lstm_ext.h,
#                          lstm_ext/ops.h), the op library linked --no-as-needed (the
#                          program calls nothing in it by name: its op registrations
#                          must run at start-up), torch, and the shared C++ runtime
#                          where the compiler would link a static one
#                          (lstm_extCxxRuntime.cmake)
#   lstm_ext_LIBRARY       the op library (lstm_ext/_C.abi3.so; no Python in it), for
#                          programs that dlopen it instead
#   lstm_ext_INCLUDE_DIRS, lstm_ext_LIBRARIES, lstm_ext_VERSION, lstm_ext_FOUND
#
# The library was built against one torch release: use that torch (the one the
# Python package runs with) for the program too.
get_filename_component(_lstm_ext_root "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

if(NOT TARGET torch)
  include(CMakeFindDependencyMacro)
  # torch is installed beside lstm_ext (site-packages): found without a hint too
  find_dependency(Torch HINTS "${_lstm_ext_root}/../torch/share/cmake/Torch")
endif()

file(GLOB _lstm_ext_library "${_lstm_ext_root}/_C*.so")
if(NOT _lstm_ext_library)
  set(lstm_ext_FOUND FALSE)
  set(lstm_ext_NOT_FOUND_MESSAGE
      "lstm_ext's op library (_C*.so) is missing in ${_lstm_ext_root}: build the package "
      "(pip install --no-build-isolation .)")
  return()
endif()
list(GET _lstm_ext_library 0 lstm_ext_LIBRARY)
set(lstm_ext_INCLUDE_DIRS "${_lstm_ext_root}/include")
if(NOT EXISTS "${lstm_ext_INCLUDE_DIRS}/lstm_ext/ops.h")
  set(lstm_ext_FOUND FALSE)
  set(lstm_ext_NOT_FOUND_MESSAGE "lstm_ext's header lstm_ext/ops.h is missing in "
      "${lstm_ext_INCLUDE_DIRS}")
  return()
endif()

include("${CMAKE_CURRENT_LIST_DIR}/lstm_extCxxRuntime.cmake")  # LSTM_EXT_CXX_RUNTIME
if(NOT TARGET lstm_ext::lstm_ext)
  add_library(lstm_ext::lstm_ext INTERFACE IMPORTED)
  set_target_properties(lstm_ext::lstm_ext PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${lstm_ext_INCLUDE_DIRS}"
    INTERFACE_COMPILE_OPTIONS "${TORCH_CXX_FLAGS}"
    INTERFACE_LINK_LIBRARIES "-Wl,--no-as-needed,${lstm_ext_LIBRARY},--as-needed;${TORCH_LIBRARIES};${LSTM_EXT_CXX_RUNTIME}")
endif()
set(lstm_ext_LIBRARIES lstm_ext::lstm_ext)
if(NOT lstm_ext_VERSION)  # set by find_package from lstm_extConfigVersion.cmake
  set(lstm_ext_VERSION "0.1.0")
endif()
set(lstm_ext_FOUND TRUE)
unset(_lstm_ext_library)
unset(_lstm_ext_root)
