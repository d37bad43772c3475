"""Build of lstm_ext's op library, ``lstm_ext/_C.abi3.so``.

The library has no ``PyInit_`` function and, built with ``py_limited_api=True``,
links neither libpython nor libtorch_python: Python loads it with
``torch.ops.load_library`` and a C++ program can ``dlopen`` or link the very
same file. Build it against the installed torch, without build isolation::

    pip install --no-build-isolation -e .
"""
import importlib.util
import os
import platform
import subprocess

from setuptools import setup

try:
    import torch  # noqa: F401
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError as exc:  # pip's build isolation hides the installed torch
    raise SystemExit(
        "lstm_ext builds against the installed torch: install torch first, then run "
        "`pip install --no-build-isolation -e .` (build isolation would fetch a second, "
        "mismatched torch)."
    ) from exc

# Portable code everywhere (-fopenmp so that at::parallel_for uses threads);
# wider vectors only in the per-capability files, picked at run time.
BASE_FLAGS = ["-O3", "-fopenmp", "-DNDEBUG"]
LINK_FLAGS = ["-fopenmp"]


def wants_debug_info():
    """A release build (the default) carries no debug information: Python's own
    CFLAGS add -g, which made the library 20 MB. LSTM_EXT_DEBUG=1, or -g in
    CFLAGS (the sanitizer build), keeps it."""
    if os.environ.get("LSTM_EXT_DEBUG", "0") not in ("", "0"):
        return True
    return any(flag.startswith("-g") and flag != "-g0"
               for flag in os.environ.get("CFLAGS", "").split())


if not wants_debug_info():
    BASE_FLAGS.append("-g0")                 # after Python's -g: no debug info compiled
    LINK_FLAGS.append("-Wl,--strip-debug")   # none linked in (keeps the symbol tables)
MACHINE = platform.machine().lower().replace("amd64", "x86_64")


def cpu_runs(flags):
    """Whether this machine's CPU has every instruction set in `flags` (-mavx2,
    -mavx512bf16, -mamx-tile, ...), by /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            have = next((line.split(":", 1)[1].split() for line in f
                         if line.startswith("flags")), [])
    except OSError:
        return False
    names = {"avx512bf16": "avx512_bf16", "avx512vnni": "avx512_vnni"}
    wanted = [f[2:].replace("-", "_") for f in flags if f.startswith("-m")]
    return all(names.get(w, w) in have for w in wanted)


# LSTM_EXT_NATIVE_ONLY=1 builds only the capability files this CPU runs: for
# the sanitizer build (Makefile, test-sanitize), whose ASan code in each file's
# static initializer is compiled with that file's flags and ran at load time
# (an AVX2-only EPYC: SIGILL, vmovdqu8 in kernels_avx512.cpp's initializer).
NATIVE_ONLY = os.environ.get("LSTM_EXT_NATIVE_ONLY", "") not in ("", "0")


def read_sources():
    """csrc/sources.txt: common sources, and per-capability sources with their
    own flags (built only for their machine; chosen at run time)."""
    common, per_capability = [], []
    with open(os.path.join("csrc", "sources.txt")) as f:
        for line in f:
            parts = line.split("#", 1)[0].split()
            if not parts:
                continue
            path = os.path.join("csrc", parts[0])
            if len(parts) == 1:
                common.append(path)
            elif parts[1] == MACHINE and (not NATIVE_ONLY or cpu_runs(parts[3:])):
                per_capability.append((path, parts[2], parts[3:]))
    return common, per_capability


COMMON_SOURCES, CAPABILITY_SOURCES = read_sources()


def load_link_check():
    """tools/check_runtime_link.py: refuses a library with its own copy of the
    C++ or OpenMP runtime (shared with the CMake build)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools",
                        "check_runtime_link.py")
    spec = importlib.util.spec_from_file_location("check_runtime_link", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildExtensionPerCapability(BuildExtension):
    """Compiles each per-capability source with its own -m flags.

    setuptools gives every source of an extension the same flags, so these
    files are compiled here, before the extension, and linked as extra objects.
    """

    def build_extension(self, ext):
        objects = []
        for path, _macro, flags in CAPABILITY_SOURCES:
            objects += self.compiler.compile(
                [path],
                output_dir=os.path.join(self.build_temp, os.path.basename(path)[:-4]),
                macros=ext.define_macros,
                include_dirs=ext.include_dirs,
                extra_postargs={"cxx": ext.extra_compile_args["cxx"] + flags},
            )
        ext.extra_objects = [o for o in ext.extra_objects if o not in objects] + objects
        ext.extra_link_args = LINK_FLAGS + self.runtime_link_args()
        super().build_extension(ext)
        # A library with a second copy of libstdc++ crashes at the first error
        # message it formats: never leave one behind.
        library = self.get_ext_fullpath(ext.name)
        check = load_link_check()
        found = check.problems(library)
        if found:
            os.remove(library)
            raise SystemExit("\n".join(
                [f"error: lstm_ext's build refused its own output, {p}" for p in found]
                + [f"error: {check.ADVICE}."]))


    def runtime_link_args(self):
        """Extra link arguments that make this compiler link the C++ runtime
        dynamically: none for the usual toolchains. Some link a static copy into
        shared libraries (the gcc at /opt/gcc on an Ubuntu 24.04 image with torch
        2.11 did: its library was refused, 255 runtime symbols of its own). There
        the libstdc++.so.6 that libtorch runs with is named on the link line, ahead
        of the compiler's own -lstdc++, so the runtime's symbols bind to it. Each
        candidate (nothing extra, then that library) is tried
        on a probe library that formats a number and throws, as TORCH_CHECK does,
        and kept only if tools/check_runtime_link.py accepts it."""
        check = load_link_check()
        runtime = loaded_library("libstdc++.so")
        candidates = [[]] + ([[runtime]] if runtime else [])
        probe_dir = os.path.join(self.build_temp, "runtime_probe")
        os.makedirs(probe_dir, exist_ok=True)
        source = os.path.join(probe_dir, "probe.cpp")
        with open(source, "w") as f:
            f.write(RUNTIME_PROBE)
        # The link command of a C++ extension, as distutils makes it: the C++
        # compiler in place of LDSHARED's first word.
        link = [self.compiler.compiler_cxx[0], *self.compiler.linker_so[1:]]
        for i, args in enumerate(candidates):
            probe = os.path.join(probe_dir, f"probe{i}.so")
            done = subprocess.run([*link, "-fPIC", "-O1", source, "-o", probe, *LINK_FLAGS, *args],
                                  capture_output=True, text=True)
            if (done.returncode == 0 and not check.problems(probe)
                    and any(d.startswith(("libstdc++.so", "libc++.so")) for d in check.needed(probe))):
                if args:
                    print(f"lstm_ext: {link[0]} links a static C++ runtime "
                          f"into shared libraries; linking {' '.join(args)} instead")
                return args
        return []  # none helps: the check after the link refuses, with its advice


# A shared library that needs the C++ runtime as lstm_ext's ops do (a formatted
# number, an exception); runtime_link_args links it with each candidate.
RUNTIME_PROBE = """#include <sstream>
#include <stdexcept>
extern "C" int lstm_ext_probe(long v) {
  std::ostringstream s;
  s << v;
  if (v < 0) throw std::runtime_error(s.str());
  return static_cast<int>(s.str().size());
}
"""


def loaded_library(prefix):
    """Path of the shared library this process (torch imported) has mapped
    whose file name starts with `prefix`, or None."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split(maxsplit=5)[-1].strip()
                if os.path.basename(path).startswith(prefix) and os.path.isfile(path):
                    return path
    except OSError:
        pass
    return None


setup(
    ext_modules=[
        CppExtension(
            "lstm_ext._C",
            sources=COMMON_SOURCES,
            define_macros=[(macro, "1") for _path, macro, _flags in CAPABILITY_SOURCES],
            extra_compile_args={"cxx": BASE_FLAGS},
            extra_link_args=LINK_FLAGS,
            py_limited_api=True,
        )
    ],
    cmdclass={"build_ext": BuildExtensionPerCapability},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
