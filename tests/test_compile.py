"""torch.compile(fullgraph=True) through the torch.library custom ops, and opcheck."""
import pytest
import torch

import fastrnn
from fastrnn import _ops  # noqa: F401 - registers the ops
from conftest import MODES, assert_close, make_pair


def _args(mode, proj=False, lengths=False, training=True, dtype=torch.float64):
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    T, B, H = 4, 3, 5
    R = 2 if proj else H
    mk = lambda *s: torch.randn(*s, dtype=dtype, requires_grad=training)  # noqa: E731
    return (mode, False, mk(T, B, G * H), mk(G * H, R), mk(R, H) if proj else None, mk(G * H), mk(B, R),
            mk(B, H) if mode == "LSTM" else None, torch.tensor([4, 0, 2]) if lengths else None, training)


@pytest.mark.parametrize("variant", ["plain", "proj", "lengths", "infer"])
@pytest.mark.parametrize("mode", MODES)
def test_opcheck(mode, variant):
    if variant == "proj" and mode != "LSTM":
        return
    args = _args(mode, proj=variant == "proj", lengths=variant == "lengths", training=variant != "infer")
    torch.library.opcheck(torch.ops.fastrnn.recurrent.default, args)


@pytest.mark.parametrize("mode", MODES)
def test_compile_fullgraph_matches_eager(mode):
    torch._dynamo.reset()
    ref, fast = make_pair(mode, 3, 6, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(4, 5, 3)
    out_e, h_e = fast(x)
    loss_e = out_e.pow(2).sum() + (h_e[0] if mode == "LSTM" else h_e).sum()
    g_e = torch.autograd.grad(loss_e, list(fast.parameters()))
    compiled = torch.compile(fast, fullgraph=True)
    out_c, h_c = compiled(x)
    loss_c = out_c.pow(2).sum() + (h_c[0] if mode == "LSTM" else h_c).sum()
    g_c = torch.autograd.grad(loss_c, list(fast.parameters()))
    assert_close(out_c, out_e, torch.float32, "output")
    for a, b in zip(g_c, g_e):
        assert_close(a, b, torch.float32, "grad")
    assert_close(out_c, ref(x)[0], torch.float32, "vs torch")


def test_compile_lstm_proj_with_state_and_inference():
    torch._dynamo.reset()
    _, fast = make_pair("LSTM", 3, 6, proj_size=2)
    x = torch.randn(5, 4, 3, requires_grad=True)
    h0 = torch.randn(1, 4, 2, requires_grad=True)
    c0 = torch.randn(1, 4, 6, requires_grad=True)
    compiled = torch.compile(fast, fullgraph=True)
    out_c, (h_c, c_c) = compiled(x, (h0, c0))
    out_e, (h_e, c_e) = fast(x, (h0, c0))
    assert_close(out_c, out_e, torch.float32)
    g_c = torch.autograd.grad(out_c.sum() + c_c.sum(), [x, h0, c0])
    g_e = torch.autograd.grad(out_e.sum() + c_e.sum(), [x, h0, c0])
    for a, b in zip(g_c, g_e):
        assert_close(a, b, torch.float32)
    with torch.no_grad():
        assert_close(compiled(x)[0], fast(x)[0], torch.float32)
