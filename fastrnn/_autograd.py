"""Autograd Function around the native time loop of one layer and one direction.

Torch computes the input projection before it and the weight gradients after it with big
GEMMs (DESIGN section 2); RecurrentFunction only owns the recurrence:

    (xp, w_hh, w_hr, b_hh, h0, c0) -> (y, hT[, cT])      h0, c0: None for zeros

LayerFunction (small CPU layers) does both GEMMs' work inside its native calls instead.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import _backend


def h_prev(y: torch.Tensor, h0: torch.Tensor, lengths, reverse: bool) -> torch.Tensor:
    """The state each step started from, [T,B,R], rebuilt from the outputs.

    Forward: h0, y[0], ..., y[T-2]. Reverse: y[1], ..., y[T-1], h0, where a row of length
    L < T starts from h0 at step L-1. Rows past their length have zero gate gradients, so
    whatever stands there does not matter.
    """
    if y.shape[0] == 0:
        return y
    if not reverse:
        return torch.cat([h0.unsqueeze(0), y[:-1]], 0)
    hp = torch.cat([y[1:], h0.unsqueeze(0)], 0)
    if lengths is not None:
        steps = torch.arange(y.shape[0], device=y.device).unsqueeze(1)
        start = steps == (lengths - 1).unsqueeze(0)
        hp = torch.where(start.unsqueeze(-1), h0.unsqueeze(0), hp)
    return hp


class RecurrentFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mode, reverse, lengths, xp, w_hh, w_hr, b_hh, h0, c0):
        y, hT, cT, saved = _backend.forward(mode, xp, w_hh, w_hr, b_hh, h0, c0, lengths, reverse, training=True,
                                            validate=False)
        ctx.mode = mode
        ctx.reverse = reverse
        ctx.lengths = lengths
        ctx.save_for_backward(w_hh, w_hr, h0, c0, y, *saved)
        if mode == "LSTM":
            return y, hT, cT
        return y, hT

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dhT, dcT=None):
        need = ctx.needs_input_grad  # (mode, reverse, lengths, xp, w_hh, w_hr, b_hh, h0, c0)
        w_hh, w_hr, h0, c0, y, gates, cs, hpre = ctx.saved_tensors
        dxp, d_whh, d_whr, d_bhh, dh0, dc0 = recurrent_backward(
            ctx.mode, ctx.reverse, ctx.lengths, w_hh, w_hr, h0, c0, y, (gates, cs, hpre), dy, dhT, dcT,
            need[4], need[5], need[6])
        return (
            None, None, None,
            dxp if need[3] else None,
            d_whh, d_whr, d_bhh,
            dh0 if need[7] else None,
            dc0 if need[8] else None,
        )


def _dense(g: torch.Tensor, dtype) -> torch.Tensor:
    """An incoming gradient in the saved tensors' dtype and dense layout."""
    if g.dtype != dtype:
        g = g.to(dtype)
    return g if g.is_contiguous() else g.contiguous()


def _incoming(mode, y, H, dy, dhT, dcT):
    """The incoming gradients (any strides or dtype promotions torch chose, None for zeros)
    in the saved tensors' dtype and dense layout: (dy, dhT, dcT or None, owned), owned when
    dy is a buffer made here."""
    T, B, R = y.shape
    dt = y.dtype
    owned = dy is None or dy.dtype != dt or not dy.is_contiguous()
    dy = torch.zeros_like(y) if dy is None else _dense(dy, dt)
    dhT = y.new_zeros((B, R)) if dhT is None else _dense(dhT, dt)
    if mode == "LSTM":
        dcT = y.new_zeros((B, H)) if dcT is None else _dense(dcT, dt)
    else:
        dcT = None
    if dy.shape != y.shape or dhT.shape != (B, R) or (dcT is not None and dcT.shape != (B, H)):
        raise RuntimeError("fastrnn: gradient shapes do not match the outputs")
    return dy, dhT, dcT, owned


def recurrent_backward(mode, reverse, lengths, w_hh, w_hr, h0, c0, y, saved, dy, dhT, dcT, need_whh, need_whr,
                       need_bhh):
    """Backward of one layer and direction from the incoming gradients.

    Returns (dxp [T,B,G*H], d_w_hh, d_w_hr, d_b_hh, dh0, dc0), the weight gradients None
    where not needed. The native loop gives dxp, dh0, dc0; torch's GEMMs the weights'.
    """
    gates, cs, hpre = saved
    T, B, R = y.shape
    G = _backend.GATES[mode]
    H = w_hh.shape[0] // G
    dy, dhT, dcT, owned = _incoming(mode, y, H, dy, dhT, dcT)
    rnn = mode == "RNN_TANH" or mode == "RNN_RELU"
    dxp, dhid, dh0, dc0 = _backend.backward(
        mode, w_hh, w_hr, h0, c0, lengths, reverse, y, (gates, cs, hpre), dy, dhT, dcT, validate=False,
        dxp=dy if (rnn and owned) else None,  # RNN: dxp overwrites our own copy of dy in place
    )
    d_whh = d_whr = d_bhh = None
    if need_whh or need_bhh:
        # gradient of the recurrent pre-activations h W_hh^T + b_hh: dxp, except GRU's n part
        # (dhid). GRU's two pieces go into slices of the result, not through a concatenated copy.
        dxp2 = dxp.view(T * B, G * H)
        parts = [(dxp2[:, : 2 * H], slice(0, 2 * H)), (dhid.view(T * B, H), slice(2 * H, 3 * H))] \
            if mode == "GRU" else [(dxp2, slice(0, G * H))]
        if need_whh:
            d_whh = y.new_empty((G * H, R))
            if lengths is None and not reverse:
                # h_prev is h0, y[0], ..., y[T-2]: the zero h0 contributes nothing
                for dg, rows in parts:
                    out = d_whh[rows]
                    if T > 1:
                        torch.mm(dg[B:].t(), y[:-1].reshape((T - 1) * B, R), out=out)
                        if h0 is not None:
                            out.addmm_(dg[:B].t(), h0)
                    elif h0 is not None:
                        torch.mm(dg[:B].t(), h0, out=out)
                    else:
                        out.zero_()
            else:
                h0z = h0 if h0 is not None else y.new_zeros((B, R))
                hp = h_prev(y, h0z, lengths, reverse).reshape(T * B, R)
                for dg, rows in parts:
                    torch.mm(dg.t(), hp, out=d_whh[rows])
        if need_bhh:
            d_bhh = parts[0][0].sum(0) if len(parts) == 1 else torch.cat([dg.sum(0) for dg, _ in parts])
    if w_hr is not None and need_whr:
        d_whr = dhid.reshape(T * B, R).t().mm(hpre.reshape(T * B, H))
    return dxp, d_whh, d_whr, d_bhh, dh0, dc0


class LayerFunction(torch.autograd.Function):
    """One layer and direction on the CPU with the input projection inside the native loop:

        (x, w_ih, b_ih, w_hh, w_hr, b_hh, h0, c0) -> (y, hT[, cT])      b_*, h0, c0: None allowed

    ``stacked``: hT, cT shaped [1,B,R], [1,B,H], a single layer's h_n and c_n.

    No separate addmm node: forward is one native call. With ``native_grads`` (small layers)
    so is backward, weight and bias gradients included (torch's mm, sum and slicing nodes
    would cost several times the loop), only dx, when needed, being torch's mm. Without it
    (large layers, whose projection is summed in each step's GEMM) the native loop gives the
    pre-activation gradients and torch's GEMMs the weights' (MKL's beat the core's there).
    """

    @staticmethod
    def forward(ctx, mode, reverse, lengths, x, w_ih, b_ih, w_hh, w_hr, b_hh, h0, c0, stacked=False,
                native_grads=True):
        y, hT, cT, saved = _backend.forward_fused(mode, x, w_ih, b_ih, w_hh, w_hr, b_hh, h0, c0, lengths, reverse,
                                                  True, stacked=stacked)
        ctx.set_materialize_grads(False)  # an unused output's gradient comes as None: zeros in the loop
        ctx.mode = mode
        ctx.reverse = reverse
        ctx.lengths = lengths
        ctx.native_grads = native_grads
        ctx.save_for_backward(x, w_ih, w_hh, w_hr, h0, c0, y, *saved)
        if mode == "LSTM":
            return y, hT, cT
        return y, hT

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dhT, dcT=None):
        x, w_ih, w_hh, w_hr, h0, c0, y, gates, cs, hpre = ctx.saved_tensors
        need = ctx.needs_input_grad
        if ctx.native_grads:
            return _backend.backward_fused(ctx.mode, ctx.reverse, ctx.lengths, need, x, w_ih, w_hh, w_hr, h0, c0, y,
                                           (gates, cs, hpre), dy, dhT, dcT) + (None,)
        if dhT is not None and dhT.dim() == 3:  # stacked
            dhT = dhT[0]
        if dcT is not None and dcT.dim() == 3:
            dcT = dcT[0]
        dxp, d_whh, d_whr, d_bhh, dh0, dc0 = recurrent_backward(
            ctx.mode, ctx.reverse, ctx.lengths, w_hh, w_hr, h0, c0, y, (gates, cs, hpre), dy, dhT, dcT,
            need[6], need[7], need[8])
        T, B, I = x.shape
        dxp2 = dxp.view(T * B, dxp.shape[2])
        # (LSTM and RNN, the cells that come here: b_ih's gradient is b_hh's, the sum of dxp)
        d_bih = None
        if need[5]:
            d_bih = d_bhh.clone() if d_bhh is not None else dxp2.sum(0)
        return (
            None, None, None,
            dxp2.mm(w_ih).view(T, B, I) if need[3] else None,
            dxp2.t().mm(x.reshape(T * B, I)) if need[4] else None,
            d_bih,
            d_whh, d_whr, d_bhh,
            dh0 if need[9] else None,
            dc0 if need[10] else None,
            None, None,
        )
