"""``.pt2``: an AOTInductor package of a module built on lstm_ext, for Python
and C++ (``torch::inductor::AOTIModelPackageLoader``) alike.

``export_pt2(module, path)`` exports ``forward`` over a sequence with dynamic
batch and sequence axes (``torch.export.export``), compiles it with
AOTInductor, and, if the module has a ``step(x, state)`` method (LSTMModel and
the Forecaster do), two more programs for streaming: ``step_start`` (``x`` ->
prediction and the first state, ``step(x, None)``) and ``step`` (``x`` and the
state -> prediction and the next state). The state travels as a flat list of
tensors. The lstm_ext ops stay single graph nodes, which the compiled code
calls through AOTInductor's proxy executor: a C++ program must load the op
library before it loads the package.

Each program carries string metadata (``AOTIModelPackageLoader::get_metadata``
in C++) under ``lstm_ext.*`` keys: the format, the program, the input layout,
``input_size``, dtype, the exported batch and sequence ranges, the ops it
needs, and the state's layout; ``metadata=`` adds the caller's own (say the
forecaster's window and horizon). ``load_pt2`` reads a package back, checks it,
and refuses inputs outside the exported ranges with a ValueError naming the
argument (the compiled code itself does not check them).
"""
import json
import logging
import os
import shutil
import tempfile
import zipfile
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from ._common import (DTYPE_NAMES, ExportError, batch_first_of, check_range, custom_ops,
                      dtype_of, eval_mode, export_sequence, input_size_of, min_steps_of,
                      sequence)
from .archive import zip_damage

PT2_FORMAT = "lstm_ext.pt2/1"
PROGRAMS = ("model", "step_start", "step")
DEFAULT_MAX_BATCH = 4096
DEFAULT_MAX_STEPS = 100_000
# Inductor's defaults, except: no pattern-matcher rewrites. They fuse, say, a
# matmul and the add after it into one addmm, which accumulates the products
# onto the addend: at a forecaster's magnitude (a level of 372 plus a linear
# term) that moved float32 results by up to 9 ulps (2.7e-4) from eager; without
# them the package's numbers equal eager's bit for bit here.
DEFAULT_INDUCTOR_CONFIGS = {"pattern_matcher": False}


class _Step(nn.Module):
    """``module.step`` as a program over flat tensors: ``(x, *state) ->
    (prediction, *next_state)``; without state inputs it is ``step(x, None)``."""

    def __init__(self, module: nn.Module, spec) -> None:
        super().__init__()
        self.module = module
        self.spec = spec

    def forward(self, x: Tensor, *state: Tensor):
        prev = pytree.tree_unflatten(list(state), self.spec) if state else None
        pred, nxt = self.module.step(x, prev)
        # Fresh, dense outputs: an output that is a view of an input (the
        # Forecaster's first prediction is x expanded, its state holds x)
        # comes back from AOTInductor with the input's strides and offset.
        return tuple(t.clone(memory_format=torch.contiguous_format)
                     for t in (pred, *pytree.tree_leaves(nxt)))


def _batch_axes(module: nn.Module, input_size: int, dtype: torch.dtype):
    """Runs step(x, None) at two batch sizes: the state's tree spec and, per
    state tensor, the axis that is the batch (-1: none)."""
    with torch.no_grad():
        outs = [module.step(sequence(b, 1, input_size, True, dtype)[:, 0], None) for b in (2, 3)]
    flat2, spec = pytree.tree_flatten(outs[0][1])
    flat3, _ = pytree.tree_flatten(outs[1][1])
    if not flat2 or not all(isinstance(t, Tensor) for t in flat2):
        raise ExportError(f"module: {type(module).__name__}.step(x, None) must return "
                          "(prediction, state) with a state of tensors")
    axes = []
    for a, b in zip(flat2, flat3):
        diff = [i for i, (m, n) in enumerate(zip(a.shape, b.shape)) if m != n]
        axes.append(diff[0] if diff else -1)
    return spec, axes


def _compile(ep, configs: Dict[str, object], workdir: str) -> List[str]:
    """AOTInductor files of one exported program (packaged later, with others)."""
    gm = ep.module(check_guards=False)
    args, kwargs = ep.example_inputs
    options = dict(configs)
    options["aot_inductor.package"] = True
    options["aot_inductor.output_path"] = workdir
    files = torch._inductor.aot_compile(gm, args, kwargs, options=options)
    assert isinstance(files, list)
    return files


def _metadata(program: str, base: Dict[str, str], ep, extra: Dict[str, str]) -> Dict[str, str]:
    meta = dict(base)
    meta["lstm_ext.program"] = program
    meta["lstm_ext.ops"] = ",".join(custom_ops(ep.graph))
    meta.update(extra)
    return meta


def export_pt2(module: nn.Module, path: str, *, input_size: Optional[int] = None,
               batch_first: Optional[bool] = None, max_batch: int = DEFAULT_MAX_BATCH,
               max_steps: int = DEFAULT_MAX_STEPS, example_steps: Optional[int] = None,
               step: Optional[bool] = None,
               metadata: Optional[Dict[str, object]] = None,
               inductor_configs: Optional[Dict[str, object]] = None) -> str:
    """Writes ``module`` (an lstm_ext.LSTM, LSTMModel, Forecaster, or any module
    over a ``(batch, steps, input_size)`` sequence built from them) as an
    AOTInductor package at ``path`` (``.pt2``); returns ``path``.

    ``forward`` is exported for batch sizes 1..``max_batch`` and sequence
    lengths from the fewest the module accepts to ``max_steps``; ``step``
    (default: when the module has a ``step`` method) adds the streaming
    programs. The module is exported in eval mode (its mode is restored).
    ``metadata`` (str -> str/number/bool/None) is stored with each program;
    ``inductor_configs`` override ``DEFAULT_INDUCTOR_CONFIGS``.
    The example traced has ``example_steps`` steps (default: the module's
    ``window`` if it has one); where the module's code narrows the ranges
    (branches on the length), the package records and enforces the narrower
    ones.
    """
    if not isinstance(module, nn.Module):
        raise ExportError(f"module: expected a torch.nn.Module, but got {type(module).__name__}")
    path = os.fspath(path)
    if not path.endswith(".pt2"):
        raise ExportError(f"path: expected a file name ending in .pt2, but got {path!r}")
    size = input_size_of(module, input_size)
    first = batch_first_of(module, batch_first)
    check_range("max_batch", 1, max_batch)
    dtype = dtype_of(module)
    if dtype not in DTYPE_NAMES:
        raise ExportError(f"module: parameters of dtype {dtype} cannot be exported")
    user = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float, bool, type(None))):
            raise ExportError(f"metadata: expected str keys and str/number/bool/None values, "
                              f"but got {key!r}: {type(value).__name__}")
        user[key] = value if isinstance(value, str) else json.dumps(value)
    with eval_mode(module):
        min_steps = min_steps_of(module, size, first, dtype)
        check_range("max_steps", min_steps, max_steps)
        if step is None:
            step = callable(getattr(module, "step", None)) and \
                not getattr(getattr(module, "lstm", module), "bidirectional", False)
        base = {
            "lstm_ext.format": PT2_FORMAT,
            "lstm_ext.module": type(module).__name__,
            "lstm_ext.layout": "batch_first" if first else "time_first",
            "lstm_ext.input_size": str(size),
            "lstm_ext.dtype": DTYPE_NAMES[dtype],
            "lstm_ext.programs": ",".join(PROGRAMS if step else PROGRAMS[:1]),
        }
        example = sequence(2, max(min_steps, example_steps or getattr(module, "window", 3)),
                           size, first, dtype)
        ep, _, batch_range, steps_range = export_sequence(module, example, first, min_steps,
                                                          max_batch, max_steps)
        base["lstm_ext.batch_range"] = "%d,%d" % batch_range
        base["lstm_ext.steps_range"] = "%d,%d" % steps_range
        batch = torch.export.Dim("batch", min=1, max=max_batch)
        programs = {"model": (ep, {})}
        with torch.fx.experimental._config.patch(backed_size_oblivious=True), torch.no_grad():
            if step:
                spec, axes = _batch_axes(module, size, dtype)
                wrapper = _Step(module, spec)
                x1 = (example[:, 0] if first else example[0]).contiguous()
                state = list(wrapper(x1)[1:])
                state_dims = tuple({a: batch} if a >= 0 else None for a in axes)
                programs["step_start"] = (torch.export.export(
                    wrapper, (x1,), dynamic_shapes=({0: batch},)),
                    {"lstm_ext.state_count": str(len(state))})
                programs["step"] = (torch.export.export(
                    wrapper, (x1, *state), dynamic_shapes=({0: batch}, state_dims)),
                    {"lstm_ext.state_count": str(len(state)),
                     "lstm_ext.state_batch_axes": ",".join(map(str, axes))})
        workdir = tempfile.mkdtemp(prefix="lstm_ext_pt2_")
        try:
            files = {}
            for name, (ep, extra) in programs.items():
                configs = {**DEFAULT_INDUCTOR_CONFIGS, **(inductor_configs or {})}
                configs["aot_inductor.metadata"] = _metadata(name, base, ep, {**extra, **user})
                files[name] = _compile(ep, configs, os.path.join(workdir, name))
            from torch._inductor.package import package_aoti
            tmp = path + ".tmp.pt2"
            package_aoti(tmp, files)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return path


def _range(meta: Dict[str, str], key: str, where: str) -> Tuple[int, int]:
    try:
        low, high = (int(v) for v in meta[key].split(","))
    except (KeyError, ValueError):
        raise ExportError(f"{where}: metadata '{key}' is missing or malformed") from None
    return low, high


def _load_program(path: str, name: str):
    """One program of a package; torch's warning about a file it cannot read
    ("outdated pt2 file") is left to the error that follows."""
    from torch._inductor.package import load_package
    log = logging.getLogger("torch._inductor.package.package")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return load_package(path, name)
    finally:
        log.setLevel(level)


class Pt2Model:
    """A ``.pt2`` written by ``export_pt2``, loaded and checked: callable like the
    module it came from (``model(x)``), with ``step(x, state)`` if exported
    with one, and ``metadata`` (the ``lstm_ext.*`` keys and the caller's)."""

    def __init__(self, path: str) -> None:
        self.path = path = os.fspath(path)
        if not os.path.isfile(path):
            raise ExportError(f"{path}: no such .pt2 file")
        if not zipfile.is_zipfile(path):
            raise ExportError(f"{path}: not a .pt2 package (not a zip archive; a TorchScript "
                              "model.pt or an ONNX file is read by its own loader)")
        damage = zip_damage(path)  # torch's loader extracts the compiled code unchecked
        if damage:
            raise ExportError(f"{path}: not a readable .pt2 package ({damage})")
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        # torch/csrc/export/pt2_archive_constants.h: <root>/archive_format and the
        # models under <root>/data/aotinductor/<name>/. Without them torch's C++
        # loader printed a two-line warning listing the archive before its error.
        if not any(n.split("/", 1)[-1].startswith("data/aotinductor/model/") for n in names):
            raise ExportError(f"{path}: not a .pt2 package (a zip archive without an AOTInductor "
                              "model: no data/aotinductor/model/ in it)")
        self._programs = {}
        try:
            self._programs["model"] = _load_program(path, "model")
            meta = self._programs["model"].get_metadata()
        except Exception as exc:  # noqa: BLE001  (RuntimeError, zip and format errors)
            line = next((s for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
            raise ExportError(f"{path}: cannot load the AOTInductor package ({line})") from None
        if meta.get("lstm_ext.format") != PT2_FORMAT:
            found = meta.get("lstm_ext.format")
            raise ExportError(f"{path}: not an lstm_ext .pt2 of format {PT2_FORMAT} "
                              f"(found {found!r}); export it with lstm_ext.export.export_pt2")
        for op in filter(None, meta.get("lstm_ext.ops", "").split(",")):
            namespace, _, name = op.partition("::")
            if not hasattr(getattr(torch.ops, namespace), name):
                raise ExportError(f"{path}: the package needs op {op}, which is not registered "
                                  "in this process (load its op library first)")
        self.metadata: Dict[str, str] = dict(meta)
        self.input_size = int(meta["lstm_ext.input_size"])
        self.batch_first = meta["lstm_ext.layout"] == "batch_first"
        self.dtype = {v: k for k, v in DTYPE_NAMES.items()}[meta["lstm_ext.dtype"]]
        self.batch_range = _range(meta, "lstm_ext.batch_range", path)
        self.steps_range = _range(meta, "lstm_ext.steps_range", path)
        names = meta.get("lstm_ext.programs", "model").split(",")
        for name in names[1:]:
            self._programs[name] = _load_program(path, name)
        self.has_step = "step" in self._programs
        if self.has_step:
            step_meta = self._programs["step"].get_metadata()
            self.state_count = int(step_meta["lstm_ext.state_count"])
            self._state_axes = [int(a) for a in step_meta["lstm_ext.state_batch_axes"].split(",")]

    def _check(self, name: str, x, dims: int) -> None:
        if not isinstance(x, Tensor):
            raise ExportError(f"{name}: expected a Tensor, but got {type(x).__name__}")
        if x.dim() != dims or x.shape[-1] != self.input_size:
            layout = "(batch, steps, input_size)" if self.batch_first else \
                "(steps, batch, input_size)"
            want = layout if dims == 3 else "(batch, input_size)"
            raise ExportError(f"{name}: expected shape {want} with input_size "
                              f"{self.input_size}, but got {list(x.shape)} ({self.path})")
        if x.dtype != self.dtype:
            raise ExportError(f"{name}: expected dtype {DTYPE_NAMES[self.dtype]}, but got "
                              f"{x.dtype} ({self.path})")
        checks = [("batch", x.shape[0] if dims == 2 or self.batch_first else x.shape[1],
                   self.batch_range)]
        if dims == 3:
            checks.append(("steps", x.shape[1] if self.batch_first else x.shape[0],
                           self.steps_range))
        for what, n, (low, high) in checks:
            if not low <= n <= high:
                raise ExportError(f"{name}: {what} {n} is outside the range the package was "
                                  f"exported for, [{low}, {high}] ({self.path})")

    def __call__(self, x: Tensor) -> Tensor:
        self._check("x", x, 3)
        out = self._programs["model"](x.contiguous())
        return out[0] if isinstance(out, (list, tuple)) and len(out) == 1 else out

    def step(self, x: Tensor, state: Optional[Sequence[Tensor]] = None):
        """``(prediction, state)``; ``state`` is a tuple of tensors, ``None`` at
        the start (the module's ``step(x, None)``)."""
        if not self.has_step:
            raise ExportError(f"{self.path}: exported without a step program (export_pt2(..., "
                              "step=True) on a module with a step method)")
        self._check("x", x, 2)
        if state is None:
            out = self._programs["step_start"](x.contiguous())
        else:
            state = tuple(pytree.tree_leaves(state))
            if len(state) != self.state_count:
                raise ExportError(f"state: expected {self.state_count} tensors (the state the "
                                  f"previous step returned), but got {len(state)}")
            for i, (t, axis) in enumerate(zip(state, self._state_axes)):
                if not isinstance(t, Tensor) or (axis >= 0 and (
                        t.dim() <= axis or t.shape[axis] != x.shape[0])):
                    raise ExportError(f"state[{i}]: does not match x's batch of {x.shape[0]} "
                                      "(pass the state the previous step returned)")
            out = self._programs["step"](x.contiguous(), *(t.contiguous() for t in state))
        return out[0], tuple(out[1:])


def load_pt2(path: str) -> Pt2Model:
    """Loads and checks a package written by ``export_pt2`` (see ``Pt2Model``)."""
    return Pt2Model(path)
