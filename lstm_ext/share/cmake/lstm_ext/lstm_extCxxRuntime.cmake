# LSTM_EXT_CXX_RUNTIME: what a C++ target that runs beside libtorch must also
# link so that its C++ runtime is the shared libstdc++.so.6 libtorch runs with.
# Empty for the usual toolchains. Some link a static copy instead: the gcc at
# /opt/gcc on an Ubuntu 24.04 image has no libstdc++.so of its own
# (-print-file-name=libstdc++.so names no file), and the op library it linked
# carried 258 symbols of the runtime; two copies in one process crash at the
# first error message formatted. There it is "-Wl,<path of the shared library>":
# the library named on the link line ahead of the compiler's own -lstdc++.
#
# Found once per build tree by a probe program that formats a number and
# throws: linked as the compiler links by default, then with the shared library
# named; kept is the first whose program needs libstdc++.so (readelf -d).
# setup.py does the same for the Python build (runtime_link_args).
# Included by lstm_extConfig.cmake and by examples/cpp/CMakeLists.txt.
if(DEFINED LSTM_EXT_CXX_RUNTIME)
  return()
endif()

set(_lstm_ext_probe_dir "${CMAKE_BINARY_DIR}/lstm_ext_cxx_runtime")
file(WRITE "${_lstm_ext_probe_dir}/probe.cpp" [=[
#include <sstream>
#include <stdexcept>
int main(int argc, char**) {
  std::ostringstream s;
  s << argc;
  if (argc > 5) throw std::runtime_error(s.str());
  return static_cast<int>(s.str().size()) - 1;
}
]=])
find_library(LSTM_EXT_SHARED_LIBSTDCXX NAMES libstdc++.so.6
             DOC "the shared C++ runtime libtorch runs with")
find_program(LSTM_EXT_READELF NAMES readelf DOC "readelf, to read a probe's NEEDED entries")

set(_lstm_ext_runtime "")
set(_lstm_ext_found FALSE)
if(LSTM_EXT_READELF)
  foreach(_lstm_ext_i RANGE 1)
    set(_lstm_ext_link "")
    if(_lstm_ext_i EQUAL 1)
      if(NOT LSTM_EXT_SHARED_LIBSTDCXX)
        break()
      endif()
      set(_lstm_ext_link LINK_LIBRARIES "${LSTM_EXT_SHARED_LIBSTDCXX}")
    endif()
    set(_lstm_ext_exe "${_lstm_ext_probe_dir}/probe${_lstm_ext_i}")
    try_compile(_lstm_ext_linked "${_lstm_ext_probe_dir}/build${_lstm_ext_i}"
                SOURCES "${_lstm_ext_probe_dir}/probe.cpp" ${_lstm_ext_link}
                COPY_FILE "${_lstm_ext_exe}")
    if(_lstm_ext_linked AND EXISTS "${_lstm_ext_exe}")
      execute_process(COMMAND "${LSTM_EXT_READELF}" -d "${_lstm_ext_exe}"
                      OUTPUT_VARIABLE _lstm_ext_dynamic ERROR_QUIET)
      if(_lstm_ext_dynamic MATCHES "libstdc\\+\\+\\.so|libc\\+\\+\\.so")
        if(_lstm_ext_i EQUAL 1)
          # As a linker argument, not a library path: CMake would otherwise
          # warn that it cannot order an rpath around a system directory.
          set(_lstm_ext_runtime "-Wl,${LSTM_EXT_SHARED_LIBSTDCXX}")
          message(STATUS "lstm_ext: ${CMAKE_CXX_COMPILER} links a static C++ runtime; "
                         "linking ${LSTM_EXT_SHARED_LIBSTDCXX} instead")
        endif()
        set(_lstm_ext_found TRUE)
        break()
      endif()
    endif()
    unset(_lstm_ext_linked CACHE)
    unset(_lstm_ext_linked)
  endforeach()
endif()
if(NOT _lstm_ext_found)
  message(WARNING "lstm_ext: could not find how ${CMAKE_CXX_COMPILER} links the shared C++ "
                  "runtime (libstdc++.so.6); a program that links a static copy beside "
                  "libtorch's crashes at its first formatted error message")
endif()
set(LSTM_EXT_CXX_RUNTIME "${_lstm_ext_runtime}" CACHE STRING
    "linked by C++ targets beside libtorch: the shared C++ runtime, where the compiler would link a static one")
unset(_lstm_ext_runtime)
unset(_lstm_ext_found)
unset(_lstm_ext_probe_dir)
unset(_lstm_ext_exe)
unset(_lstm_ext_link)
unset(_lstm_ext_dynamic)
