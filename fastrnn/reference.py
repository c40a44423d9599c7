"""Pure-PyTorch time loops: the oracle the native kernels are tested against (and a
readable statement of what they compute). Every op here is itself tested against torch.nn.

Shapes follow torch: input [T,B,I] (time-major), hx [L*D,B,R], cx [L*D,B,H];
weights are torch's flat list (w_ih, w_hh[, b_ih, b_hh][, w_hr] per layer and direction).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = ["rnn_ref", "lstm_ref", "gru_ref", "rnn_tanh_ref", "rnn_relu_ref", "cell_step_ref"]


def cell_step_ref(mode, x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None):
    """One step of one cell. x: [B,I], h: [B,R], c: [B,H] (LSTM). Returns (h', c')."""
    gi = F.linear(x, w_ih, b_ih)
    gh = F.linear(h, w_hh, b_hh)
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        if w_hr is not None:
            h = F.linear(h, w_hr)
        return h, c
    if mode == "GRU":
        ir, iz, in_ = gi.chunk(3, -1)
        hr, hz, hn = gh.chunk(3, -1)
        r = torch.sigmoid(ir + hr)
        z = torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        return (1 - z) * n + z * h, None
    pre = gi + gh
    return (torch.tanh(pre) if mode == "RNN_TANH" else torch.relu(pre)), None


def _direction_ref(mode, x, h, c, params, bias, proj, lengths, reverse):
    w_ih, w_hh = params[0], params[1]
    b_ih, b_hh = (params[2], params[3]) if bias else (None, None)
    w_hr = params[-1] if proj else None
    T = x.shape[0]
    ys = [None] * T
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        h_new, c_new = cell_step_ref(mode, x[t], h, c, w_ih, w_hh, b_ih, b_hh, w_hr)
        if lengths is not None:
            act = (t < lengths).to(x.dtype).unsqueeze(1)
            h = act * h_new + (1 - act) * h
            if c is not None:
                c = act * c_new + (1 - act) * c
            ys[t] = act * h_new
        else:
            h, c = h_new, c_new
            ys[t] = h
    return torch.stack(ys), h, c


def rnn_ref(
    mode: str,
    input: torch.Tensor,
    hx: torch.Tensor,
    cx: Optional[torch.Tensor],
    weights: Sequence[torch.Tensor],
    bias: bool = True,
    num_layers: int = 1,
    dropout: float = 0.0,
    training: bool = False,
    bidirectional: bool = False,
    proj_size: int = 0,
    lengths: Optional[torch.Tensor] = None,
):
    """Reference of :func:`fastrnn.functional.rnn`: (output [T,B,D*R], h_n[, c_n])."""
    D = 2 if bidirectional else 1
    per = 2 + (2 if bias else 0) + (1 if proj_size > 0 else 0)
    if lengths is not None:
        lengths = lengths.to(input.device)
    h_n, c_n = [], []
    layer_in = input
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            y, h, c = _direction_ref(mode, layer_in, hx[k], None if cx is None else cx[k],
                                     weights[k * per:(k + 1) * per], bias, proj_size > 0, lengths, d == 1)
            outs.append(y)
            h_n.append(h)
            c_n.append(c)
        layer_in = torch.cat(outs, -1)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_in = F.dropout(layer_in, dropout, training=True)
    if mode == "LSTM":
        return layer_in, torch.stack(h_n), torch.stack(c_n)
    return layer_in, torch.stack(h_n)


def lstm_ref(input, hx, weights, **kw):
    """Reference of :func:`fastrnn.functional.lstm` (time-major): (output, (h_n, c_n))."""
    out, h, c = rnn_ref("LSTM", input, hx[0], hx[1], weights, **kw)
    return out, (h, c)


def gru_ref(input, hx, weights, **kw):
    return rnn_ref("GRU", input, hx, None, weights, **kw)


def rnn_tanh_ref(input, hx, weights, **kw):
    return rnn_ref("RNN_TANH", input, hx, None, weights, **kw)


def rnn_relu_ref(input, hx, weights, **kw):
    return rnn_ref("RNN_RELU", input, hx, None, weights, **kw)
