"""Randomized parity with torch.nn.LSTM in float64: outputs, final states and
every gradient (input, initial state, each parameter) over random
configurations: sizes 1, odd and above 256, 1-3 layers, bidirectional,
batch_first, bias, an initial state or none, packed sequences (sorted and
unsorted), non-contiguous, transposed and expanded inputs, batch 0-9, 1-40
steps. The suite poisons fresh memory with NaN (conftest.py), so a kernel that
reads memory it never wrote fails here.

LSTM_EXT_FUZZ_N sets the number of configurations (default 200; `make fuzz
N=5000` for more), LSTM_EXT_FUZZ_SEED the first seed. Each configuration is its
own seed, so a failure names the seed that reproduces it.
"""
import os
import random

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_ext

N = int(os.environ.get("LSTM_EXT_FUZZ_N", "200"))
FIRST_SEED = int(os.environ.get("LSTM_EXT_FUZZ_SEED", "0"))
TOL = dict(atol=1e-10, rtol=1e-9)
SIZES = [1, 2, 3, 5, 7, 8, 13, 16, 17, 31, 33, 64]
LARGE = [257, 263, 300]


def draw(seed):
    rnd = random.Random(seed)
    size = lambda: rnd.choice(LARGE) if rnd.random() < 0.05 else rnd.choice(SIZES)  # noqa: E731
    cfg = dict(input_size=size(), hidden_size=size(), num_layers=rnd.randint(1, 3),
               bidirectional=rnd.random() < 0.5, batch_first=rnd.random() < 0.5,
               bias=rnd.random() < 0.8, batch=rnd.randint(0, 9), steps=rnd.randint(1, 40),
               initial_state=rnd.random() < 0.5,
               packed=rnd.choice([None, None, "sorted", "unsorted"]),
               layout=rnd.choice(["contiguous", "contiguous", "transposed", "strided",
                                  "expanded"]))
    if cfg["batch"] == 0:
        cfg["packed"] = None  # pack_padded_sequence refuses an empty batch
    # Keep the rare large configurations small elsewhere (time, not coverage).
    if max(cfg["input_size"], cfg["hidden_size"]) > 256:
        cfg.update(num_layers=min(cfg["num_layers"], 2), steps=min(cfg["steps"], 8))
    return cfg


def make_input(cfg, gen):
    """Input of the module's layout (batch_first or not) with the requested
    memory layout; values equal whatever the layout."""
    T, B, I = cfg["steps"], cfg["batch"], cfg["input_size"]
    shape = (B, T, I) if cfg["batch_first"] else (T, B, I)
    layout = cfg["layout"]
    if layout == "transposed":  # same values, last two dimensions swapped in memory
        return torch.randn(shape[0], I, shape[1], generator=gen, dtype=torch.float64).transpose(1, 2)
    if layout == "strided":  # every other element of a wider tensor
        return torch.randn(*shape[:2], 2 * I, generator=gen, dtype=torch.float64)[..., ::2]
    if layout == "expanded":  # one row repeated along the batch, stride 0
        axis = 0 if cfg["batch_first"] else 1
        one = torch.randn(*(1 if d == axis else s for d, s in enumerate(shape)), generator=gen,
                          dtype=torch.float64)
        return one.expand(*shape)
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def run(module, cfg, x, state, lengths, grad_seed):
    x = x.detach().clone() if cfg["layout"] != "expanded" else x.detach()
    x.requires_grad_(True)
    leaves = [x]
    hx = None
    if state is not None:
        hx = tuple(s.detach().clone().requires_grad_(True) for s in state)
        leaves += list(hx)
    inp = x
    if lengths is not None:
        inp = pack_padded_sequence(x, lengths, batch_first=cfg["batch_first"],
                                   enforce_sorted=cfg["packed"] == "sorted")
    out, (h, c) = module(inp, hx)
    outs = [out.data if lengths is not None else out, h, c]
    leaves += list(module.parameters())
    gen = torch.Generator().manual_seed(grad_seed)
    weights = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in outs]
    grads = torch.autograd.grad(outs, leaves, weights, allow_unused=True)
    return [o.detach() for o in outs], list(grads)


def check(seed):
    cfg = draw(seed)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ref = torch.nn.LSTM(cfg["input_size"], cfg["hidden_size"], num_layers=cfg["num_layers"],
                        bias=cfg["bias"], batch_first=cfg["batch_first"],
                        bidirectional=cfg["bidirectional"]).double()
    ours = lstm_ext.LSTM.from_torch(ref)
    x = make_input(cfg, gen)
    B, T = cfg["batch"], cfg["steps"]
    state = None
    if cfg["initial_state"]:
        layers = cfg["num_layers"] * (2 if cfg["bidirectional"] else 1)
        state = tuple(torch.randn(layers, B, cfg["hidden_size"], generator=gen,
                                  dtype=torch.float64) for _ in range(2))
    lengths = None
    if cfg["packed"] is not None:
        lengths = torch.randint(1, T + 1, (B,), generator=gen)
        lengths[torch.randint(0, B, (1,), generator=gen)] = T  # pad_packed pads to the longest
        if cfg["packed"] == "sorted":
            lengths = lengths.sort(descending=True).values
    got = run(ours, cfg, x, state, lengths, seed)
    want = run(ref, cfg, x, state, lengths, seed)
    names = ["output", "h_n", "c_n"], ["grad_input"] + (["grad_h0", "grad_c0"] if state else []) + [
        "grad_" + n for n, _ in ref.named_parameters()]
    for group, a_list, b_list in zip(names, got, want):
        for name, a, b in zip(group, a_list, b_list):
            assert (a is None) == (b is None), f"seed {seed} {cfg}: {name}"
            if a is not None:
                torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"seed {seed} {cfg}: {name}: {m}")


@pytest.mark.parametrize("seed", range(FIRST_SEED, FIRST_SEED + N))
def test_parity_with_torch_nn(seed):
    check(seed)
