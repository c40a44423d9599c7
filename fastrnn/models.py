"""Ready models for the classic exercises."""
from __future__ import annotations

import torch
from torch import nn

from .modules import GRU, LSTM, RNN

__all__ = ["Forecaster"]

LAYERS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


class Forecaster(nn.Module):
    """A fastrnn layer (``batch_first=True``) plus a linear head, one prediction per step.

    ``forward(x [B,T,input_size], state=None) -> (y [B,T,output_size], state)``; for
    many-to-one training take ``y[:, -1]``. With ``residual=True`` the head predicts the change
    from the current input (y = x[..., :output_size] + head(h)), which suits trending series.
    ``layer_cls`` lets the same model run on ``torch.nn.LSTM`` etc. for comparisons.
    """

    def __init__(self, cell: str = "lstm", input_size: int = 1, hidden_size: int = 64, num_layers: int = 1,
                 output_size: int = 1, dropout: float = 0.0, residual: bool = False, layer_cls=None):
        super().__init__()
        if cell not in LAYERS:
            raise ValueError(f"cell must be one of {sorted(LAYERS)}, got {cell!r}")
        if residual and output_size > input_size:
            raise ValueError("residual=True needs output_size <= input_size")
        self.cell = cell
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.residual = residual
        cls = layer_cls or LAYERS[cell]
        self.rnn = cls(input_size, hidden_size, num_layers, batch_first=True, dropout=dropout)
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor, state=None):
        y, state = self.rnn(x, state)
        out = self.head(y)
        if self.residual:
            out = out + x[..., : self.output_size]
        return out, state
