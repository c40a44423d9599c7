"""Drop-in replacements for torch.nn.LSTM, GRU and RNN.

The layers subclass ``torch.nn.RNNBase`` (not torch.nn.LSTM/GRU/RNN, which Dynamo refuses to
trace), so constructor arguments, parameters, ``state_dict``, ``repr`` and torch's own
argument checks are torch's. ``forward`` follows torch's flow (same shapes, same errors) and
runs the time loop in the native core; where the core cannot serve (a device or dtype the
build lacks) it falls back to torch's implementation and warns once.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import _backend
from .functional import single_layer as _single_layer
from .functional import rnn as _rnn

# The shortcuts (tests compare them with the general path): a single layer straight to the
# native calls; PackedSequence rows read and written in place by the native loops (inference).
_FAST_LAYER = True
_PACKED_ROWS = True

__all__ = ["LSTM", "GRU", "RNN"]

_TORCH_CLASS = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN_TANH": nn.RNN, "RNN_RELU": nn.RNN}
_warned: set = set()


def _warn_fallback(what: str, reason: str) -> None:
    key = (what, reason)
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(f"fastrnn.{what}: falling back to torch's implementation: {reason}", RuntimeWarning, stacklevel=3)


class _FastRNNBase(nn.RNNBase):
    """Shared forward of the three layers (torch's flow, native time loop)."""

    def _name(self) -> str:
        return "RNN" if self.mode.startswith("RNN") else self.mode

    def _weights(self):
        # The module's current tensors (not the cached _flat_weights), so that functional_call
        # and reparametrizations see the weights they installed: straight from _parameters
        # (what functional_call swaps), through getattr where a name is not a plain
        # parameter (parametrize turns it into a property).
        params = self._parameters
        try:
            return [params[n] for n in self._flat_weights_names]
        except KeyError:
            return [getattr(self, n) for n in self._flat_weights_names]

    def _state_ok(self, hx, B: int, dtype) -> bool:
        """Whether a given state has exactly the shapes and dtype torch expects (fast path)."""
        LD = self.num_layers * (2 if self.bidirectional else 1)
        if self.mode == "LSTM":
            if not isinstance(hx, tuple) or len(hx) != 2:
                return False
            R = self.proj_size if self.proj_size > 0 else self.hidden_size
            h, c = hx
            return (isinstance(h, torch.Tensor) and isinstance(c, torch.Tensor) and h.shape == (LD, B, R)
                    and c.shape == (LD, B, self.hidden_size) and h.dtype == dtype and c.dtype == dtype
                    and h.device == c.device)
        return isinstance(hx, torch.Tensor) and hx.shape == (LD, B, self.hidden_size) and hx.dtype == dtype

    def forward(self, input, hx=None):
        data = input.data if isinstance(input, PackedSequence) else input
        if isinstance(data, torch.Tensor) and not _backend.supports_tensor(data):
            _warn_fallback(type(self).__name__, _backend.unsupported_reason(data.dtype, data.device))
            return _TORCH_CLASS[self.mode].forward(self, input, hx)
        weights = self._weights()
        # Fast path: a batched tensor that passes torch's checks (the slow path raises torch's errors).
        if isinstance(input, torch.Tensor) and input.dim() == 3 and input.dtype == weights[0].dtype and input.size(-1) == self.input_size:
            x = input.transpose(0, 1) if self.batch_first else input
            if x.size(0) > 0 and (hx is None or self._state_ok(hx, x.size(1), x.dtype)) \
                    and (hx is None or (hx[0] if self.mode == "LSTM" else hx).device == x.device):
                h0, c0 = (None, None) if hx is None else ((hx[0], hx[1]) if self.mode == "LSTM" else (hx, None))
                if self.num_layers == 1 and not self.bidirectional and self.proj_size == 0 and _FAST_LAYER:
                    res = _single_layer(self.mode, x, weights, self.bias, h0, c0)
                    if res is not None:
                        out = res[0].transpose(0, 1) if self.batch_first else res[0]
                        return out, ((res[1], res[2]) if self.mode == "LSTM" else res[1])
                res = _rnn(self.mode, x, h0, c0, weights, self.bias, self.num_layers, self.dropout, self.training,
                           self.bidirectional, self.proj_size, None, checked=True)
                out = res[0].transpose(0, 1) if self.batch_first else res[0]
                return out, ((res[1], res[2]) if self.mode == "LSTM" else res[1])
        return self._forward_checked(input, hx, weights)

    def _forward_checked(self, input, hx, weights):  # noqa: C901 - mirrors torch's three forwards
        lstm = self.mode == "LSTM"
        D = 2 if self.bidirectional else 1
        real_hidden = self.proj_size if self.proj_size > 0 else self.hidden_size
        orig_input = input
        batch_sizes = None
        sorted_indices = unsorted_indices = None
        is_batched = True
        batch_dim = 0 if self.batch_first else 1
        if isinstance(orig_input, PackedSequence):
            input, batch_sizes, sorted_indices, unsorted_indices = input
            max_batch_size = int(batch_sizes[0])
            if hx is not None:
                hx = self.permute_hidden(hx, sorted_indices)
        else:
            if input.dim() not in (2, 3):
                if self.mode.startswith("RNN"):
                    raise ValueError(f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
                raise ValueError(f"{self.mode}: Expected input to be 2D or 3D, got {input.dim()}D instead")
            is_batched = input.dim() == 3
            if not is_batched:
                input = input.unsqueeze(batch_dim)
            max_batch_size = input.size(0) if self.batch_first else input.size(1)
            if hx is not None:
                if lstm:
                    if is_batched:
                        if hx[0].dim() != 3 or hx[1].dim() != 3:
                            raise RuntimeError(
                                "For batched 3-D input, hx and cx should "
                                f"also be 3-D but got ({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                            )
                    else:
                        if hx[0].dim() != 2 or hx[1].dim() != 2:
                            raise RuntimeError(
                                "For unbatched 2-D input, hx and cx should "
                                f"also be 2-D but got ({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                            )
                        hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
                else:
                    if is_batched:
                        if hx.dim() != 3:
                            raise RuntimeError(
                                f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor"
                            )
                    else:
                        if hx.dim() != 2:
                            raise RuntimeError(
                                f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor"
                            )
                        hx = hx.unsqueeze(1)
        if hx is None:
            zeros = dict(dtype=input.dtype, device=input.device)
            h_zeros = torch.zeros(self.num_layers * D, max_batch_size, real_hidden if lstm else self.hidden_size,
                                  **zeros)
            if lstm:
                hx = (h_zeros, torch.zeros(self.num_layers * D, max_batch_size, self.hidden_size, **zeros))
            else:
                hx = h_zeros
        self.check_forward_args(input, hx, batch_sizes)
        h0, c0 = (hx[0], hx[1]) if lstm else (hx, None)
        for state in (h0, c0):
            if state is not None and (state.dtype != input.dtype or state.device != input.device):
                raise RuntimeError(
                    f"Input and hidden tensors are not the same dtype or device, found input tensor with "
                    f"{input.dtype} on {input.device} and hidden tensor with {state.dtype} on {state.device}"
                )

        lengths = None
        if batch_sizes is not None and _PACKED_ROWS and input.is_cpu and not torch.is_grad_enabled() \
                and not torch.compiler.is_compiling():
            # inference on the CPU: the native loops read and write the packed rows themselves
            T, B, steps, lengths = _backend.packed_steps(batch_sizes)
            result = _rnn(self.mode, input, h0, c0, weights, self.bias, self.num_layers, self.dropout,
                          self.training, self.bidirectional, self.proj_size, lengths, checked=True,
                          packed=(T, B, steps))
            hidden = (result[1], result[2]) if lstm else result[1]
            output_packed = PackedSequence(result[0], batch_sizes, sorted_indices, unsorted_indices)
            return output_packed, self.permute_hidden(hidden, unsorted_indices)
        if batch_sizes is not None:
            rows, lengths = _packed_rows(batch_sizes, input.device)
            T, B = batch_sizes.shape[0], max_batch_size
            x = input.new_zeros((T * B,) + input.shape[1:]).index_copy(0, rows, input).view((T, B) + input.shape[1:])
        else:
            if input.size(0 if not self.batch_first else 1) == 0:
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
            x = input.transpose(0, 1) if self.batch_first else input
        result = _rnn(self.mode, x, h0, c0, weights, self.bias, self.num_layers, self.dropout,
                      self.training, self.bidirectional, self.proj_size, lengths, checked=True)
        output = result[0]
        hidden = (result[1], result[2]) if lstm else result[1]

        if isinstance(orig_input, PackedSequence):
            data_out = output.reshape(T * B, output.shape[-1]).index_select(0, rows)
            output_packed = PackedSequence(data_out, batch_sizes, sorted_indices, unsorted_indices)
            return output_packed, self.permute_hidden(hidden, unsorted_indices)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(batch_dim)
            hidden = (hidden[0].squeeze(1), hidden[1].squeeze(1)) if lstm else hidden.squeeze(1)
        return output, self.permute_hidden(hidden, unsorted_indices)


def _packed_rows(batch_sizes: torch.Tensor, device):
    """Where each row of a PackedSequence's data goes in the padded time-major [T*B] layout
    (step t holds rows 0..batch_sizes[t]-1: t*B + b, in the data's own order), and the lengths.

    One index_copy / index_select with these rows replaces pad_packed_sequence and
    pack_padded_sequence, which copy step by step (100 steps: about 0.7 ms of a 4 ms layer).
    """
    B = int(batch_sizes[0])
    mask = torch.arange(B) < batch_sizes.unsqueeze(1)  # [T,B]: row b active at step t
    rows = mask.view(-1).nonzero().squeeze(1)
    lengths = mask.sum(0)
    return (rows if device.type == "cpu" else rows.to(device)), lengths


class LSTM(_FastRNNBase):
    r"""Drop-in for :class:`torch.nn.LSTM` (same arguments, parameters and results)."""

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden


class GRU(_FastRNNBase):
    r"""Drop-in for :class:`torch.nn.GRU`."""

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)


class RNN(_FastRNNBase):
    r"""Drop-in for :class:`torch.nn.RNN` (``nonlinearity='tanh'`` or ``'relu'``)."""

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif self.nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(mode, *args, **kwargs)


# ----------------------------------------------------------------------------------------
# Cells: one step, batched [B,I] or unbatched [I], with or without state.
# ----------------------------------------------------------------------------------------
def _check_cell_shapes(input, hx, hidden_size, input_size, label):
    if input.size(1) != input_size:
        raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {input_size}")
    if input.size(0) != hx.size(0):
        raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden{label} batch size {hx.size(0)}")
    if hx.size(1) != hidden_size:
        raise RuntimeError(f"hidden{label} has inconsistent hidden_size: got {hx.size(1)}, expected {hidden_size}")
    if hx.dtype != input.dtype:
        raise RuntimeError(f"expected hidden{label} dtype {input.dtype} but got {hx.dtype}")


class _FastCellMixin:
    _mode: str

    def _cell_forward(self, input, hx, name):
        """torch's cell flow around one native step."""
        lstm = self._mode == "LSTM"
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            if lstm:
                for idx, value in enumerate(hx):
                    if value.dim() not in (1, 2):
                        raise ValueError(f"{name}: Expected hx[{idx}] to be 1D or 2D, got {value.dim()}D instead")
            elif hx.dim() not in (1, 2):
                raise ValueError(f"{name}: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)
            hx = (zeros, zeros) if lstm else zeros
        elif not is_batched:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0)) if lstm else hx.unsqueeze(0)
        h0, c0 = (hx[0], hx[1]) if lstm else (hx, None)
        _check_cell_shapes(input, h0, self.hidden_size, self.input_size, 0)
        if lstm:
            _check_cell_shapes(input, c0, self.hidden_size, self.input_size, 1)
        params = [self.weight_ih, self.weight_hh]
        if self.bias:
            params += [self.bias_ih, self.bias_hh]
        GH = _backend.GATES[self._mode] * self.hidden_size
        want = [(GH, self.input_size), (GH, self.hidden_size), (GH,), (GH,)]
        for p, shape in zip(params, want):  # the native step trusts these shapes
            if tuple(p.shape) != shape:
                raise RuntimeError(f"{name}: a parameter has shape {tuple(p.shape)}, expected {shape}")
        from .functional import _direction

        _, h, c = _direction(self._mode, input.unsqueeze(0), params, self.bias, False, h0, c0, None, False)
        if not is_batched:
            h = h.squeeze(0)
            c = None if c is None else c.squeeze(0)
        return (h, c) if lstm else h

    def _native(self, input) -> bool:
        if isinstance(input, torch.Tensor) and not _backend.supports(input.dtype, input.device):
            _warn_fallback(type(self).__name__, _backend.unsupported_reason(input.dtype, input.device))
            return False
        return True


class LSTMCell(_FastCellMixin, nn.LSTMCell):
    r"""Drop-in for :class:`torch.nn.LSTMCell`, one native step per call."""

    _mode = "LSTM"

    def forward(self, input, hx=None):
        if not self._native(input):
            return nn.LSTMCell.forward(self, input, hx)
        return self._cell_forward(input, hx, "LSTMCell")


class GRUCell(_FastCellMixin, nn.GRUCell):
    r"""Drop-in for :class:`torch.nn.GRUCell`."""

    _mode = "GRU"

    def forward(self, input, hx=None):
        if not self._native(input):
            return nn.GRUCell.forward(self, input, hx)
        return self._cell_forward(input, hx, "GRUCell")


class RNNCell(_FastCellMixin, nn.RNNCell):
    r"""Drop-in for :class:`torch.nn.RNNCell` (``nonlinearity='tanh'`` or ``'relu'``)."""

    @property
    def _mode(self):
        return "RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU"

    def forward(self, input, hx=None):
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        if not self._native(input):
            return nn.RNNCell.forward(self, input, hx)
        return self._cell_forward(input, hx, "RNNCell")


__all__ += ["LSTMCell", "GRUCell", "RNNCell", "convert"]

_TWINS = {
    nn.LSTM: LSTM,
    nn.GRU: GRU,
    nn.RNN: RNN,
    nn.LSTMCell: LSTMCell,
    nn.GRUCell: GRUCell,
    nn.RNNCell: RNNCell,
}


def _twin(module: nn.Module) -> nn.Module:
    cls = _TWINS.get(type(module))
    if cls is None:
        return module
    new = cls.__new__(cls)
    state = module.__dict__.copy()
    # Fresh containers, same Parameter/Buffer/Module objects: optimizers keep working.
    for key in ("_parameters", "_buffers", "_modules"):
        if key in state:
            state[key] = state[key].copy()
    if "_flat_weights" in state:
        state["_flat_weights"] = list(state["_flat_weights"])
    new.__dict__.update(state)
    return new


def convert(module: nn.Module) -> nn.Module:
    """Replaces every torch.nn.RNN/LSTM/GRU and cell inside ``module`` by its fastrnn twin,
    in place, keeping the very same Parameter objects and the training/eval mode.

    Returns the model (a new object only when ``module`` itself is a torch recurrent
    layer). Converting twice is harmless.
    """
    for name, child in list(module.named_children()):
        new = _twin(child)
        if new is not child:
            setattr(module, name, new)
        else:
            convert(child)
    return _twin(module)
