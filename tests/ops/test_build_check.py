"""The build refuses a library that carries its own copy of the C++ runtime
(tools/check_runtime_link.py, run by setup.py and by the CMake build).

Such a library crashed at its first TORCH_CHECK message on a toolchain that
linked libstdc++ statically (SIGSEGV in basic_ostream::_M_insert<long>); here,
linked by hand the same way, its messages came out cut short."""
import os
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


def test_setup_py_refuses_to_build_with_a_static_libstdcxx(tmp_path):
    """The real build, with the linker flags of the faulty toolchain: it fails
    with the check's message and leaves no library behind (takes minutes)."""
    env = dict(os.environ, LDFLAGS=STATIC, MAX_JOBS=os.environ.get("MAX_JOBS", "2"))
    done = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-temp", str(tmp_path / "temp"),
         "--build-lib", str(tmp_path / "lib")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode != 0
    assert "lstm_ext's build refused its own output" in done.stderr
    assert "symbols of the C++ runtime itself" in done.stderr
    assert not list((tmp_path / "lib").rglob("*.so"))
