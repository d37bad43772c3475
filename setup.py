"""Build of lstm_ext's op library, ``lstm_ext/_C.abi3.so``.

The library has no ``PyInit_`` function and, built with ``py_limited_api=True``,
links neither libpython nor libtorch_python: Python loads it with
``torch.ops.load_library`` and a C++ program can ``dlopen`` or link the very
same file. Build it against the installed torch, without build isolation::

    pip install --no-build-isolation -e .
"""
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

# Portable code everywhere; wider vectors only in the files built per capability
# below, which run only on CPUs that have them (csrc/cpu/lstm_pointwise.cpp).
BASE_FLAGS = ["-O3", "-fopenmp", "-DNDEBUG"]
IS_X86 = platform.machine().lower() in ("x86_64", "amd64")
CAPABILITY_FLAGS = (
    {
        "avx2": ["-mavx2", "-mfma", "-mf16c"],
        "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"],
    }
    if IS_X86
    else {}
)


class BuildExtensionPerCapability(BuildExtension):
    """Compiles each csrc/cpu/lstm_pointwise_<cap>.cpp with its own -m flags.

    setuptools gives every source of an extension the same flags, so these
    files are compiled here, before the extension, and linked as extra objects.
    """

    def build_extension(self, ext):
        objects = []
        for cap, flags in CAPABILITY_FLAGS.items():
            objects += self.compiler.compile(
                [os.path.join("csrc", "cpu", f"lstm_pointwise_{cap}.cpp")],
                output_dir=os.path.join(self.build_temp, cap),
                macros=ext.define_macros,
                include_dirs=ext.include_dirs,
                extra_postargs={"cxx": ext.extra_compile_args["cxx"] + flags},
            )
        ext.extra_objects = [o for o in ext.extra_objects if o not in objects] + objects
        super().build_extension(ext)


setup(
    ext_modules=[
        CppExtension(
            "lstm_ext._C",
            sources=[
                "csrc/ops.cpp",
                "csrc/cpu/lstm_cell_kernel.cpp",
                "csrc/cpu/lstm_layer_kernel.cpp",
                "csrc/cpu/gemm.cpp",
                "csrc/cpu/lstm_pointwise.cpp",
                "csrc/cpu/lstm_pointwise_default.cpp",
                "csrc/autograd/lstm_cell_autograd.cpp",
                "csrc/autograd/lstm_layer_autograd.cpp",
            ],
            define_macros=[(f"LSTM_EXT_HAVE_{cap.upper()}", "1") for cap in CAPABILITY_FLAGS],
            extra_compile_args={"cxx": BASE_FLAGS},
            extra_link_args=["-fopenmp"],
            py_limited_api=True,
        )
    ],
    cmdclass={"build_ext": BuildExtensionPerCapability},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
