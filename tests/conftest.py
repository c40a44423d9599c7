"""Shared helpers: the one tolerance table, and paired torch/fastrnn layers."""
import pytest
import torch

import fastrnn

# The one tolerance table: fastrnn against torch.nn.
TOL = {
    torch.float32: dict(atol=2e-5, rtol=1e-4),
    torch.float64: dict(atol=1e-10, rtol=1e-10),
}

TORCH_LAYER = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN_TANH": torch.nn.RNN, "RNN_RELU": torch.nn.RNN}
FAST_LAYER = {"LSTM": fastrnn.LSTM, "GRU": fastrnn.GRU, "RNN_TANH": fastrnn.RNN, "RNN_RELU": fastrnn.RNN}
MODES = list(TORCH_LAYER)


def assert_close(actual, expected, dtype, what=""):
    torch.testing.assert_close(actual, expected, **TOL[dtype], msg=lambda m: f"{what}: {m}")


def layer_kwargs(mode, **kw):
    if mode == "RNN_RELU":
        kw["nonlinearity"] = "relu"
    return kw


def make_pair(mode, *args, dtype=torch.float32, seed=0, **kw):
    """(torch layer, fastrnn layer) with identical parameters."""
    kw = layer_kwargs(mode, **kw)
    torch.manual_seed(seed)
    ref = TORCH_LAYER[mode](*args, dtype=dtype, **kw)
    fast = FAST_LAYER[mode](*args, dtype=dtype, **kw)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


@pytest.fixture(params=["fused", "unfused", "large"])
def projection_path(request, monkeypatch):
    """Runs a test three times: small layers take the fused CPU path (input projection and
    weight gradients inside the native calls); forced onto the unfused one (torch's addmm
    before the loop, torch's GEMMs for the weight gradients); and routed as large layers are
    (no fusion threshold: LSTM and RNN layers whose projection joins each step's GEMM keep the
    fused forward, with torch's GEMMs for the weight gradients; the others unfused)."""
    import fastrnn.functional

    if request.param != "fused":
        monkeypatch.setattr(fastrnn.functional, "FUSE_MAX_MACS", 0)
    if request.param == "unfused":
        monkeypatch.setattr(fastrnn.functional, "_step_projects", lambda mode, B, I, w_hh: False)
    return request.param
