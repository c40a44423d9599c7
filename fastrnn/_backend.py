"""Bridge to the compiled core ``fastrnn._C``: dtype and cell codes, validation, pointers,
output and workspace allocation. Modules and autograd Functions call this, never ``_C``.

Tensors cross into C++ as data pointers; every tensor passed stays referenced here for the
whole (GIL-released) call. The core re-checks sizes and throws ``ValueError``; the checks
here come first so that users see torch's wording.
"""
from __future__ import annotations

import torch

try:  # the package stays importable (falling back to torch) if the extension is missing
    from . import _C
    _IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    _C = None
    _IMPORT_ERROR = exc

GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}

if _C is not None:
    DTYPES = {torch.float32: _C.DTYPE_FLOAT32, torch.float64: _C.DTYPE_FLOAT64}
    CELLS = {
        "LSTM": _C.CELL_LSTM,
        "GRU": _C.CELL_GRU,
        "RNN_TANH": _C.CELL_RNN_TANH,
        "RNN_RELU": _C.CELL_RNN_RELU,
    }
else:  # pragma: no cover
    DTYPES, CELLS = {}, {}


def available() -> bool:
    return _C is not None


def supports(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the native path serves tensors of this dtype on this device."""
    return _C is not None and device.type == "cpu" and dtype in DTYPES


def unsupported_reason(dtype: torch.dtype, device: torch.device) -> str:
    if _C is None:
        return f"the compiled extension failed to load ({_IMPORT_ERROR})"
    if device.type != "cpu":
        return f"this build has no kernels for device '{device.type}'"
    return f"the native kernels support float32 and float64, not {dtype}"


def num_threads() -> int:
    return max(1, torch.get_num_threads())


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _check(t: torch.Tensor | None, name: str, shape: tuple, dtype: torch.dtype) -> None:
    if t is None:
        return
    if t.dtype != dtype:
        raise ValueError(f"fastrnn: {name} has dtype {t.dtype}, expected {dtype}")
    if t.device.type != "cpu":
        raise ValueError(f"fastrnn: {name} is on {t.device}, expected cpu")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"fastrnn: {name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if not t.is_contiguous():
        raise ValueError(f"fastrnn: {name} must be contiguous")


def _check_lengths(lengths: torch.Tensor | None, B: int, T: int) -> None:
    if lengths is None:
        return
    if lengths.dtype != torch.int64 or lengths.device.type != "cpu" or not lengths.is_contiguous():
        raise ValueError("fastrnn: lengths must be a contiguous int64 CPU tensor")
    if lengths.shape != (B,):
        raise ValueError(f"fastrnn: lengths has shape {tuple(lengths.shape)}, expected ({B},)")
    if B > 0 and (int(lengths.min()) < 0 or int(lengths.max()) > T):
        raise ValueError(f"fastrnn: lengths must lie in [0, {T}]")


def forward(mode, xp, w_hh, w_hr, b_hn, h0, c0, lengths, reverse: bool, training: bool):
    """One layer, one direction. xp: [T,B,G*H] input projection with the foldable biases.

    Returns (y [T,B,R], hT [B,R], cT [B,H] or None, saved) where saved holds what
    ``backward`` needs when ``training`` (gates, cs, hpre), else Nones.
    """
    G = GATES[mode]
    T, B, GH = xp.shape
    H = GH // G
    R = w_hh.shape[1]
    dt = xp.dtype
    _check(xp, "xp", (T, B, G * H), dt)
    _check(w_hh, "w_hh", (G * H, R), dt)
    _check(w_hr, "w_hr", (R, H), dt)
    _check(b_hn, "b_hn", (H,), dt)
    _check(h0, "h0", (B, R), dt)
    _check(c0, "c0", (B, H), dt)
    _check_lengths(lengths, B, T)
    if (w_hr is not None) != (R != H):
        raise ValueError("fastrnn: the recurrent width differs from hidden size exactly when projecting")
    lstm = mode == "LSTM"
    if lstm and c0 is None:
        raise ValueError("fastrnn: LSTM needs c0")
    y = xp.new_empty((T, B, R))
    hT = xp.new_empty((B, R))
    cT = xp.new_empty((B, H)) if lstm else None
    gates = cs = hpre = None
    if training:
        if mode in ("LSTM", "GRU"):
            gates = xp.new_empty((T, B, G * H))
            cs = xp.new_empty((T, B, H))
        if w_hr is not None:
            hpre = xp.new_empty((T, B, H))
    code = DTYPES[dt]
    ws = _C.forward_workspace(code, CELLS[mode], B, H, R)
    work = xp.new_empty((max(ws, 1),))
    _C.forward(
        code, CELLS[mode], T, B, H, R, bool(reverse),
        _ptr(xp), _ptr(w_hh), _ptr(w_hr), _ptr(b_hn), _ptr(h0), _ptr(c0), _ptr(lengths),
        _ptr(y), _ptr(hT), _ptr(cT), _ptr(gates), _ptr(cs), _ptr(hpre), _ptr(work), ws,
        num_threads(),
    )
    return y, hT, cT, (gates, cs, hpre)


def backward(mode, w_hh, w_hr, h0, c0, lengths, reverse: bool, y, saved, dy, dhT, dcT):
    """Backward time loop of one layer and direction.

    Returns (dxp [T,B,G*H], dhid, dh0 [B,R], dc0 [B,H] or None) where dhid is GRU's
    gradient of the recurrent n part [T,B,H], LSTM-with-projection's gradient of the
    projected state [T,B,R], else None.
    """
    G = GATES[mode]
    gates, cs, hpre = saved
    T, B, R = y.shape
    H = w_hh.shape[0] // G
    dt = y.dtype
    _check(w_hh, "w_hh", (G * H, R), dt)
    _check(w_hr, "w_hr", (R, H), dt)
    _check(h0, "h0", (B, R), dt)
    _check(c0, "c0", (B, H), dt)
    _check(gates, "gates", (T, B, G * H), dt)
    _check(cs, "cs", (T, B, H), dt)
    _check(hpre, "hpre", (T, B, H), dt)
    _check(dy, "dy", (T, B, R), dt)
    _check(dhT, "dhT", (B, R), dt)
    _check(dcT, "dcT", (B, H), dt)
    _check_lengths(lengths, B, T)
    lstm = mode == "LSTM"
    dxp = y.new_empty((T, B, G * H))
    dhid = None
    if mode == "GRU":
        dhid = y.new_empty((T, B, H))
    elif w_hr is not None:
        dhid = y.new_empty((T, B, R))
    dh0 = y.new_empty((B, R))
    dc0 = y.new_empty((B, H)) if lstm else None
    code = DTYPES[dt]
    ws = _C.backward_workspace(code, CELLS[mode], B, H, R)
    work = y.new_empty((max(ws, 1),))
    _C.backward(
        code, CELLS[mode], T, B, H, R, bool(reverse),
        _ptr(w_hh), _ptr(w_hr), _ptr(h0), _ptr(c0), _ptr(lengths), _ptr(y),
        _ptr(gates), _ptr(cs), _ptr(hpre), _ptr(dy), _ptr(dhT), _ptr(dcT),
        _ptr(dxp), _ptr(dhid), _ptr(dh0), _ptr(dc0), _ptr(work), ws, num_threads(),
    )
    return dxp, dhid, dh0, dc0


def info() -> dict:
    return {
        "extension": _C is not None,
        "isa": _C.isa() if _C is not None else None,
        "compiled_isas": _C.compiled_isas() if _C is not None else None,
        "cuda_compiled": bool(getattr(_C, "cuda_compiled", False)),
        "threads": num_threads(),
    }
