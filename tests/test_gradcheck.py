"""float64 torch.autograd.gradcheck through the native kernels on tiny shapes."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import functional as FF
from conftest import MODES, layer_kwargs

FAST = {"LSTM": fastrnn.LSTM, "GRU": fastrnn.GRU, "RNN_TANH": fastrnn.RNN, "RNN_RELU": fastrnn.RNN}


def _layer_fn(layer, mode, packed_lengths=None):
    names = [n for n, _ in layer.named_parameters()]

    def fn(x, h0, c0, *params):
        weights = list(params)
        hx = h0
        if packed_lengths is not None:
            x = pack_padded_sequence(x, packed_lengths, enforce_sorted=False)
        out, h = torch.func.functional_call(layer, dict(zip(names, weights)), (x, (h0, c0) if mode == "LSTM" else hx))
        if packed_lengths is not None:
            out = out.data
        hs = list(h) if isinstance(h, tuple) else [h]
        return (out, *hs)

    return fn


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", ["plain", "bidir2", "proj", "packed"])
def test_gradcheck_layer(mode, variant, projection_path):
    if variant == "proj" and mode != "LSTM":
        pytest.skip("proj_size is LSTM-only")
    torch.manual_seed(0)
    T, B, I, H = 3, 2, 2, 3
    kw = layer_kwargs(mode, dtype=torch.float64)
    R, L, D = H, 1, 1
    lengths = None
    if variant == "bidir2":
        kw.update(num_layers=2, bidirectional=True)
        L, D = 2, 2
    if variant == "proj":
        kw.update(proj_size=2)
        R = 2
    if variant == "packed":
        kw.update(bidirectional=True)
        D = 2
        lengths = torch.tensor([1, 3])
    layer = FAST[mode](I, H, **kw)
    if mode == "RNN_RELU":  # keep pre-activations away from relu's kink
        with torch.no_grad():
            for p in layer.parameters():
                p.abs_()
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(L * D, B, R, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(L * D, B, H, dtype=torch.float64, requires_grad=mode == "LSTM")
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    if mode == "RNN_RELU":
        x = x.detach().abs().requires_grad_()
        h0 = h0.detach().abs().requires_grad_()
    fn = _layer_fn(layer, mode, lengths)
    assert torch.autograd.gradcheck(fn, (x, h0, c0, *params), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_functional_lengths(mode, projection_path):
    """Variable lengths straight through the functional API, reverse direction included."""
    torch.manual_seed(1)
    T, B, I, H = 4, 3, 2, 2
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    weights = []
    for _ in range(2):
        weights += [torch.randn(G * H, I, dtype=torch.float64, requires_grad=True),
                    torch.randn(G * H, H, dtype=torch.float64, requires_grad=True),
                    torch.randn(G * H, dtype=torch.float64, requires_grad=True),
                    torch.randn(G * H, dtype=torch.float64, requires_grad=True)]
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, B, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, B, H, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 0, 2])

    def fn(x, h0, c0, *w):
        out = FF.rnn(mode, x, h0, c0 if mode == "LSTM" else None, list(w), True, 1, 0.0, False, True, 0, lengths)
        return out

    assert torch.autograd.gradcheck(fn, (x, h0, c0, *weights), eps=1e-6, atol=1e-7)
