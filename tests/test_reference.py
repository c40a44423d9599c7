"""The pure-PyTorch reference loops against torch.nn (the oracle is itself checked)."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fastrnn import reference
from conftest import MODES, TORCH_LAYER, assert_close, layer_kwargs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bidir", [False, True])
@pytest.mark.parametrize("proj", [0, 2])
@pytest.mark.parametrize("mode", MODES)
def test_reference_matches_torch(mode, proj, bidir, dtype):
    if proj and mode != "LSTM":
        pytest.skip("proj_size is LSTM-only")
    kw = layer_kwargs(mode, num_layers=2, bidirectional=bidir, dtype=dtype)
    if proj:
        kw["proj_size"] = proj
    layer = TORCH_LAYER[mode](3, 5, **kw)
    D = 2 if bidir else 1
    R = proj or 5
    x = torch.randn(6, 4, 3, dtype=dtype, requires_grad=True)
    h0 = torch.randn(2 * D, 4, R, dtype=dtype, requires_grad=True)
    c0 = torch.randn(2 * D, 4, 5, dtype=dtype, requires_grad=True)
    hx = (h0, c0) if mode == "LSTM" else h0
    out_t, h_t = layer(x, hx)
    res = reference.rnn_ref(mode, x, h0, c0 if mode == "LSTM" else None, layer._flat_weights, True, 2, 0.0,
                            False, bidir, proj)
    out_r = res[0]
    hs_t = list(h_t) if mode == "LSTM" else [h_t]
    assert_close(out_r, out_t, dtype, "output")
    for a, b in zip(res[1:], hs_t):
        assert_close(a, b, dtype, "state")
    g = torch.randn_like(out_t)
    leaves = [x, h0] + ([c0] if mode == "LSTM" else []) + list(layer.parameters())
    gt = torch.autograd.grad((out_t * g).sum(), leaves)
    gr = torch.autograd.grad((out_r * g).sum(), leaves)
    for a, b in zip(gr, gt):
        assert_close(a, b, dtype, "grad")


@pytest.mark.parametrize("mode", MODES)
def test_reference_lengths_match_packed_torch(mode):
    layer = TORCH_LAYER[mode](3, 4, bidirectional=True, **layer_kwargs(mode))
    x = torch.randn(5, 3, 3)
    lengths = torch.tensor([5, 2, 4])
    out_t, h_t = layer(pack_padded_sequence(x, lengths, enforce_sorted=False))
    out_t, _ = pad_packed_sequence(out_t)
    h0 = torch.zeros(2, 3, 4)
    res = reference.rnn_ref(mode, x, h0, h0 if mode == "LSTM" else None, layer._flat_weights, True, 1, 0.0, False,
                            True, 0, lengths)
    assert_close(res[0], out_t, torch.float32, "output")
    assert_close(res[1], h_t[0] if mode == "LSTM" else h_t, torch.float32, "h_n")


def test_lstm_ref_wrapper():
    layer = torch.nn.LSTM(2, 3)
    x = torch.randn(4, 1, 2)
    h = torch.zeros(1, 1, 3)
    out, (hn, cn) = reference.lstm_ref(x, (h, h), layer._flat_weights)
    out_t, (hn_t, cn_t) = layer(x)
    assert_close(out, out_t, torch.float32)
    assert_close(cn, cn_t, torch.float32)
