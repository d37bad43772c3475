"""A library that carries its own copy of the C++ runtime is never used
(tools/check_runtime_link.py, run by setup.py and by the CMake build), and
setup.py links the shared runtime where the toolchain would link a static one.

Such a library crashed at its first TORCH_CHECK message on a toolchain that
linked libstdc++ statically (SIGSEGV in basic_ostream::_M_insert<long>); here,
linked by hand the same way, its messages came out cut short."""
import os
import shutil
import subprocess
import sys

import pytest

import lstm_ext
from helpers import ROOT

CHECK = os.path.join(ROOT, "tools", "check_runtime_link.py")
STATIC = "-static-libstdc++ -static-libgcc -Wl,-Bsymbolic-functions"
SOURCE = """
#include <sstream>
#include <string>
extern "C" int format_long(long v, char* out) {
  std::ostringstream s;
  s << v;
  const std::string r = s.str();
  r.copy(out, r.size());
  return static_cast<int>(r.size());
}
"""


def _check(*args):
    return subprocess.run([sys.executable, CHECK, *args], capture_output=True, text=True)


def test_the_installed_library_links_its_runtimes_dynamically():
    done = _check(lstm_ext.library_path())
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    """The same C++ source linked as libtorch links (shared libstdc++) and as
    the faulty toolchain did (static)."""
    d = tmp_path_factory.mktemp("link")
    (d / "f.cpp").write_text(SOURCE)
    out = {}
    for name, flags in (("shared", []), ("static", STATIC.split())):
        path = str(d / f"lib{name}.so")
        subprocess.run(["g++", "-shared", "-fPIC", "-O1", str(d / "f.cpp"), "-o", path, *flags],
                       check=True)
        out[name] = path
    return out


def test_check_accepts_a_dynamically_linked_library(libraries):
    assert _check(libraries["shared"]).returncode == 0


def test_check_refuses_a_static_libstdcxx_and_says_what_to_change(libraries, tmp_path):
    done = _check(libraries["static"])
    assert done.returncode == 1
    assert "symbols of the C++ runtime itself" in done.stderr
    assert "needs none of libstdc++.so" in done.stderr
    assert "remove -static-libstdc++" in done.stderr
    copy = tmp_path / "copy.so"
    copy.write_bytes(open(libraries["static"], "rb").read())
    assert _check("--delete-on-failure", str(copy)).returncode == 1
    assert not copy.exists()


def test_check_reports_an_unreadable_file_in_one_line(tmp_path):
    done = _check(str(tmp_path / "missing.so"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


# 157 s of a 12:37 default suite (--durations, 2 cores): marked slow, run by
# make test-slow and CI, skipped by make test.
@pytest.mark.slow
def test_setup_py_links_the_shared_runtime_where_the_toolchain_links_a_static_one(tmp_path):
    """The real build, with the linker flags of a toolchain that links
    libstdc++ statically (the gcc at /opt/gcc on an Ubuntu 24.04 image did so
    by default): setup.py finds that on a probe library, names libtorch's
    libstdc++.so.6 on the link line, and the library it makes passes the check
    and formats its error messages whole (takes minutes)."""
    # Only the capability files this CPU runs (LSTM_EXT_NATIVE_ONLY, setup.py):
    # the link line is the point here, and on an AVX2-only CPU the AVX-512 and
    # AMX files made this test a third of the suite (314 s of 23 minutes).
    env = dict(os.environ, LDFLAGS=STATIC, MAX_JOBS=os.environ.get("MAX_JOBS", "2"),
               LSTM_EXT_NATIVE_ONLY="1")
    done = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-temp", str(tmp_path / "temp"),
         "--build-lib", str(tmp_path / "lib")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "links a static C++ runtime into shared libraries; linking" in done.stdout
    [library] = (tmp_path / "lib").rglob("*.so")
    assert _check(str(library)).returncode == 0
    code = ("import torch, lstm_ext\n"
            "try:\n"
            "    torch.ops.lstm_ext.lstm_cell_forward(torch.zeros(3, 5), torch.zeros(3, 7),"
            " torch.zeros(3, 7), torch.zeros(28, 4), torch.zeros(28, 7), None, None)\n"
            "except RuntimeError as e:\n"
            "    print(str(e).splitlines()[0])\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, LSTM_EXT_LIBRARY=str(library)), timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "w_ih" in run.stdout and "[28, 4]" in run.stdout, run.stdout


# A compiler like the gcc at /opt/gcc on the Ubuntu 24.04 image: it has no
# libstdc++.so of its own, so it links the static runtime into everything.
STATIC_ONLY_GXX = """#!/bin/sh
for a in "$@"; do
  case "$a" in -print-file-name=libstdc++.so) echo libstdc++.so; exit 0;; esac
done
exec g++ "$@" -static-libstdc++
"""
CMAKE_PROJECT = """cmake_minimum_required(VERSION 3.18)
project(probe_user LANGUAGES CXX)
include({module})
add_executable(app main.cpp)
target_link_libraries(app PRIVATE ${{LSTM_EXT_CXX_RUNTIME}})
"""


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
@pytest.mark.parametrize("toolchain", ["default", "static-only"])
def test_cmake_links_the_shared_runtime_where_the_toolchain_links_a_static_one(
        tmp_path, toolchain):
    """lstm_extCxxRuntime.cmake (included by the CMake package config and the
    C++ example): nothing extra with the usual g++; with a compiler that links
    libstdc++ statically, the shared runtime named, so the program passes the
    check."""
    module = os.path.join(ROOT, "lstm_ext", "share", "cmake", "lstm_ext",
                          "lstm_extCxxRuntime.cmake")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "CMakeLists.txt").write_text(CMAKE_PROJECT.format(module=module))
    (tmp_path / "src" / "main.cpp").write_text(
        SOURCE + "int main() { char b[32]; return format_long(42, b) == 2 ? 0 : 1; }\n")
    env = dict(os.environ, CXX="g++")  # the plain g++: CXX may name a faulty one
    if toolchain == "static-only":
        gxx = tmp_path / "g++"
        gxx.write_text(STATIC_ONLY_GXX)
        gxx.chmod(0o755)
        env["CXX"] = str(gxx)
        # the faulty toolchain's program, without the module: refused by the check
        plain = tmp_path / "plain"
        subprocess.run([str(gxx), "-O1", str(tmp_path / "src" / "main.cpp"), "-o", str(plain)],
                       check=True)
        assert _check(str(plain)).returncode == 1
    build = tmp_path / "build"
    done = subprocess.run(["cmake", "-S", str(tmp_path / "src"), "-B", str(build)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    cache = (build / "CMakeCache.txt").read_text()
    runtime = next(line.split("=", 1)[1] for line in cache.splitlines()
                   if line.startswith("LSTM_EXT_CXX_RUNTIME:"))
    if toolchain == "default":
        assert runtime == ""
    else:
        assert runtime.startswith("-Wl,") and "libstdc++.so" in runtime
        assert "links a static C++ runtime" in done.stdout
    done = subprocess.run(["cmake", "--build", str(build)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _check(str(build / "app")).returncode == 0
    assert subprocess.run([str(build / "app")]).returncode == 0
