"""Data utilities for the ways people train RNNs.

* :func:`noisy_sine`, :func:`airline_passengers`, :func:`sonnets`: small series and a text.
* :class:`SlidingWindow`: windows over a series, "next" (many-to-one) or "shifted" (many-to-many).
* :func:`chronological_split`, :class:`MinMaxScaler`, :class:`StandardScaler`.
* :class:`TBPTTBatcher` and :func:`detach_state`: truncated BPTT over one long sequence.
* :class:`CharVocab`: character-level encode/decode for a small language model.
"""
from __future__ import annotations

import csv
import math
from importlib import resources
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

__all__ = [
    "noisy_sine", "airline_passengers", "sonnets", "SlidingWindow", "chronological_split", "MinMaxScaler",
    "StandardScaler", "TBPTTBatcher", "detach_state", "CharVocab",
]


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def noisy_sine(n_points: int = 100, noise: float = 0.1, x_range: Tuple[float, float] = (-2 * math.pi, 2 * math.pi),
               seed: Optional[int] = None, return_clean: bool = False):
    """sin(x) on ``n_points`` evenly spaced x in ``x_range`` plus Gaussian noise of std ``noise``.

    Returns a float32 tensor [n_points] (and the clean sine too when ``return_clean``).
    """
    _positive_int(n_points, "n_points")
    if not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"noise must be a finite non-negative number, got {noise!r}")
    lo, hi = x_range
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise ValueError(f"x_range must be (low, high) with low < high, got {x_range!r}")
    gen = torch.Generator()
    gen.manual_seed(seed if seed is not None else torch.seed())
    x = torch.linspace(lo, hi, n_points, dtype=torch.float64)
    clean = torch.sin(x).float()
    series = clean + noise * torch.randn(n_points, generator=gen)
    return (series, clean) if return_clean else series


def airline_passengers(with_months: bool = False):
    """Monthly international airline passengers (thousands), Jan 1949 - Dec 1960: 144 values.

    Box & Jenkins (1976), Series G; shipped in ``fastrnn/data/files/airline_passengers.csv``.
    Returns a float32 tensor [144], or (tensor, ["1949-01", ...]) with ``with_months``.
    """
    text = resources.files(__package__).joinpath("files/airline_passengers.csv").read_text()
    rows = [r for r in csv.reader(line for line in text.splitlines() if line and not line.startswith("#"))]
    header, body = rows[0], rows[1:]
    assert header == ["month", "passengers"]
    values = torch.tensor([float(r[1]) for r in body], dtype=torch.float32)
    return (values, [r[0] for r in body]) if with_months else values


def sonnets() -> str:
    """Seven of Shakespeare's sonnets (public domain), about 4 KB: the char-LM demo text."""
    return resources.files(__package__).joinpath("files/sonnets.txt").read_text()


def _as_series(series) -> torch.Tensor:
    s = torch.as_tensor(series)
    if s.dim() not in (1, 2):
        raise ValueError(f"series must be 1-D [N] or 2-D [N, F], got shape {tuple(s.shape)}")
    return s


class SlidingWindow(Dataset):
    """Windows over a series [N] or [N, F], shaped for ``batch_first=True`` layers.

    ``target="next"``: item i is (series[i*stride : +window] as [window, F],
    series[i*stride+window : +horizon] as [horizon, F]); a 1-D series gives F = 1.
    ``target="shifted"``: the target is the window shifted one step later, [window, F].
    For N=100, window=10 ("next") there are 90 items; for N=50, window=15 ("shifted") 35.
    """

    def __init__(self, series, window: int, horizon: int = 1, target: str = "next", stride: int = 1):
        s = _as_series(series)
        self.window = _positive_int(window, "window")
        self.horizon = _positive_int(horizon, "horizon")
        self.stride = _positive_int(stride, "stride")
        if target not in ("next", "shifted"):
            raise ValueError(f"target must be 'next' or 'shifted', got {target!r}")
        self.target = target
        self.series = s.unsqueeze(-1) if s.dim() == 1 else s
        span = window + (horizon if target == "next" else 1)
        n = self.series.shape[0]
        if span > n:
            raise ValueError(f"a window of {window} (+{span - window} target steps) is longer than the series ({n})")
        self._len = (n - span) // self.stride + 1

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int):
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"index {i} out of range for {self._len} windows")
        s0 = i * self.stride
        x = self.series[s0:s0 + self.window]
        if self.target == "next":
            y = self.series[s0 + self.window:s0 + self.window + self.horizon]
        else:
            y = self.series[s0 + 1:s0 + 1 + self.window]
        return x, y

    def tensors(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """All items stacked: (x [len, window, F], y [len, horizon or window, F])."""
        xs, ys = zip(*(self[i] for i in range(len(self))))
        return torch.stack(xs), torch.stack(ys)


def chronological_split(series, test_fraction: float = 0.2):
    """(train, test): the first 1 - test_fraction of the series, then the rest. No shuffling."""
    s = _as_series(series)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    n_test = max(1, int(round(len(s) * test_fraction)))
    if n_test >= len(s):
        raise ValueError(f"a series of {len(s)} values is too short to split")
    return s[:-n_test], s[-n_test:]


class _Scaler:
    def fit_transform(self, x):
        return self.fit(x).transform(x)

    def _check(self):
        if not hasattr(self, "_a"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit() on the training part")

    def transform(self, x):
        self._check()
        return (torch.as_tensor(x) - self._a) / self._b

    def inverse_transform(self, x):
        self._check()
        return torch.as_tensor(x) * self._b + self._a


class MinMaxScaler(_Scaler):
    """Maps the training range to ``feature_range`` (per feature on the last axis of 2-D data)."""

    def __init__(self, feature_range: Tuple[float, float] = (0.0, 1.0)):
        if feature_range[1] <= feature_range[0]:
            raise ValueError(f"feature_range must be (low, high) with low < high, got {feature_range!r}")
        self.feature_range = feature_range

    def fit(self, x):
        x = torch.as_tensor(x)
        lo = x.amin(0) if x.dim() > 1 else x.min()
        hi = x.amax(0) if x.dim() > 1 else x.max()
        span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
        a, b = self.feature_range
        # y = (x - lo) / span * (b - a) + a  ==  (x - _a) / _b
        self._b = span / (b - a)
        self._a = lo - a * self._b
        return self


class StandardScaler(_Scaler):
    """Zero mean, unit variance on the training part (per feature on 2-D data)."""

    def fit(self, x):
        x = torch.as_tensor(x)
        self._a = x.mean(0)
        std = x.std(0, unbiased=False)
        self._b = torch.where(std > 0, std, torch.ones_like(std))
        return self


class TBPTTBatcher:
    """Truncated-BPTT batches over one long sequence (token ids [N] or values [N] / [N, F]).

    The sequence is cut into ``batch_size`` parallel streams of equal length L = N // batch_size
    starting at offsets 0, L, 2L, ... (the tail that does not fill a stream is dropped). Each
    epoch yields (input, target) chunks of ``bptt`` steps (the last may be shorter), target =
    input shifted one step later; chunk k+1 of every stream continues exactly where chunk k
    ended, so a model can carry its state (see :func:`detach_state`). No shuffling.

    Shapes: [steps, batch_size(, F)] time-major, or [batch_size, steps(, F)] with batch_first.
    """

    def __init__(self, data, batch_size: int, bptt: int, batch_first: bool = False):
        d = torch.as_tensor(data)
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.bptt = _positive_int(bptt, "bptt")
        if d.dim() not in (1, 2):
            raise ValueError(f"data must be 1-D [N] or 2-D [N, F], got shape {tuple(d.shape)}")
        L = d.shape[0] // batch_size
        if L < 2:
            raise ValueError(f"a sequence of {d.shape[0]} steps is too short for {batch_size} streams of 2+ steps")
        self.stream_length = L
        self.batch_first = batch_first
        # [batch_size, L(, F)] -> time-major [L, batch_size(, F)]
        self.streams = d[: L * batch_size].reshape(batch_size, L, *d.shape[1:]).transpose(0, 1).contiguous()
        self.offsets = [b * L for b in range(batch_size)]

    def __len__(self) -> int:
        return math.ceil((self.stream_length - 1) / self.bptt)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for k in range(len(self)):
            i = k * self.bptt
            n = min(self.bptt, self.stream_length - 1 - i)
            x, y = self.streams[i:i + n], self.streams[i + 1:i + 1 + n]
            if self.batch_first:
                x, y = x.transpose(0, 1), y.transpose(0, 1)
            yield x, y


def detach_state(state):
    """Cuts the graph between TBPTT chunks: works on a tensor, an (h, c) tuple, or nested lists."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    raise TypeError(f"detach_state expects tensors or tuples of tensors, got {type(state).__name__}")


class CharVocab:
    """Character vocabulary: ``encode(text)`` -> int64 ids, ``decode(ids)`` -> text."""

    def __init__(self, text: str):
        if not text:
            raise ValueError("cannot build a vocabulary from empty text")
        self.chars: List[str] = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        try:
            return torch.tensor([self.index[c] for c in text], dtype=torch.int64)
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: Union[torch.Tensor, Sequence[int]]) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        n = len(self.chars)
        for i in ids:
            if not 0 <= i < n:
                raise ValueError(f"id {i} is outside the vocabulary (size {n})")
        return "".join(self.chars[i] for i in ids)
