"""Prints the requirements of the installed torch that a CPU-only test run needs.

Used by ``make test-torch`` (the torch-version matrix of CI). PyPI's Linux
torch wheels are CUDA builds: their own libraries need the nvidia-* packages
at import (libtorch_cuda.so links libcudnn, libcublas, ...), so those stay,
but triton (about 1 GB installed) is only imported by GPU compilation and is
left out. CI ran out of disk installing 2.15.0 beside 2.11.0 (stop 16:
"No space left on device"); with triton left out and each environment removed
after its run, the matrix needs one torch environment at a time.

    python tools/torch_requirements.py     one requirement per line
"""
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

LEFT_OUT = {"triton"}


def main() -> int:
    for line in requires("torch") or []:
        req = Requirement(line)
        if req.name.lower() in LEFT_OUT:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        req.marker = None
        print(req)
    return 0


if __name__ == "__main__":
    sys.exit(main())
