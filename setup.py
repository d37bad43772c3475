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
            elif parts[1] == MACHINE:
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
