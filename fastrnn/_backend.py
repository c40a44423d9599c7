"""Bridge to the compiled core ``fastrnn._C``: dtype and cell codes, validation, pointers,
output and workspace allocation. Modules and autograd Functions call this, never ``_C``.

Tensors cross into C++ as data pointers; every tensor passed stays referenced here for the
whole (GIL-released) call. The core re-checks sizes and throws ``ValueError``; the checks
here come first so that users see torch's wording.
"""
from __future__ import annotations

import numpy as np
import torch

try:  # the package stays importable (falling back to torch) if the extension is missing
    from . import _C
    _IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    _C = None
    _IMPORT_ERROR = exc

GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}

CUDA_COMPILED = bool(getattr(_C, "cuda_compiled", False))

if _C is not None:
    DTYPES = {torch.float32: _C.DTYPE_FLOAT32, torch.float64: _C.DTYPE_FLOAT64}
    # The CUDA kernels also take the half types (accumulating in float).
    CUDA_DTYPES = dict(DTYPES)
    if CUDA_COMPILED:
        CUDA_DTYPES.update({torch.float16: _C.DTYPE_FLOAT16, torch.bfloat16: _C.DTYPE_BFLOAT16})
    CELLS = {
        "LSTM": _C.CELL_LSTM,
        "GRU": _C.CELL_GRU,
        "RNN_TANH": _C.CELL_RNN_TANH,
        "RNN_RELU": _C.CELL_RNN_RELU,
    }
else:  # pragma: no cover
    DTYPES, CUDA_DTYPES, CELLS = {}, {}, {}


def available() -> bool:
    return _C is not None


def supports(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the native path serves tensors of this dtype on this device."""
    if _C is None:
        return False
    if device.type == "cpu":
        return dtype in DTYPES
    return device.type == "cuda" and CUDA_COMPILED and dtype in CUDA_DTYPES


def supports_tensor(t: torch.Tensor) -> bool:
    """``supports`` for a tensor's dtype and device (no device object built on the CPU)."""
    if t.is_cpu:
        return t.dtype in DTYPES
    return supports(t.dtype, t.device)


def unsupported_reason(dtype: torch.dtype, device: torch.device) -> str:
    if _C is None:
        return f"the compiled extension failed to load ({_IMPORT_ERROR})"
    if device.type == "cuda" and not CUDA_COMPILED:
        return "this build of fastrnn has no CUDA kernels (built without nvcc)"
    if device.type not in ("cpu", "cuda"):
        return f"this build has no kernels for device '{device.type}'"
    if device.type == "cuda":
        return f"the CUDA kernels support float16, bfloat16, float32 and float64, not {dtype}"
    return f"the native CPU kernels support float32 and float64, not {dtype}"


def num_threads() -> int:
    return max(1, torch.get_num_threads())


def step_projection(dtype: torch.dtype, mode: str, B: int, H: int, I: int) -> bool:
    """Whether the CPU core's fused forward sums x W_ih^T into each step's GEMM at this shape."""
    return _C.step_projection(DTYPES[dtype], CELLS[mode], B, H, I)


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _check(t: torch.Tensor | None, name: str, shape: tuple, dtype: torch.dtype, device=None) -> None:
    if t is None:
        return
    if t.dtype != dtype:
        raise ValueError(f"fastrnn: {name} has dtype {t.dtype}, expected {dtype}")
    if t.device != (device if device is not None else torch.device("cpu")):
        raise ValueError(f"fastrnn: {name} is on {t.device}, expected {device or 'cpu'}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"fastrnn: {name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if not t.is_contiguous():
        raise ValueError(f"fastrnn: {name} must be contiguous")


def _check_lengths(lengths: torch.Tensor | None, B: int, T: int, device=None) -> None:
    if lengths is None:
        return
    if lengths.dtype != torch.int64 or lengths.device != (device or torch.device("cpu")) \
            or not lengths.is_contiguous():
        raise ValueError(f"fastrnn: lengths must be a contiguous int64 tensor on {device or 'cpu'}")
    if lengths.shape != (B,):
        raise ValueError(f"fastrnn: lengths has shape {tuple(lengths.shape)}, expected ({B},)")
    if B > 0 and (int(lengths.min()) < 0 or int(lengths.max()) > T):
        raise ValueError(f"fastrnn: lengths must lie in [0, {T}]")


def forward(mode, xp, w_hh, w_hr, b_hh, h0, c0, lengths, reverse: bool, training: bool, validate: bool = True,
            hT=None, cT=None, packed=None):
    """One layer, one direction. xp: [T,B,G*H] input projection x W_ih^T + b_ih.

    h0 [B,R] / c0 [B,H] may be None for a zero initial state; hT / cT may be given as
    (contiguous) output tensors. ``validate=False`` is for callers that built every tensor
    themselves (fastrnn.functional); the core re-checks sizes either way.
    Returns (y [T,B,R], hT [B,R], cT [B,H] or None, saved) where saved holds what
    ``backward`` needs when ``training`` (gates, cs, hpre), else Nones.
    ``packed``: (T, B, steps) for a PackedSequence's rows in inference on the CPU (see
    ``packed_steps``): xp is [N,G*H] and y [N,R], N = steps[T].
    """
    G = GATES[mode]
    T, B, GH = (packed[0], packed[1], xp.shape[1]) if packed is not None else xp.shape
    H = GH // G
    R = w_hh.shape[1]
    lstm = mode == "LSTM"
    cuda = xp.device.type == "cuda"
    if cuda and lengths is not None:
        lengths = lengths.to(xp.device)
    if validate:
        dt, dev = xp.dtype, xp.device
        if not supports(dt, dev):
            raise ValueError(f"fastrnn: {unsupported_reason(dt, dev)}")
        _check(xp, "xp", (T, B, G * H) if packed is None else (xp.shape[0], G * H), dt, dev)
        _check(w_hh, "w_hh", (G * H, R), dt, dev)
        _check(w_hr, "w_hr", (R, H), dt, dev)
        _check(b_hh, "b_hh", (G * H,), dt, dev)
        _check(h0, "h0", (B, R), dt, dev)
        _check(c0, "c0", (B, H), dt, dev)
        _check(hT, "hT", (B, R), dt, dev)
        _check(cT, "cT", (B, H), dt, dev)
        _check_lengths(lengths, B, T, dev)
        _check_packed(packed, lengths, training, dev, xp.shape[0])
        if (w_hr is not None) != (R != H):
            raise ValueError("fastrnn: the recurrent width differs from hidden size exactly when projecting")
    y = xp.new_empty((T, B, R) if packed is None else (xp.shape[0], R))
    if hT is None:
        hT = xp.new_empty((B, R))
    if lstm and cT is None:
        cT = xp.new_empty((B, H))
    gates = cs = hpre = None
    if training:
        if mode != "RNN_TANH" and mode != "RNN_RELU":
            gates = xp.new_empty((T, B, GH))
            cs = xp.new_empty((T, B, H))
        if w_hr is not None:
            hpre = xp.new_empty((T, B, H))
    cell = CELLS[mode]
    if cuda:
        ws = _C.cuda_forward_workspace(cell, B, H, R)
        work = xp.new_empty((ws,))
        _C.cuda_forward(
            CUDA_DTYPES[xp.dtype], cell, T, B, H, R, reverse,
            xp.data_ptr(), w_hh.data_ptr(), _ptr(w_hr), _ptr(b_hh), _ptr(h0), _ptr(c0), _ptr(lengths),
            y.data_ptr(), hT.data_ptr(), _ptr(cT), _ptr(gates), _ptr(cs), _ptr(hpre), work.data_ptr(), ws,
            torch.cuda.current_stream(xp.device).cuda_stream,
        )
        return y, hT, cT, (gates, cs, hpre)
    _C.forward(  # work = 0: the core's own scratch
        DTYPES[xp.dtype], cell, T, B, H, R, reverse,
        xp.data_ptr(), w_hh.data_ptr(), _ptr(w_hr), _ptr(b_hh), _ptr(h0), _ptr(c0), _ptr(lengths),
        y.data_ptr(), hT.data_ptr(), _ptr(cT), _ptr(gates), _ptr(cs), _ptr(hpre), 0, 0,
        num_threads(), False, steps=0 if packed is None else packed[2].data_ptr(),
    )
    return y, hT, cT, (gates, cs, hpre)


def packed_steps(batch_sizes: torch.Tensor):
    """(T, B, steps, lengths) of a PackedSequence's batch_sizes (a CPU int64 tensor): steps
    [T+1] the first data row of each step (its rows are those of the first batch_sizes[t]
    sequences), lengths [B] the steps of each sequence (numpy: about 17 us at T=100, B=32)."""
    bs = batch_sizes.numpy()
    T, B = bs.shape[0], int(bs[0])
    steps = np.zeros(T + 1, dtype=np.int64)
    np.cumsum(bs, out=steps[1:])
    lengths = T - np.searchsorted(bs[::-1], np.arange(B), side="right")  # steps with batch_sizes > b
    return T, B, torch.from_numpy(steps), torch.from_numpy(lengths.astype(np.int64))


def check_steps(steps: torch.Tensor, T: int, rows: int) -> None:
    """A packed layout's steps against the rows its tensors have (the core checks them against
    the lengths, but cannot see how many rows x, xp and y hold): a PackedSequence whose
    batch_sizes do not add up to its data's rows is refused, never read or written past."""
    if steps.dtype != torch.int64 or steps.device.type != "cpu" or not steps.is_contiguous() \
            or steps.shape != (T + 1,):
        raise ValueError(f"fastrnn: steps must be a contiguous int64 CPU tensor of shape ({T + 1},)")
    if int(steps[T]) != rows:
        raise RuntimeError(f"PackedSequence: batch_sizes add up to {int(steps[T])} rows, but its data has {rows}")


def _check_packed(packed, lengths, training: bool, device, rows: int) -> None:
    if packed is None:
        return
    if device.type != "cpu" or training or lengths is None:
        raise ValueError("fastrnn: packed rows are for CPU inference with lengths")
    check_steps(packed[2], packed[0], rows)


def forward_fused(mode, x, w_ih, b_ih, w_hh, w_hr, b_hh, h0, c0, lengths, reverse: bool, training: bool,
                  hT=None, cT=None, stacked: bool = False, packed=None):
    """One layer and direction on the CPU with the input projection inside the native loop.

    x: [T,B,I] with unit stride along I (any strides across T and B, e.g. a batch_first
    view); w_ih [G*H,I], b_ih [G*H] or None; the rest as in ``forward``, all contiguous and
    of x's dtype: the callers (fastrnn.functional) built and checked them, the core re-checks
    the sizes. Scratch memory is the core's own (a per-thread buffer reused across calls).
    ``stacked``: hT and cT made here come as [1,B,R] / [1,B,H] (a single layer's h_n, c_n,
    without an unsqueeze node in the graph). ``packed``: (T, B, steps) as in ``forward``, x
    [N,I] and y [N,R] (inference; the caller checked steps).
    """
    if packed is None:
        T, B, I = x.shape
        st, sb, _ = x.stride()
    else:
        (T, B, _), I = packed, x.shape[1]
        st, sb = 0, x.stride(0)
    GH, R = w_hh.shape
    H = GH // GATES[mode]
    new = x.new_empty
    y = new((T, B, R) if packed is None else (x.shape[0], R))
    if hT is None:
        hT = new((1, B, R) if stacked else (B, R))
    lstm = mode == "LSTM"
    if cT is None and lstm:
        cT = new((1, B, H) if stacked else (B, H))
    gates = cs = hpre = None
    if training:
        if lstm or mode == "GRU":
            gates = new((T, B, GH))
            cs = new((T, B, H))
        if w_hr is not None:
            hpre = new((T, B, H))
    # (pointers inline: at tutorial sizes this call's Python is a tenth of the layer's time)
    _C.forward(
        DTYPES[x.dtype], CELLS[mode], T, B, H, R, reverse, 0, w_hh.data_ptr(),
        0 if w_hr is None else w_hr.data_ptr(), 0 if b_hh is None else b_hh.data_ptr(),
        0 if h0 is None else h0.data_ptr(), 0 if c0 is None else c0.data_ptr(),
        0 if lengths is None else lengths.data_ptr(), y.data_ptr(), hT.data_ptr(),
        0 if cT is None else cT.data_ptr(), 0 if gates is None else gates.data_ptr(),
        0 if cs is None else cs.data_ptr(), 0 if hpre is None else hpre.data_ptr(), 0, 0,
        torch.get_num_threads(), False, x.data_ptr(), w_ih.data_ptr(), 0 if b_ih is None else b_ih.data_ptr(),
        I, st, sb, 0 if packed is None else packed[2].data_ptr(),
    )
    return y, hT, cT, (gates, cs, hpre)


def backward(mode, w_hh, w_hr, h0, c0, lengths, reverse: bool, y, saved, dy, dhT, dcT, validate: bool = True,
             dxp=None, weight_grads=None):
    """Backward time loop of one layer and direction.

    ``dxp``: optional output tensor; for RNN it may be ``dy`` itself (each element of dy is
    read before the same element of dxp is written), which saves a [T,B,H] buffer.
    ``weight_grads`` (CPU): (dw_hh, db_hh, dw_hr, x, dw_ih, db_ih), output tensors (None: not
    computed) that the same native call fills after the loop; x [T,B,I] (unit stride along I)
    is the input of a fused forward, needed for dw_ih. The caller built them all.

    Returns (dxp [T,B,G*H], dhid, dh0 [B,R], dc0 [B,H] or None) where dhid is GRU's
    gradient of the recurrent n part [T,B,H], LSTM-with-projection's gradient of the
    projected state [T,B,R], else None.
    """
    G = GATES[mode]
    gates, cs, hpre = saved
    T, B, R = y.shape
    H = w_hh.shape[0] // G
    dt, dev = y.dtype, y.device
    cuda = dev.type == "cuda"
    if cuda and lengths is not None:
        lengths = lengths.to(dev)
    if validate:
        if not supports(dt, dev):
            raise ValueError(f"fastrnn: {unsupported_reason(dt, dev)}")
        _check(w_hh, "w_hh", (G * H, R), dt, dev)
        _check(w_hr, "w_hr", (R, H), dt, dev)
        _check(h0, "h0", (B, R), dt, dev)
        _check(c0, "c0", (B, H), dt, dev)
        _check(gates, "gates", (T, B, G * H), dt, dev)
        _check(cs, "cs", (T, B, H), dt, dev)
        _check(hpre, "hpre", (T, B, H), dt, dev)
        _check(dy, "dy", (T, B, R), dt, dev)
        _check(dhT, "dhT", (B, R), dt, dev)
        _check(dcT, "dcT", (B, H), dt, dev)
        _check_lengths(lengths, B, T, dev)
    lstm = mode == "LSTM"
    if dxp is None:
        dxp = y.new_empty((T, B, G * H))
    dhid = None
    if mode == "GRU":
        dhid = y.new_empty((T, B, H))
    elif w_hr is not None:
        dhid = y.new_empty((T, B, R))
    dh0 = y.new_empty((B, R))
    dc0 = y.new_empty((B, H)) if lstm else None
    if cuda:
        ws = _C.cuda_backward_workspace(CELLS[mode], B, H, R)
        work = y.new_empty((max(ws, 1),))
        _C.cuda_backward(
            CUDA_DTYPES[dt], CELLS[mode], T, B, H, R, bool(reverse),
            _ptr(w_hh), _ptr(w_hr), _ptr(h0), _ptr(c0), _ptr(lengths), _ptr(y),
            _ptr(gates), _ptr(cs), _ptr(hpre), _ptr(dy), _ptr(dhT), _ptr(dcT),
            _ptr(dxp), _ptr(dhid), _ptr(dh0), _ptr(dc0), _ptr(work), ws,
            torch.cuda.current_stream(dev).cuda_stream,
        )
        return dxp, dhid, dh0, dc0
    if weight_grads is None:
        _C.backward(  # work = 0: the core's own scratch
            DTYPES[dt], CELLS[mode], T, B, H, R, bool(reverse),
            _ptr(w_hh), _ptr(w_hr), _ptr(h0), _ptr(c0), _ptr(lengths), _ptr(y),
            _ptr(gates), _ptr(cs), _ptr(hpre), _ptr(dy), _ptr(dhT), _ptr(dcT),
            _ptr(dxp), _ptr(dhid), _ptr(dh0), _ptr(dc0), 0, 0, num_threads(),
        )
        return dxp, dhid, dh0, dc0
    dw_hh, db_hh, dw_hr, x, dw_ih, db_ih = weight_grads
    st, sb, _ = x.stride()
    _C.backward(
        DTYPES[dt], CELLS[mode], T, B, H, R, bool(reverse),
        _ptr(w_hh), _ptr(w_hr), _ptr(h0), _ptr(c0), _ptr(lengths), _ptr(y),
        _ptr(gates), _ptr(cs), _ptr(hpre), _ptr(dy), _ptr(dhT), _ptr(dcT),
        _ptr(dxp), _ptr(dhid), _ptr(dh0), _ptr(dc0), 0, 0, num_threads(),
        _ptr(dw_hh), _ptr(db_hh), _ptr(dw_hr), x.data_ptr(), x.shape[2], st, sb, _ptr(dw_ih), _ptr(db_ih),
    )
    return dxp, dhid, dh0, dc0


def _grad_in(g, dt, unit_ok, ndim):
    """An incoming gradient as (tensor or None, its last ``ndim`` strides) for the native loop:
    torch's strides as they are (an expanded sum gradient has stride 0 everywhere) where
    ``unit_ok(stride, size of the last dimension)``, else a dense copy; the dtype of the saved
    tensors."""
    if g is None:
        return None, (-1, 0, 1)[:ndim]
    if g.dtype != dt:
        g = g.to(dt)
    st = g.stride()
    if not unit_ok(st[-1], g.shape[-1]):
        g = g.contiguous()
        st = g.stride()
    return g, st[-ndim:]


def _dy_unit(su, n):  # the loop reads dy's rows as vectors (unit stride 1) or broadcasts (0)
    return su == 0 or su == 1 or n == 1


def _any_unit(su, n):  # dhT, dcT: copied element by element
    return True


def backward_fused(mode, reverse, lengths, need, x, w_ih, w_hh, w_hr, h0, c0, y, saved, dy, dhT, dcT):
    """Backward of ``forward_fused`` in one native call, the weight and bias gradients included.

    ``need``: LayerFunction's needs_input_grad (mode, reverse, lengths, x, w_ih, b_ih, w_hh,
    w_hr, b_hh, h0, c0, stacked); returns its backward's gradients in that order. The incoming
    gradients go in with torch's strides (no dense copies); outputs nobody asked for (dxp
    without dx, dh0, dc0) stay in the core's scratch. dx, when needed, is torch's mm.
    """
    gates, cs, hpre = saved
    T, B, R = y.shape
    GH = w_hh.shape[0]
    H = GH // GATES[mode]
    dt = y.dtype
    # (torch hands over gradients of our outputs' shapes; checked all the same: the loop trusts them)
    # (dhT, dcT: [B,R], [B,H], or with a leading 1 when the forward was stacked)
    dy, (dy_st, dy_sb, dy_su) = _grad_in(dy, dt, _dy_unit, 3)
    dhT, (dhT_sb, dhT_su) = _grad_in(dhT, dt, _any_unit, 2)
    lstm = mode == "LSTM"
    dcT, (dcT_sb, dcT_su) = _grad_in(dcT if lstm else None, dt, _any_unit, 2)
    if (dy is not None and dy.shape != y.shape) \
            or (dhT is not None and (dhT.shape[-2:] != (B, R) or dhT.dim() > 3 or dhT.numel() != B * R)) \
            or (dcT is not None and (dcT.shape[-2:] != (B, H) or dcT.dim() > 3 or dcT.numel() != B * H)):
        raise RuntimeError("fastrnn: gradient shapes do not match the outputs")
    if dy is not None and dy_su != 0 and R == 1:
        dy_su = 1
    new = y.new_empty
    dxp = new((T, B, GH)) if need[3] else None
    dh0 = new((B, R)) if need[9] else None
    dc0 = new((B, H)) if (lstm and need[10]) else None
    d_wih = new(w_ih.shape) if need[4] else None
    d_bih = new((GH,)) if need[5] else None
    d_whh = new(w_hh.shape) if need[6] else None
    d_whr = new(w_hr.shape) if need[7] else None
    d_bhh = new((GH,)) if need[8] else None
    st, sb, _ = x.stride()
    _C.backward(
        DTYPES[dt], CELLS[mode], T, B, H, R, bool(reverse),
        w_hh.data_ptr(), _ptr(w_hr), _ptr(h0), _ptr(c0), _ptr(lengths), y.data_ptr(),
        _ptr(gates), _ptr(cs), _ptr(hpre), _ptr(dy), _ptr(dhT), _ptr(dcT),
        _ptr(dxp), 0, _ptr(dh0), _ptr(dc0), 0, 0, torch.get_num_threads(),
        _ptr(d_whh), _ptr(d_bhh), _ptr(d_whr), x.data_ptr(), x.shape[2], st, sb, _ptr(d_wih), _ptr(d_bih),
        dy_st, dy_sb, dy_su, dhT_sb, dhT_su, dcT_sb, dcT_su,
    )
    dx = dxp.view(T * B, GH).mm(w_ih).view(T, B, x.shape[2]) if dxp is not None else None
    return None, None, None, dx, d_wih, d_bih, d_whh, d_whr, d_bhh, dh0, dc0, None


def info() -> dict:
    return {
        "extension": _C is not None,
        "isa": _C.isa() if _C is not None else None,
        "compiled_isas": _C.compiled_isas() if _C is not None else None,
        "cuda_compiled": CUDA_COMPILED,
        "cuda_devices": _C.cuda_device_count() if CUDA_COMPILED else 0,
        "threads": num_threads(),
    }


class Stepper:
    """Single-step inference over a stack of unidirectional layers, for generation loops.

    The recurrent weights are packed into the workspace on the first step and reused after
    (``prepacked``); buffers are preallocated, so a step costs one small GEMM per layer in
    torch plus one native call. ``layers``: per layer (w_ih [G*H,I], w_hh [G*H,R],
    b_ih [G*H] or None, b_hh [G*H] or None, w_hr [R,H] or None).
    """

    def __init__(self, mode: str, layers, batch: int):
        if _C is None:
            raise RuntimeError(unsupported_reason(torch.float32, torch.device("cpu")))
        self.mode = mode
        self.G = GATES[mode]
        self.B = batch
        self.layers = []
        for w_ih, w_hh, bias, b_hh, w_hr in layers:
            dt = w_ih.dtype
            if not supports(dt, w_ih.device):
                raise RuntimeError(unsupported_reason(dt, w_ih.device))
            GH, R = w_hh.shape
            H = GH // self.G
            if GH != self.G * H or w_ih.dim() != 2 or w_ih.shape[0] != GH \
                    or (b_hh is not None and tuple(b_hh.shape) != (GH,)) \
                    or (bias is not None and tuple(bias.shape) != (GH,)) \
                    or (w_hr is None) != (R == H) or (w_hr is not None and tuple(w_hr.shape) != (R, H)):
                raise ValueError("fastrnn: inconsistent weight shapes for the single-step path")
            w_hh = w_hh.detach().contiguous()
            ws = _C.forward_workspace(DTYPES[dt], CELLS[mode], batch, H, R)
            L = dict(
                w_ih_t=w_ih.detach().t(), bias=None if bias is None else bias.detach(),
                w_hh=w_hh, b_hh=None if b_hh is None else b_hh.detach().contiguous(),
                w_hr=None if w_hr is None else w_hr.detach().contiguous(),
                H=H, R=R, dt=dt, ws=ws, work=w_hh.new_empty((max(ws, 1),)), packed=False,
                xp=w_hh.new_empty((1, batch, GH)), y=w_hh.new_empty((1, batch, R)),
                h=[w_hh.new_zeros((batch, R)), w_hh.new_zeros((batch, R))],
                c=[w_hh.new_zeros((batch, H)), w_hh.new_zeros((batch, H))] if mode == "LSTM" else None,
                cur=0,
            )
            self.layers.append(L)

    def set_state(self, h, c=None) -> None:
        """h: [L,B,R]; c: [L,B,H] for LSTM."""
        for k, L in enumerate(self.layers):
            L["h"][L["cur"]].copy_(h[k])
            if L["c"] is not None:
                L["c"][L["cur"]].copy_(c[k])

    def state(self):
        h = torch.stack([L["h"][L["cur"]] for L in self.layers])
        if self.mode == "LSTM":
            return h, torch.stack([L["c"][L["cur"]] for L in self.layers])
        return h

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B,I] -> the top layer's new hidden state [B,R] (a buffer: copy it to keep it)."""
        nt = num_threads()
        for L in self.layers:
            xp = L["xp"][0]
            if L["bias"] is not None:
                torch.addmm(L["bias"], x, L["w_ih_t"], out=xp)
            else:
                torch.mm(x, L["w_ih_t"], out=xp)
            cur, nxt = L["cur"], 1 - L["cur"]
            h0, hT = L["h"][cur], L["h"][nxt]
            c0, cT = (L["c"][cur], L["c"][nxt]) if L["c"] is not None else (None, None)
            _C.forward(
                DTYPES[L["dt"]], CELLS[self.mode], 1, self.B, L["H"], L["R"], False,
                xp.data_ptr(), L["w_hh"].data_ptr(), _ptr(L["w_hr"]), _ptr(L["b_hh"]), h0.data_ptr(),
                _ptr(c0), 0, L["y"].data_ptr(), hT.data_ptr(), _ptr(cT), 0, 0, 0,
                L["work"].data_ptr(), L["ws"], nt, L["packed"],
            )
            L["packed"] = True
            L["cur"] = nxt
            x = hT
        return x

    def closed_loop(self, p0: torch.Tensor, steps: int, w_o: torch.Tensor, b_o, residual: bool) -> torch.Tensor:
        """Generation where the input of each step is the linear head of the previous top state.

        p0: [B,I] the first prediction (the input of the first step); head: p = h @ w_o^T + b_o
        (+ the previous input when ``residual``). The head is folded into the first layer's
        input projection (xp = (W_ih w_o) h + W_ih b_o + bias), so a step is one small GEMM
        and one native call per layer. Returns the top states [steps,B,R]; the caller applies
        the head to all of them at once.
        """
        first = self.layers[0]
        top = self.layers[-1]
        w_ih = first["w_ih_t"].t()
        m_t = (w_ih @ w_o.detach()).t().contiguous()        # [R_top, G*H]
        c = w_ih @ b_o.detach() if b_o is not None else None  # [G*H]
        fused_bias = first["bias"]
        if c is not None:
            fused_bias = c if fused_bias is None else fused_bias + c
        hist = top["y"].new_empty((steps, self.B, top["R"]))
        stride = self.B * top["R"] * hist.element_size()
        base = hist.data_ptr()
        nt = num_threads()
        xp0 = first["xp"][0]
        if first["bias"] is not None:
            torch.addmm(first["bias"], p0, first["w_ih_t"], out=xp0)
        else:
            torch.mm(p0, first["w_ih_t"], out=xp0)
        code = DTYPES[first["dt"]]
        cell = CELLS[self.mode]
        fwd = _C.forward
        # Per layer and per parity of the step, the native call's arguments; only the output
        # pointer of the top layer changes from step to step (it writes into hist).
        plans = []
        for L in self.layers:
            per_parity = []
            for cur in (0, 1):
                nxt = 1 - cur
                c0, cT = (L["c"][cur], L["c"][nxt]) if L["c"] is not None else (None, None)
                per_parity.append([
                    code, cell, 1, self.B, L["H"], L["R"], False,
                    L["xp"].data_ptr(), L["w_hh"].data_ptr(), _ptr(L["w_hr"]), _ptr(L["b_hh"]),
                    L["h"][cur].data_ptr(), _ptr(c0), 0, L["y"].data_ptr(), L["h"][nxt].data_ptr(), _ptr(cT),
                    0, 0, 0, L["work"].data_ptr(), L["ws"], nt, L["packed"],
                ])
            plans.append((L, per_parity))
        hT_of = [[L["h"][1], L["h"][0]] for L in self.layers]
        for s in range(steps):
            x = None
            for k, (L, per_parity) in enumerate(plans):
                cur = L["cur"]
                if k > 0:
                    if L["bias"] is not None:
                        torch.addmm(L["bias"], x, L["w_ih_t"], out=L["xp"][0])
                    else:
                        torch.mm(x, L["w_ih_t"], out=L["xp"][0])
                args = per_parity[cur]
                if L is top:
                    args[14] = base + s * stride
                fwd(*args)
                x = hT_of[k][cur]
                L["cur"] = 1 - cur
            if s == 0:  # the weights are packed now: later steps skip the packing
                for L, per_parity in plans:
                    L["packed"] = True
                    for args in per_parity:
                        args[-1] = True
            # next input projection from this step's top state (the head folded in)
            if residual:
                xp0.addmm_(x, m_t)
                if c is not None:
                    xp0.add_(c)
            elif fused_bias is not None:
                torch.addmm(fused_bias, x, m_t, out=xp0)
            else:
                torch.mm(x, m_t, out=xp0)
        return hist
