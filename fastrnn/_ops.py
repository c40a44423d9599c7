"""torch.library custom ops over the native time loop, for torch.compile.

``fastrnn::recurrent`` (forward) and ``fastrnn::recurrent_backward`` have fake (meta)
implementations, and autograd is registered on the forward op, so that
``torch.compile(model, fullgraph=True)`` traces fastrnn layers without a graph break, forward
and backward. Eager mode keeps the lighter autograd Function in ``_autograd``.

Optional outputs are returned as empty tensors (a custom op cannot return None).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _backend
from ._autograd import h_prev


def _empty(like: Tensor) -> Tensor:
    return like.new_empty((0,))


def _opt(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None or t.numel() == 0 and t.dim() == 1 else t


def _shapes(mode: str, xp: Tensor, w_hh: Tensor):
    G = _backend.GATES[mode]
    T, B, GH = xp.shape
    return T, B, GH // G, w_hh.shape[1], G


@torch.library.custom_op("fastrnn::recurrent", mutates_args=())
def recurrent(mode: str, reverse: bool, xp: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], b_hh: Optional[Tensor],
              h0: Tensor, c0: Optional[Tensor], lengths: Optional[Tensor],
              training: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(y, hT, cT, gates, cs, hpre); cT/gates/cs/hpre empty where the cell or mode has none."""
    y, hT, cT, (gates, cs, hpre) = _backend.forward(
        mode, xp.contiguous(), w_hh.contiguous(), None if w_hr is None else w_hr.contiguous(),
        None if b_hh is None else b_hh.contiguous(), h0.contiguous(), None if c0 is None else c0.contiguous(),
        None if lengths is None else lengths.to(torch.int64).contiguous(), reverse, training)
    e = _empty(xp)
    return (y, hT, e if cT is None else cT, e.clone() if gates is None else gates,
            e.clone() if cs is None else cs, e.clone() if hpre is None else hpre)


@recurrent.register_fake
def _recurrent_fake(mode, reverse, xp, w_hh, w_hr, b_hh, h0, c0, lengths, training):
    T, B, H, R, G = _shapes(mode, xp, w_hh)
    e = xp.new_empty((0,))
    lstm = mode == "LSTM"
    gated = mode in ("LSTM", "GRU")
    return (xp.new_empty((T, B, R)), xp.new_empty((B, R)), xp.new_empty((B, H)) if lstm else e,
            xp.new_empty((T, B, G * H)) if training and gated else e.clone(),
            xp.new_empty((T, B, H)) if training and gated else e.clone(),
            xp.new_empty((T, B, H)) if training and w_hr is not None else e.clone())


@torch.library.custom_op("fastrnn::recurrent_backward", mutates_args=())
def recurrent_backward(mode: str, reverse: bool, w_hh: Tensor, w_hr: Optional[Tensor], h0: Tensor,
                       c0: Optional[Tensor], lengths: Optional[Tensor], y: Tensor, gates: Tensor, cs: Tensor,
                       hpre: Tensor, dy: Tensor, dhT: Tensor,
                       dcT: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dxp, dhid, dh0, dc0); dhid/dc0 empty where the cell has none."""
    dxp, dhid, dh0, dc0 = _backend.backward(
        mode, w_hh.contiguous(), None if w_hr is None else w_hr.contiguous(), h0.contiguous(),
        None if c0 is None else c0.contiguous(), None if lengths is None else lengths.to(torch.int64).contiguous(),
        reverse, y.contiguous(), (_opt(gates), _opt(cs), _opt(hpre)), dy.contiguous(), dhT.contiguous(),
        None if dcT is None else dcT.contiguous())
    e = _empty(y)
    return dxp, e if dhid is None else dhid, dh0, e.clone() if dc0 is None else dc0


@recurrent_backward.register_fake
def _recurrent_backward_fake(mode, reverse, w_hh, w_hr, h0, c0, lengths, y, gates, cs, hpre, dy, dhT, dcT):
    G = _backend.GATES[mode]
    T, B, R = y.shape
    H = w_hh.shape[0] // G
    e = y.new_empty((0,))
    dhid = y.new_empty((T, B, H)) if mode == "GRU" else (y.new_empty((T, B, R)) if w_hr is not None else e)
    return (y.new_empty((T, B, G * H)), dhid, y.new_empty((B, R)),
            y.new_empty((B, H)) if mode == "LSTM" else e.clone())


def _setup_context(ctx, inputs, output):
    mode, reverse, xp, w_hh, w_hr, b_hh, h0, c0, lengths, training = inputs
    y, hT, cT, gates, cs, hpre = output
    ctx.mode, ctx.reverse, ctx.training = mode, reverse, training
    ctx.has_whr, ctx.has_bhh, ctx.has_c0 = w_hr is not None, b_hh is not None, c0 is not None
    ctx.save_for_backward(w_hh, w_hr, h0, c0, lengths, y, gates, cs, hpre)


def _backward(ctx, dy, dhT, dcT, _dgates, _dcs, _dhpre):
    w_hh, w_hr, h0, c0, lengths, y, gates, cs, hpre = ctx.saved_tensors
    if not ctx.training and ctx.mode in ("LSTM", "GRU"):
        raise RuntimeError("fastrnn::recurrent was called with training=False: nothing saved for backward")
    mode, reverse = ctx.mode, ctx.reverse
    T, B, R = y.shape
    G = _backend.GATES[mode]
    H = w_hh.shape[0] // G
    lstm = mode == "LSTM"
    dy = torch.zeros_like(y) if dy is None else dy
    dhT = y.new_zeros((B, R)) if dhT is None else dhT
    dcT = (y.new_zeros((B, H)) if dcT is None or dcT.numel() == 0 else dcT) if lstm else None
    dxp, dhid, dh0, dc0 = torch.ops.fastrnn.recurrent_backward(mode, reverse, w_hh, w_hr, h0, c0, lengths, y, gates,
                                                               cs, hpre, dy, dhT, dcT)
    dg = torch.cat([dxp[..., : 2 * H], dhid], -1) if mode == "GRU" else dxp
    dg = dg.reshape(T * B, G * H)
    d_whh = dg.t().mm(h_prev(y, h0, lengths, reverse).reshape(T * B, R))
    d_bhh = dg.sum(0) if ctx.has_bhh else None
    d_whr = dhid.reshape(T * B, R).t().mm(hpre.reshape(T * B, H)) if ctx.has_whr else None
    return (None, None, dxp, d_whh, d_whr, d_bhh, dh0, dc0 if (lstm and ctx.has_c0) else None, None, None)


recurrent.register_autograd(_backward, setup_context=_setup_context)


def recurrent_op(mode, reverse, lengths, xp, w_hh, w_hr, b_hh, h0, c0, training):
    """The custom-op twin of ``RecurrentFunction.apply``: (y, hT, cT or None)."""
    T, B, H, R, _ = _shapes(mode, xp, w_hh)
    if h0 is None:
        h0 = xp.new_zeros((B, R))
    if c0 is None and mode == "LSTM":
        c0 = xp.new_zeros((B, H))
    y, hT, cT, _, _, _ = torch.ops.fastrnn.recurrent(mode, reverse, xp, w_hh, w_hr, b_hh, h0, c0, lengths, training)
    return y, hT, (cT if mode == "LSTM" else None)
