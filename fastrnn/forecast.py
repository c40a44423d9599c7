"""Closed-loop (autoregressive) generation: each prediction is fed back as the next input."""
from __future__ import annotations

import torch

from . import _backend
from .modules import _FastRNNBase

__all__ = ["forecast"]


def _as_batched(context: torch.Tensor, input_size: int):
    c = torch.as_tensor(context)
    if c.dim() == 1:
        return c.reshape(1, -1, 1), "1d"
    if c.dim() == 2:
        return c.unsqueeze(0), "2d"
    if c.dim() == 3:
        return c, "3d"
    raise ValueError(f"context must be [T], [T,F] or [B,T,F], got shape {tuple(c.shape)}")


def _stepper_for(model, batch: int):
    """A native Stepper over the model's layer, or None where it cannot serve."""
    rnn = model.rnn
    if not isinstance(rnn, _FastRNNBase) or rnn.bidirectional:
        return None
    w0 = rnn._flat_weights[0]
    if not _backend.supports(w0.dtype, w0.device):
        return None
    per = 2 + (2 if rnn.bias else 0) + (1 if rnn.proj_size else 0)
    weights = [getattr(rnn, n) for n in rnn._flat_weights_names]
    layers = []
    for k in range(rnn.num_layers):
        p = weights[k * per:(k + 1) * per]
        b_ih, b_hh = (p[2], p[3]) if rnn.bias else (None, None)
        layers.append((p[0], p[1], b_ih, b_hh, p[-1] if rnn.proj_size else None))
    return _backend.Stepper(rnn.mode, layers, batch)


@torch.no_grad()
def forecast(model, context: torch.Tensor, steps: int, method: str = "stateful", window: int = None):
    """Generates ``steps`` future values after ``context`` in closed loop.

    ``model``: a :class:`fastrnn.models.Forecaster` (or any module with
    ``forward(x [B,T,F], state) -> (y [B,T,F], state)`` whose output size equals its input size).
    ``context``: [T], [T,F] or [B,T,F]. Returns [steps], [steps,F] or [B,steps,F] accordingly.

    ``method="stateful"`` (default) runs the context once, then advances one step at a time
    carrying the hidden state: linear in ``steps``; with a fastrnn layer on the CPU the steps
    run on the native single-step path with weights packed once. ``method="window"`` is the
    tutorials' way: re-run the model from a fresh state on the last ``window`` values (the
    whole context by default) for every new point.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if method not in ("stateful", "window"):
        raise ValueError(f"method must be 'stateful' or 'window', got {method!r}")
    x, kind = _as_batched(context, getattr(model, "input_size", 1))
    if x.shape[1] == 0:
        raise ValueError("context must hold at least one step")
    was_training = model.training
    model.eval()
    try:
        preds = _window(model, x, steps, window) if method == "window" else _stateful(model, x, steps)
    finally:
        model.train(was_training)
    if kind == "1d":
        return preds.reshape(-1)
    if kind == "2d":
        return preds[0]
    return preds


def _window(model, x, steps, window):
    w = x.shape[1] if window is None else window
    if isinstance(w, bool) or not isinstance(w, int) or w <= 0:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    buf = x[:, -w:]
    out = []
    for _ in range(steps):
        y, _ = model(buf)
        p = y[:, -1:]
        out.append(p)
        buf = torch.cat([buf[:, 1:], p], 1)
    return torch.cat(out, 1) if out else x.new_empty((x.shape[0], 0, x.shape[2]))


def _stateful(model, x, steps):
    B, F = x.shape[0], x.shape[2]
    out = x.new_empty((B, steps, F))
    if steps == 0:
        return out
    y, state = model(x)
    p = y[:, -1]
    out[:, 0] = p
    stepper = _stepper_for(model, B) if hasattr(model, "rnn") and hasattr(model, "head") else None
    if stepper is None:  # generic: the module itself, one step at a time
        for s in range(1, steps):
            y, state = model(p.unsqueeze(1), state)
            p = y[:, -1]
            out[:, s] = p
        return out
    if isinstance(state, tuple):
        stepper.set_state(state[0], state[1])
    else:
        stepper.set_state(state)
    residual = getattr(model, "residual", False)
    hist = stepper.closed_loop(p, steps - 1, model.head.weight, model.head.bias, residual)
    deltas = model.head(hist).transpose(0, 1)  # [B, steps-1, F]
    if residual:
        deltas = deltas + 0  # head(h) is the change; accumulate from the first prediction
        out[:, 1:] = p.unsqueeze(1) + torch.cumsum(deltas, 1)
    else:
        out[:, 1:] = deltas
    return out
