"""Speed comparison of fastrnn against torch.nn on the same layer, in one process.

Each round times torch and fastrnn back to back (alternating which goes first), several
calls per timing; the reported time is the median over rounds, the speedup the median of
the per-round ratios torch/fastrnn. Nothing here asserts a timing.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from . import modules
from . import reference as ref_mod

CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN_TANH"}
TORCH = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN_TANH": torch.nn.RNN, "RNN_RELU": torch.nn.RNN}
FAST = {"LSTM": modules.LSTM, "GRU": modules.GRU, "RNN_TANH": modules.RNN, "RNN_RELU": modules.RNN}
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}

# (T, B, I, H): tutorial sizes, a medium layer, a large layer, streaming at batch 1.
SHAPES = [(15, 5, 1, 20), (10, 8, 1, 64), (100, 32, 64, 128), (200, 1, 128, 128), (100, 64, 512, 512)]
QUICK_SHAPES = [(15, 5, 1, 20), (10, 8, 1, 64), (100, 32, 64, 128), (200, 1, 128, 128)]


@dataclass
class Case:
    cell: str = "lstm"
    T: int = 15
    B: int = 5
    I: int = 1
    H: int = 20
    proj_size: int = 0
    packed: bool = False
    dtype: str = "float32"
    num_layers: int = 1
    bidirectional: bool = False
    device: str = "cpu"

    def label(self) -> str:
        extra = []
        if self.device != "cpu":
            extra.append(self.device)
        if self.proj_size:
            extra.append(f"proj={self.proj_size}")
        if self.packed:
            extra.append("packed")
        if self.dtype != "float32":
            extra.append(self.dtype)
        if self.num_layers > 1:
            extra.append(f"L={self.num_layers}")
        if self.bidirectional:
            extra.append("bidir")
        s = f"{self.cell} ({self.T},{self.B},{self.I},{self.H})"
        return s + (" " + ",".join(extra) if extra else "")

    def flops(self, train: bool, rows: int | None = None) -> float:
        """Multiply-adds x2 of the layer's matrix products (the elementwise work is not counted).
        ``rows``: the (t, b) rows that run (a PackedSequence's), else all T*B."""
        mode = CELLS[self.cell]
        G, D = GATES[mode], (2 if self.bidirectional else 1)
        R = self.proj_size or self.H
        total, inp = 0.0, self.I
        for _ in range(self.num_layers):
            per = 2.0 * (self.T * self.B if rows is None else rows) * (G * self.H * (inp + R)
                                                                       + (self.H * R if self.proj_size else 0))
            total += D * per
            inp = D * R
        return total * (3.0 if train else 1.0)


def make_layers(case: Case, seed: int = 0):
    """(torch layer, fastrnn layer, input builder) with identical parameters."""
    mode = CELLS[case.cell]
    dtype = getattr(torch, case.dtype)
    kw = dict(num_layers=case.num_layers, bidirectional=case.bidirectional, dtype=dtype)
    if case.proj_size:
        kw["proj_size"] = case.proj_size
    torch.manual_seed(seed)
    t = TORCH[mode](case.I, case.H, **kw).to(case.device)
    f = FAST[mode](case.I, case.H, **kw).to(case.device)
    f.load_state_dict(t.state_dict())
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(case.T, case.B, case.I, dtype=dtype, generator=gen).to(case.device)
    if case.packed:
        lengths = torch.randint(1, case.T + 1, (case.B,), generator=gen)
        lengths[0] = case.T
        x = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    return t, f, x


def step_fn(layer, x, train: bool) -> Callable[[], None]:
    """One inference call under no_grad, or one forward+backward."""
    if not train:
        def infer():
            with torch.no_grad():
                layer(x)
        return infer

    def train_step():
        xi = x
        out, h = layer(xi)
        data = out.data if isinstance(out, torch.nn.utils.rnn.PackedSequence) else out
        loss = data.sum() + (h[0].sum() if isinstance(h, tuple) else h.sum())
        loss.backward()
        for p in layer.parameters():
            p.grad = None
    return train_step


def reference_fn(layer, x, train: bool):
    """The pure-PyTorch reference on the same layer (for pytest-benchmark groups)."""
    mode = layer.mode
    L, D = layer.num_layers, 2 if layer.bidirectional else 1
    R = layer.proj_size or layer.hidden_size
    B = x.shape[1]
    h0 = torch.zeros(L * D, B, R, dtype=x.dtype)
    c0 = torch.zeros(L * D, B, layer.hidden_size, dtype=x.dtype) if mode == "LSTM" else None

    def run():
        res = ref_mod.rnn_ref(mode, x, h0, c0, layer._flat_weights, layer.bias, L, 0.0, False,
                              layer.bidirectional, layer.proj_size)
        if train:
            res[0].sum().backward()
            for p in layer.parameters():
                p.grad = None

    if train:
        return run

    def infer():
        with torch.no_grad():
            run()
    return infer


def _time(fn: Callable[[], None], n: int, sync: bool = False) -> float:
    if sync:  # GPU: time the work, not the launches
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    if sync:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


@dataclass
class Row:
    case: str
    mode: str
    torch_ms: float
    fastrnn_ms: float
    speedup: float
    gflops: float
    rounds: int


def _rows(x) -> int | None:
    """The rows a PackedSequence runs (its GFLOP/s count those, not the padded T*B)."""
    return x.data.shape[0] if isinstance(x, torch.nn.utils.rnn.PackedSequence) else None


def compare(case: Case, train: bool, rounds: int = 7, target_s: float = 0.02, max_s: float = 20.0) -> Row:
    t_layer, f_layer, x = make_layers(case)
    fns = [step_fn(t_layer, x, train), step_fn(f_layer, x, train)]
    sync = case.device != "cpu"
    for fn in fns:  # warm-up (allocations, packing caches, oneDNN primitives)
        fn()
        fn()
    per = [_time(fn, 1, sync) for fn in fns]
    n = max(1, int(target_s / max(min(per), 1e-7)))
    est = (per[0] + per[1]) * n * rounds
    if est > max_s:  # keep large shapes affordable
        rounds = max(3, int(rounds * max_s / est))
    times_t, times_f, ratios = [], [], []
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        got = {}
        for i in order:
            got[i] = _time(fns[i], n, sync)
        times_t.append(got[0])
        times_f.append(got[1])
        ratios.append(got[0] / got[1])
    tf = statistics.median(times_f)
    return Row(case.label(), "train" if train else "infer", statistics.median(times_t) * 1e3, tf * 1e3,
               statistics.median(ratios), case.flops(train, _rows(x)) / tf / 1e9, rounds)


def cuda_cases(cells: Sequence[str] = ("lstm", "gru", "rnn")) -> List[Case]:
    """The GPU comparison against cuDNN (issue: CUDA kernels)."""
    cases = []
    for c in cells:
        cases += [Case(c, 100, 64, 512, 512, device="cuda"), Case(c, 100, 64, 512, 512, dtype="bfloat16", device="cuda")]
        cases += [Case(c, 1024, b, h, h, device="cuda") for b in (1, 4, 16) for h in (256, 512, 1024)]
        cases.append(Case(c, 1024, 16, 768, 768, dtype="bfloat16", device="cuda"))
    return cases


def default_cases(quick: bool, cells: Sequence[str] = ("lstm", "gru", "rnn")) -> List[Case]:
    shapes = QUICK_SHAPES if quick else SHAPES
    cases = [Case(c, *s) for c in cells for s in shapes]
    if not quick and "lstm" in cells:
        cases += [
            Case("lstm", 100, 32, 64, 256, proj_size=64),
            Case("lstm", 100, 32, 64, 128, packed=True),
            Case("lstm", 50, 16, 32, 64, dtype="float64"),
        ]
    return cases


def run(cases: Sequence[Case], modes: Sequence[str] = ("infer", "train"), rounds: int = 7,
        progress: Optional[Callable[[Row], None]] = None) -> List[Row]:
    rows = []
    for case in cases:
        for mode in modes:
            row = compare(case, mode == "train", rounds=rounds)
            rows.append(row)
            if progress:
                progress(row)
    return rows


def format_row(row: Row) -> str:
    return (f"{row.case:<34} {row.mode:<6} {row.torch_ms:>10.3f} {row.fastrnn_ms:>11.3f} "
            f"{row.speedup:>8.2f}x {row.gflops:>8.1f}")


HEADER = f"{'shape (T,B,I,H)':<34} {'mode':<6} {'torch ms':>10} {'fastrnn ms':>11} {'speedup':>9} {'GFLOP/s':>8}"


def fma_peak(threads: int, seconds: float = 0.2) -> float:
    """Measured float32 FMA peak (GFLOP/s) of `threads` threads with the picked kernel ISA:
    the best of three runs of about `seconds` each."""
    from ._backend import _C

    iters = 1 << 16
    while True:  # calibrate to about `seconds`
        t0 = time.perf_counter()
        _C.fma_peak_gflops(threads, iters)
        if time.perf_counter() - t0 > seconds / 4 or iters > 1 << 30:
            break
        iters *= 4
    return max(_C.fma_peak_gflops(threads, iters) for _ in range(3))


def rows_as_dicts(rows: Sequence[Row]) -> List[dict]:
    return [asdict(r) for r in rows]


def parse_shape(text: str) -> Tuple[int, int, int, int]:
    parts = [int(p) for p in text.replace("(", "").replace(")", "").split(",")]
    if len(parts) != 4 or any(p <= 0 for p in parts):
        raise ValueError(f"shape must be T,B,I,H with positive integers, got {text!r}")
    return tuple(parts)  # type: ignore[return-value]
