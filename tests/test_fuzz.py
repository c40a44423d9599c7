"""Property-based parity with torch.nn over random configurations (hypothesis).

Profiles: "ci" (default, a few dozen examples) and "long" for local runs:
    FASTRNN_FUZZ_PROFILE=long pytest tests/test_fuzz.py
"""
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn.functional

from conftest import TORCH_LAYER, assert_close, layer_kwargs, make_pair

settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("FASTRNN_FUZZ_PROFILE", "ci"))


@st.composite
def configs(draw):
    mode = draw(st.sampled_from(list(TORCH_LAYER)))
    H = draw(st.integers(1, 12))
    return dict(
        mode=mode,
        T=draw(st.integers(1, 7)),
        B=draw(st.integers(1, 10)),
        I=draw(st.integers(1, 5)),
        H=H,
        layers=draw(st.integers(1, 3)),
        bidir=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bias=draw(st.booleans()),
        proj=draw(st.integers(0, H - 1)) if mode == "LSTM" and H > 1 else 0,
        packed=draw(st.booleans()),
        state=draw(st.booleans()),
        dtype=draw(st.sampled_from([torch.float32, torch.float64])),
        seed=draw(st.integers(0, 2**16)),
        large=draw(st.booleans()),  # routed as large layers are (no fusion threshold)
    )


def _flat(h):
    return list(h) if isinstance(h, tuple) else [h]


@given(configs())
def test_random_configurations_match_torch(c):
    torch.manual_seed(c["seed"])
    kw = dict(num_layers=c["layers"], bidirectional=c["bidir"], batch_first=c["batch_first"], bias=c["bias"],
              dtype=c["dtype"])
    if c["proj"]:
        kw["proj_size"] = c["proj"]
    ref, fast = make_pair(c["mode"], c["I"], c["H"], seed=c["seed"], **kw)
    T, B = c["T"], c["B"]
    x = torch.randn(*((B, T, c["I"]) if c["batch_first"] else (T, B, c["I"])), dtype=c["dtype"], requires_grad=True)
    inp = x
    if c["packed"]:
        lengths = torch.randint(1, T + 1, (B,))
        inp = pack_padded_sequence(x, lengths, batch_first=c["batch_first"], enforce_sorted=False)
    LD = c["layers"] * (2 if c["bidir"] else 1)
    leaves = [x]
    hx = None
    if c["state"]:
        h0 = torch.randn(LD, B, c["proj"] or c["H"], dtype=c["dtype"], requires_grad=True)
        leaves.append(h0)
        hx = h0
        if c["mode"] == "LSTM":
            c0 = torch.randn(LD, B, c["H"], dtype=c["dtype"], requires_grad=True)
            leaves.append(c0)
            hx = (h0, c0)
    out_r, h_r = ref(inp, hx)
    threshold = fastrnn.functional.FUSE_MAX_MACS
    try:
        if c["large"]:
            fastrnn.functional.FUSE_MAX_MACS = 0
        out_f, h_f = fast(inp, hx)
        with torch.no_grad():  # inference: its own shortcuts (single layer, packed rows)
            out_i, h_i = fast(inp, hx)
    finally:
        fastrnn.functional.FUSE_MAX_MACS = threshold
    if c["packed"]:
        out_r, out_f, out_i = out_r.data, out_f.data, out_i.data
    assert_close(out_f, out_r, c["dtype"], "output")
    assert_close(out_i, out_r, c["dtype"], "inference output")
    for a, b, i in zip(_flat(h_f), _flat(h_r), _flat(h_i)):
        assert_close(a, b, c["dtype"], "state")
        assert_close(i, b, c["dtype"], "inference state")
    cot = [torch.randn_like(out_r)] + [torch.randn_like(h) for h in _flat(h_r)]
    g_r = torch.autograd.grad([out_r] + _flat(h_r), leaves + list(ref.parameters()), cot, retain_graph=True)
    g_f = torch.autograd.grad([out_f] + _flat(h_f), leaves + list(fast.parameters()), cot)
    for a, b in zip(g_f, g_r):
        assert_close(a, b, c["dtype"], "grad")
