"""Refuses a shared library that carries its own copy of the C++ or OpenMP runtime.

libtorch links libstdc++ and its OpenMP runtime (libgomp) dynamically. A library
of ours linked with a static libstdc++ (``-static-libstdc++`` in LDFLAGS, or a
compiler whose default links it so) defines ``std::basic_ostream`` and friends
itself: loaded beside libtorch, two copies of the iostream state meet, and the
first ``TORCH_CHECK`` message that prints a size crashed (SIGSEGV in
``basic_ostream::_M_insert<long>``, seen on an Ubuntu 24.04 toolchain). A static
OpenMP runtime likewise gives a second thread pool. Such a library must never be
produced silently: setup.py and examples/cpp/CMakeLists.txt run this check on
what they link and fail the build with the message below.

    python tools/check_runtime_link.py [--delete-on-failure] FILE...
        exit 0 if every file is fine, 1 with the reasons (and, with
        --delete-on-failure, the refused files removed so nothing uses them)

Needs binutils' ``readelf`` and ``nm`` (present wherever gcc links).
"""
import os
import re
import subprocess
import sys
from typing import List

# (what, shared libraries that provide it, symbols that only its own copy defines)
RUNTIMES = [
    ("the C++ runtime", ("libstdc++.so", "libc++.so"),
     re.compile(r"^(std::(__cxx11::)?(basic_ostream|basic_ios|ios_base|locale)\b"
                r"|__cxa_(throw|begin_catch|allocate_exception)$|__gxx_personality_v0$)")),
    ("the OpenMP runtime", ("libgomp.so", "libomp.so", "libiomp5.so"),
     re.compile(r"^(GOMP_|omp_get_|omp_set_|__kmpc_)")),
]

ADVICE = ("Link the C++ and OpenMP runtimes dynamically, as libtorch does: remove "
          "-static-libstdc++ / -static-libgcc / -static from LDFLAGS, CXXFLAGS and "
          "CMAKE_*_LINKER_FLAGS, or use a compiler whose default links libstdc++.so.6 "
          "(check with `g++ -print-file-name=libstdc++.so`: it must name a file, not "
          "just 'libstdc++.so')")


def _run(*cmd: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done.stdout


def needed(path: str) -> List[str]:
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", _run("readelf", "-d", path))


def defined_symbols(path: str) -> List[str]:
    """Demangled names of the global symbols the library defines, from its
    static table and (if stripped) its dynamic one."""
    names = set()
    for extra in ([], ["-D"]):
        try:
            out = _run("nm", "-C", "--defined-only", *extra, path)
        except RuntimeError:  # "no symbols" in a stripped table
            continue
        for line in out.splitlines():
            parts = line.split(" ", 2)
            # Global definitions only: a local clone of an inlined runtime
            # function ("std::operator<< [clone .isra.0]", type t) is ours.
            if len(parts) == 3 and parts[1] in "TWVBDRiu" and "[clone" not in parts[2]:
                names.add(parts[2])
    return sorted(names)


def problems(path: str) -> List[str]:
    """Why `path` must not be used; empty if it links its runtimes dynamically."""
    deps = needed(path)
    symbols = defined_symbols(path)
    found = []
    for what, shared, own_copy in RUNTIMES:
        copies = [s for s in symbols if own_copy.match(s)]
        if copies:
            found.append(
                f"{path} defines {len(copies)} symbols of {what} itself (e.g. {copies[0]}): "
                f"it was linked with a static copy of it"
                + ("" if any(d.startswith(shared) for d in deps)
                   else f", and needs none of {', '.join(shared)}"))
    return found


def main(argv: List[str]) -> int:
    delete = "--delete-on-failure" in argv
    paths = [a for a in argv if a != "--delete-on-failure"]
    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    refused = False
    for path in paths:
        try:
            found = problems(path)
        except (RuntimeError, OSError) as exc:
            print(f"error: cannot check {path}: {exc}", file=sys.stderr)
            return 2
        for p in found:
            print(f"error: {p}.", file=sys.stderr)
        if found and delete:
            os.remove(path)
            print(f"error: removed {path}.", file=sys.stderr)
        refused = refused or bool(found)
    if refused:
        print(f"error: {ADVICE}.", file=sys.stderr)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
