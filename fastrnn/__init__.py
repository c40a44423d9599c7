"""fastrnn: fast drop-in replacements for PyTorch's recurrent layers.

    import fastrnn
    lstm = fastrnn.LSTM(input_size=1, hidden_size=64, batch_first=True)  # was torch.nn.LSTM
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import functional, reference  # noqa: E402
from ._backend import info as _backend_info  # noqa: E402
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, convert  # noqa: E402

__all__ = [
    "LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "convert", "functional", "reference", "info",
    "__version__",
]


def info() -> dict:
    """Version, kernel ISA picked at load time, CUDA build flag, threads, torch version."""
    import torch

    d = {"version": __version__, "torch": torch.__version__}
    d.update(_backend_info())
    return d
