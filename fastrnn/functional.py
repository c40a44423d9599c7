"""Functional API: multi-layer, bidirectional recurrences over the native time loop.

``rnn(mode, input, hx, cx, weights, ...)`` is the core that the modules call; ``lstm``,
``gru`` and ``rnn_tanh``/``rnn_relu`` are thin, torch-like entry points. Inputs are
time-major [T,B,I] here; the modules handle batch_first, unbatched input and packing.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from . import _backend, _ops
from ._autograd import LayerFunction, RecurrentFunction

__all__ = ["rnn", "lstm", "gru", "rnn_tanh", "rnn_relu"]


def _weights_per_direction(bias: bool, proj: bool) -> int:
    return 2 + (2 if bias else 0) + (1 if proj else 0)


# Largest input projection (multiply-adds, T*B*I*G*H) that the native loop computes itself,
# its backward then computing the weight gradients too (one native call each way, no addmm
# node, no mm/sum nodes); GRU's limit is _FUSE_GRU_SCALE times larger. Alternating A/B against
# torch's addmm + GEMMs (or, for LSTM/RNN layers whose projection joins each step's GEMM, the
# same forward with torch's GEMMs for the weight gradients), 2 threads, base / fused:
# - up to 2^23 fused was faster for every cell (e.g. LSTM (15,5,50,50) train 594 -> 435 us,
#   GRU (20,8,32,64) 720 -> 515 us, RNN (100,1,128,128) 764 -> 599 us; inference 4-26 %);
# - 2^23 to 2^25, measured again since the core's GEMMs improved: infer / train LSTM
#   (200,1,128,128) 1.12 / 0.99x, (400,1,128,128) 1.05 / 1.07x, (100,4,128,128) 1.03 / 0.98x;
#   RNN (100,8,128,128) 1.05 / 1.08x, (35,20,128,256) 1.01 / 1.30x, (200,4,128,128)
#   0.99 / 1.06x, (100,16,128,128) 1.05 / 1.01x;
# - GRU up to 2^27: (200,1,128,128) 1.12 / 1.14x, (200,4,128,128) 1.07 / 1.21x,
#   (100,32,64,128) 1.02 / 1.03x, (35,20,128,256) 1.03 / 1.03x, (60,32,128,128) 1.03 / 1.19x,
#   (100,32,96,128) 0.97 / 1.06x;
# - above: mixed to slower, MKL being the faster GEMM there (LSTM (50,32,256,256) train 0.93x,
#   (35,20,128,256) 0.96x; RNN (50,32,256,256) 0.99 / 0.96x; GRU (50,32,256,256) 0.99 / 0.90x;
#   (20,64,1024,256) 0.74-0.92x for all three).
FUSE_MAX_MACS = 1 << 25
_FUSE_GRU_SCALE = 4


def _fuses(mode: str, macs: int) -> bool:
    """Whether a layer whose input projection takes ``macs`` multiply-adds is small enough for
    the native call to compute the projection and the weight gradients itself."""
    return macs <= FUSE_MAX_MACS * (_FUSE_GRU_SCALE if mode == "GRU" else 1)


def _step_projects(mode, B, I, w_hh) -> bool:
    """Whether the native loop sums this layer's input projection into each step's GEMM (LSTM
    and RNN, batches of 8 or more, inputs at most twice the hidden size: the core's
    step_projection). In inference that beats torch's addmm before the loop at any size, since
    the [T,B,G*H] projection is never written and read back (alternating A/B, 2 threads: LSTM
    (100,32,64,128) 9.5 -> 7.0 ms, RNN 2.49 -> 2.16 ms, RNN (100,64,512,512) 61.6 -> 53.9 ms,
    LSTM (100,64,512,512) even)."""
    return mode != "GRU" and _backend.step_projection(w_hh.dtype, mode, B, w_hh.shape[0] // _backend.GATES[mode], I)


def _direction(mode, x, params, bias, proj, h0, c0, lengths, reverse, hT=None, cT=None, stacked=False, packed=None):
    """One layer, one direction: the native loop, with the input projection fused into it for
    small layers on the CPU, else torch's addmm before it.

    h0/c0: [B,R]/[B,H] or None (zeros). hT/cT: optional output tensors (inference only).
    ``stacked``: the final states may come as [1,B,R] / [1,B,H] (the caller checks the dim).
    ``packed``: (T, B, steps): x holds a PackedSequence's rows [N,I] (CPU inference, see rnn).
    """
    w_ih, w_hh = params[0], params[1]
    b_ih = params[2] if bias else None
    b_hh = params[3].contiguous() if bias else None
    w_hh = w_hh.contiguous()
    w_hr = params[4 if bias else 2].contiguous() if proj else None
    if h0 is not None:
        h0 = h0.contiguous()
    if c0 is not None:
        c0 = c0.contiguous()
    compiling = torch.compiler.is_compiling()
    if packed is None:
        T, B, I = x.shape
    else:
        (T, B, _), I = packed, x.shape[1]
    small = _fuses(mode, T * B * I * w_ih.shape[0])
    if x.is_cpu and 0 < I and not compiling and (small or _step_projects(mode, B, I, w_hh)):
        if x.stride(-1) != 1:
            x = x.contiguous()
        w_ih = w_ih.contiguous()
        if b_ih is not None:
            b_ih = b_ih.contiguous()
        if torch.is_grad_enabled() and (
            x.requires_grad or w_ih.requires_grad or w_hh.requires_grad
            or (b_ih is not None and (b_ih.requires_grad or b_hh.requires_grad))
            or (w_hr is not None and w_hr.requires_grad)
            or (h0 is not None and h0.requires_grad) or (c0 is not None and c0.requires_grad)
        ):
            out = LayerFunction.apply(mode, reverse, lengths, x, w_ih, b_ih, w_hh, w_hr, b_hh, h0, c0, stacked, small)
            return out if mode == "LSTM" else (out[0], out[1], None)
        y, hT, cT, _ = _backend.forward_fused(mode, x, w_ih, b_ih, w_hh, w_hr, b_hh, h0, c0, lengths, reverse, False,
                                              hT, cT, packed=packed)
        return y, hT, cT
    x2 = x.reshape(-1, I)
    xp = torch.addmm(b_ih, x2, w_ih.t()) if bias else x2.mm(w_ih.t())
    if packed is not None:  # inference (rnn routes no other packed call here)
        y, hT, cT, _ = _backend.forward(mode, xp, w_hh, w_hr, b_hh, h0, c0, lengths, reverse, False, False, hT, cT,
                                        packed=packed)
        return y, hT, cT
    xp = xp.view(T, B, w_ih.shape[0])
    need_grad = torch.is_grad_enabled() and (
        xp.requires_grad or w_hh.requires_grad or (w_hr is not None and w_hr.requires_grad)
        or (b_hh is not None and b_hh.requires_grad) or (h0 is not None and h0.requires_grad)
        or (c0 is not None and c0.requires_grad)
    )
    if compiling:  # traced: the torch.library custom ops
        return _ops.recurrent_op(mode, reverse, lengths, xp, w_hh, w_hr, b_hh, h0, c0, need_grad)
    if need_grad:
        out = RecurrentFunction.apply(mode, reverse, lengths, xp, w_hh, w_hr, b_hh, h0, c0)
        if mode == "LSTM":
            return out
        return out[0], out[1], None
    y, hT, cT, _ = _backend.forward(mode, xp, w_hh, w_hr, b_hh, h0, c0, lengths, reverse, False, False, hT, cT)
    return y, hT, cT


def single_layer(mode, x, weights, bias, hx, cx):
    """One unidirectional layer without projection, at the sizes whose input projection (and,
    in training, whose weight gradients) the native calls compute: the modules' shortest way to
    the kernel, for the tutorial and serving shapes where the Python around the loop is most
    of the call. The same native calls as the general path (rnn), without its loops over
    layers and directions and their per-call checks and copies.

    x: [T,B,I] on the CPU with T > 0; hx / cx: [1,B,R] / [1,B,H] or None, already checked by
    the module. Returns (output, h_n, c_n or None), or None where this path does not apply
    (other shapes, layouts or weights: the general path then runs, with all its checks).
    """
    T, B, I = x.shape
    w_ih, w_hh = weights[0], weights[1]
    if len(weights) != (4 if bias else 2) or I == 0 or not _fuses(mode, T * B * I * w_ih.shape[0]) \
            or torch.compiler.is_compiling() or x.stride(2) != 1:
        return None
    dt = x.dtype
    H = w_hh.shape[0] // _backend.GATES[mode]  # no projection here: w_hh must be [G*H, H]
    for t, shape in zip(weights, _expected_shapes(mode, I, H, H, 1, 1, bias, False)):
        if t.shape != shape or t.dtype != dt or not t.is_cpu or not t.is_contiguous():
            return None
    for state in (hx, cx):
        if state is not None and not state.is_contiguous():
            return None
    b_ih, b_hh = (weights[2], weights[3]) if bias else (None, None)
    if torch.is_grad_enabled() and (x.requires_grad or any(t.requires_grad for t in weights)
                                    or (hx is not None and hx.requires_grad)
                                    or (cx is not None and cx.requires_grad)):
        # the Function takes the states as [B,R] / [B,H] (their gradients' shapes) and gives
        # h_n, c_n stacked, as _direction does for a single layer
        out = LayerFunction.apply(mode, False, None, x, w_ih, b_ih, w_hh, None, b_hh,
                                  None if hx is None else hx[0], None if cx is None else cx[0], True, True)
        return out if mode == "LSTM" else (out[0], out[1], None)
    y, hT, cT, _ = _backend.forward_fused(mode, x, w_ih, b_ih, w_hh, None, b_hh, hx, cx, None, False, False,
                                          stacked=True)
    return y, hT, cT


def rnn(
    mode: str,
    input: torch.Tensor,
    hx: torch.Tensor,
    cx: Optional[torch.Tensor],
    weights: Sequence[torch.Tensor],
    bias: bool,
    num_layers: int,
    dropout: float,
    training: bool,
    bidirectional: bool,
    proj_size: int = 0,
    lengths: Optional[torch.Tensor] = None,
    checked: bool = False,
    packed=None,
):
    """Runs a stacked recurrence. input: [T,B,I]; hx: [L*D,B,R] or None (zeros);
    cx: [L*D,B,H] or None (LSTM).

    weights: torch's flat list (w_ih, w_hh[, b_ih, b_hh][, w_hr] per layer and direction).
    lengths: [B] int64 steps per row, or None. Returns (output [T,B,D*R], h_n[, c_n]).
    ``checked``: the caller (a fastrnn module) already ran torch's checks on input and state;
    the weights are checked either way, since the native loops trust these shapes.
    ``packed``: (T, B, steps) from ``_backend.packed_steps``, with the matching lengths: input
    is then a PackedSequence's data [N,I] and the output [N,D*R] in the same rows (CPU
    inference: no padding to [T,B] and back).
    """
    if mode not in _backend.GATES:
        raise ValueError(f"Unknown mode {mode!r}")
    D = 2 if bidirectional else 1
    proj = proj_size > 0
    per = _weights_per_direction(bias, proj)
    if packed is not None:
        if lengths is None or not input.is_cpu or input.dim() != 2 or torch.is_grad_enabled() \
                or torch.compiler.is_compiling():
            raise ValueError("packed rows are for CPU inference with lengths, input [N, input_size]")
        T, B, steps = packed
        _backend.check_steps(steps, T, input.shape[0])
    else:
        T, B = input.shape[0], input.shape[1]
    _check_args(mode, input, hx, cx, weights, bias, num_layers, D, proj_size, per, checked,
                None if packed is None else B)
    if lengths is not None:
        lengths = lengths.to(device="cpu", dtype=torch.int64).contiguous()
        if lengths.shape != (B,):
            raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
        if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > T):
            raise ValueError(f"lengths must lie in [0, {T}]")
        if input.device.type != "cpu":  # once, not per layer and direction
            lengths = lengths.to(input.device)
    lstm = mode == "LSTM"
    H = weights[1].shape[0] // _backend.GATES[mode]
    R = weights[1].shape[1]
    # Inference writes the final states straight into the stacked outputs.
    grad = torch.is_grad_enabled()
    # Inference writes the final states straight into the stacked outputs (the first
    # layer's slot is the stacked tensor itself: only its data pointer is used).
    h_out = None if grad else input.new_empty((num_layers * D, B, R))
    c_out = None if (grad or not lstm) else input.new_empty((num_layers * D, B, H))
    h_n, c_n = [], []
    single = grad and num_layers * D == 1  # h_n, c_n may come stacked from the Function itself
    layer_in = input
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            y, hT, cT = _direction(
                mode, layer_in, weights[k * per:(k + 1) * per] if k else weights, bias, proj,
                None if hx is None else hx[k], None if cx is None else cx[k], lengths, d == 1,
                None if h_out is None else (h_out[k] if k else h_out),
                None if c_out is None else (c_out[k] if k else c_out),
                single, packed,
            )
            outs.append(y)
            h_n.append(hT)
            c_n.append(cT)
        layer_in = outs[0] if D == 1 else torch.cat(outs, -1)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_in = F.dropout(layer_in, dropout, training=True)
    # Outputs of an autograd Function are stacked (keeping the graph); in inference they
    # were written in place already.
    if grad:
        if len(h_n) == 1:  # already [1,B,R] (stacked), or a view keeps the graph as stack would
            h_out = h_n[0] if h_n[0].dim() == 3 else h_n[0].unsqueeze(0)
            c_out = (c_n[0] if c_n[0].dim() == 3 else c_n[0].unsqueeze(0)) if lstm else None
        else:
            h_out = torch.stack(h_n)
            c_out = torch.stack(c_n) if lstm else None
    if lstm:
        return layer_in, h_out, c_out
    return layer_in, h_out


_SHAPES: dict = {}


def _expected_shapes(mode, I, H, R, num_layers, D, bias, proj):
    """torch.Size of every weight, in torch's flat order (cached per configuration; a list, to
    compare with a list of shapes in one step)."""
    key = (mode, I, H, R, num_layers, D, bias, proj)
    want = _SHAPES.get(key)
    if want is None:
        GH = _backend.GATES[mode] * H
        want = []
        for layer in range(num_layers):
            in_size = I if layer == 0 else D * R
            for _ in range(D):
                want += [(GH, in_size), (GH, R)] + ([(GH,), (GH,)] if bias else []) + ([(R, H)] if proj else [])
        want = [torch.Size(w) for w in want]
        if len(_SHAPES) < 1024:
            _SHAPES[key] = want
    return want


def _check_args(mode, input, hx, cx, weights, bias, num_layers, D, proj_size, per, checked, packed_B=None):
    """Shapes, dtypes and devices of everything the native loops will read (ValueError).
    ``packed_B``: the batch of packed rows (input [N,I])."""
    G = _backend.GATES[mode]
    if len(weights) != num_layers * D * per:
        raise ValueError(f"expected {num_layers * D * per} weight tensors, got {len(weights)}")
    dt, dev = input.dtype, input.device
    H = weights[1].shape[0] // G if weights[1].dim() == 2 else -1
    R = proj_size if proj_size > 0 else H
    if H <= 0:
        raise ValueError(f"weight_hh must be a [{G}*hidden_size, hidden_size] matrix, got {tuple(weights[1].shape)}")
    want = _expected_shapes(mode, input.shape[-1], H, R, num_layers, D, bias, proj_size > 0)
    # One pass of cheap comparisons (every call); the loop below only names the culprit.
    cpu = input.is_cpu
    if [t.shape for t in weights] != want or any(
            t.dtype != dt or (not t.is_cpu if cpu else t.device != dev) for t in weights):
        for i, (t, shape) in enumerate(zip(weights, want)):
            if t.shape != shape:
                raise ValueError(f"weight of layer {i // (per * D)} has shape {tuple(t.shape)}, expected {tuple(shape)}")
            if t.dtype != dt or t.device != dev:
                raise ValueError(f"weights ({t.dtype} on {t.device}) and input ({dt} on {dev}) differ")
    if checked:
        return
    if packed_B is not None:
        B = packed_B
    elif input.dim() != 3:
        raise ValueError(f"input must be [T, B, input_size], got shape {tuple(input.shape)}")
    else:
        B = input.shape[1]
    for name, state, shape in (("hx", hx, (num_layers * D, B, R)), ("cx", cx, (num_layers * D, B, H))):
        if state is None:
            continue
        if name == "cx" and mode != "LSTM":
            raise ValueError("only the LSTM has a cell state")
        if tuple(state.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(state.shape)}, expected {shape}")
        if state.dtype != dt or state.device != dev:
            raise ValueError(f"{name} ({state.dtype} on {state.device}) and input ({dt} on {dev}) differ")


def _time_major(input, batch_first):
    return input.transpose(0, 1) if batch_first else input


def lstm(input, hx, weights, bias=True, num_layers=1, dropout=0.0, training=False, bidirectional=False,
         batch_first=False, proj_size=0, lengths=None):
    """torch-like functional LSTM: returns (output, (h_n, c_n))."""
    out, h, c = rnn("LSTM", _time_major(input, batch_first), hx[0], hx[1], weights, bias, num_layers, dropout,
                    training, bidirectional, proj_size, lengths)
    return _time_major(out, batch_first), (h, c)


def gru(input, hx, weights, bias=True, num_layers=1, dropout=0.0, training=False, bidirectional=False,
        batch_first=False, lengths=None):
    """torch-like functional GRU: returns (output, h_n)."""
    out, h = rnn("GRU", _time_major(input, batch_first), hx, None, weights, bias, num_layers, dropout, training,
                 bidirectional, 0, lengths)
    return _time_major(out, batch_first), h


def rnn_tanh(input, hx, weights, bias=True, num_layers=1, dropout=0.0, training=False, bidirectional=False,
             batch_first=False, lengths=None):
    out, h = rnn("RNN_TANH", _time_major(input, batch_first), hx, None, weights, bias, num_layers, dropout,
                 training, bidirectional, 0, lengths)
    return _time_major(out, batch_first), h


def rnn_relu(input, hx, weights, bias=True, num_layers=1, dropout=0.0, training=False, bidirectional=False,
             batch_first=False, lengths=None):
    out, h = rnn("RNN_RELU", _time_major(input, batch_first), hx, None, weights, bias, num_layers, dropout,
                 training, bidirectional, 0, lengths)
    return _time_major(out, batch_first), h
