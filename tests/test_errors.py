"""Bad input: the same exception type and message as torch, never a crash."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import _backend
from conftest import MODES, make_pair


def _same_error(ref_call, fast_call):
    with pytest.raises(Exception) as er:
        ref_call()
    with pytest.raises(Exception) as ef:
        fast_call()
    assert type(ef.value) is type(er.value), (ef.value, er.value)
    assert str(ef.value) == str(er.value)


def _hx(mode, *shape_h, shape_c=None):
    h = torch.randn(*shape_h)
    if mode == "LSTM":
        return (h, torch.randn(*(shape_c or shape_h)))
    return h


@pytest.mark.parametrize("mode", MODES)
def test_errors_match_torch(mode):
    ref, fast = make_pair(mode, 3, 4, num_layers=2)
    cases = [
        (torch.randn(5, 2, 7), None),              # input_size mismatch
        (torch.randn(5, 2, 3, 1), None),           # 4-D input
        (torch.randn(5), None),                    # 1-D input
        (torch.randn(5, 2, 3).double(), None),     # dtype mismatch with the weights
        (torch.randn(5, 2, 3), _hx(mode, 1, 2, 4)),   # wrong layer count in hx
        (torch.randn(5, 2, 3), _hx(mode, 2, 3, 4)),   # wrong batch in hx
        (torch.randn(5, 2, 3), _hx(mode, 2, 2, 5)),   # wrong hidden size
        (torch.randn(5, 2, 3), _hx(mode, 2, 4)),      # 2-D hx for batched input
        (torch.randn(5, 3), _hx(mode, 2, 1, 4)),      # 3-D hx for unbatched input
        (torch.randn(0, 2, 3), None),              # zero-length sequence
    ]
    if mode == "LSTM":
        cases.append((torch.randn(5, 2, 3), (torch.randn(2, 2, 4), torch.randn(2, 2, 5))))  # wrong cell size
    for x, hx in cases:
        args = (x,) if hx is None else (x, hx)
        _same_error(lambda: ref(*args), lambda: fast(*args))


def test_constructor_errors_match_torch():
    for kw in [dict(dropout=1.5), dict(proj_size=-1), dict(proj_size=4), dict(hidden_size=0)]:
        args = dict(input_size=3, hidden_size=4)
        args.update(kw)
        _same_error(lambda: torch.nn.LSTM(**args), lambda: fastrnn.LSTM(**args))
    _same_error(lambda: torch.nn.GRU(3, 4, proj_size=2), lambda: fastrnn.GRU(3, 4, proj_size=2))
    _same_error(lambda: torch.nn.RNN(3, 4, nonlinearity="sigmoid"), lambda: fastrnn.RNN(3, 4, nonlinearity="sigmoid"))


def test_empty_batch_like_torch():
    for mode in MODES:
        ref, fast = make_pair(mode, 3, 4, bidirectional=True)
        x = torch.randn(5, 0, 3)
        out_r, _ = ref(x)
        out_f, h_f = fast(x)
        assert out_f.shape == out_r.shape == (5, 0, 8)


def test_nan_propagates_like_torch():
    for mode in MODES:
        ref, fast = make_pair(mode, 3, 4)
        x = torch.randn(4, 2, 3)
        x[1, 0, 0] = float("nan")
        out_r, _ = ref(x)
        out_f, _ = fast(x)
        assert torch.equal(torch.isnan(out_f), torch.isnan(out_r)), mode
        assert torch.isnan(out_f[1:, 0]).all() and not torch.isnan(out_f[:, 1]).any()


def test_inf_input_like_torch():
    ref, fast = make_pair("LSTM", 3, 4)
    x = torch.randn(4, 2, 3)
    x[0, 1, 2] = float("inf")
    out_r, _ = ref(x)
    out_f, _ = fast(x)
    torch.testing.assert_close(out_f, out_r, equal_nan=True, atol=2e-5, rtol=1e-4)


def test_core_rechecks_and_throws():
    """The C++ core refuses what Python would never send: ValueError, no crash."""
    x = torch.zeros(2, 1, 4)
    w = torch.zeros(4, 1)
    h = torch.zeros(1, 1)
    c = torch.zeros(1, 1)
    with pytest.raises(ValueError):
        _backend.forward("LSTM", x, w, None, None, h, c, torch.tensor([3]), False, False)  # length > T
    with pytest.raises(ValueError):
        _backend.forward("LSTM", x, w, None, None, h, c, None, False, False, hT=torch.zeros(2, 1))  # bad hT
    with pytest.raises(ValueError):
        _backend.forward("LSTM", x.double(), w, None, None, h, c, None, False, False)  # mixed dtypes
    with pytest.raises(ValueError):
        _backend.forward("LSTM", x, w[:, :0], None, None, h, c, None, False, False)  # wrong w_hh shape
    C = _backend._C
    with pytest.raises(ValueError):  # workspace too small, straight to the core
        C.forward(0, 0, 2, 1, 1, 1, False, x.data_ptr(), w.data_ptr(), 0, 0, h.data_ptr(), c.data_ptr(), 0,
                  x.data_ptr(), h.data_ptr(), c.data_ptr(), 0, 0, 0, h.data_ptr(), 1, 1)
    with pytest.raises(ValueError):  # null arrays
        C.forward(0, 0, 2, 1, 1, 1, False, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1000, 1)
    with pytest.raises(ValueError):  # bad dtype / cell codes
        C.forward_workspace(7, 0, 1, 1, 1)
    with pytest.raises(ValueError):
        C.forward_workspace(0, 9, 1, 1, 1)
    with pytest.raises(ValueError):  # negative sizes
        C.forward(0, 0, -1, 1, 1, 1, False, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 1000, 1)


def test_packed_with_bad_hidden_raises():
    ref, fast = make_pair("GRU", 3, 4)
    p = pack_padded_sequence(torch.randn(4, 3, 3), torch.tensor([4, 2, 1]))
    with pytest.raises(RuntimeError):
        fast(p, torch.randn(1, 2, 4))


def test_fallback_for_unsupported_dtype_warns_once():
    import fastrnn.modules as M

    M._warned.clear()
    ref, fast = make_pair("LSTM", 3, 4)
    ref, fast = ref.to(torch.bfloat16), fast.to(torch.bfloat16)
    x = torch.randn(5, 2, 3, dtype=torch.bfloat16)
    with pytest.warns(RuntimeWarning, match="falling back"):
        out_f, _ = fast(x)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast(x)  # second call: no warning
    out_r, _ = ref(x)
    assert torch.equal(out_f, out_r)


@pytest.mark.parametrize("kw", [dict(hidden_size=-1), dict(hidden_size=2.5), dict(hidden_size=float("nan")),
                                dict(num_layers=0), dict(num_layers=1.5), dict(input_size=-3)])
def test_bad_sizes_match_torch(kw):
    args = dict(input_size=3, hidden_size=4)
    args.update(kw)
    for name in ("LSTM", "GRU", "RNN"):
        _same_error(lambda: getattr(torch.nn, name)(**args), lambda: getattr(fastrnn, name)(**args))


def test_packed_lengths_out_of_range_rejected():
    from fastrnn import functional as FF

    x = torch.randn(4, 2, 3)
    for bad in ([5, 2], [-1, 2]):  # the core refuses lengths outside [0, T]
        with pytest.raises(ValueError):
            FF.rnn("GRU", x, None, None, list(fastrnn.GRU(3, 4)._flat_weights), True, 1, 0.0, False, False, 0,
                   torch.tensor(bad))


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_inconsistent_packed_sequence_refused(mode, grad):
    """A hand-made PackedSequence whose batch_sizes do not fit its data raises (inference reads
    and writes its rows in place: never past them); one that fits runs."""
    from torch.nn.utils.rnn import PackedSequence

    _, fast = make_pair(mode, 3, 4, bidirectional=True)
    for data, bs in ((torch.randn(4, 3), [3, 2]), (torch.randn(9, 3), [3, 2]), (torch.randn(5, 3), [2, 3])):
        with torch.set_grad_enabled(grad), pytest.raises((RuntimeError, ValueError, IndexError)):
            fast(PackedSequence(data, torch.tensor(bs)))
    with torch.set_grad_enabled(grad):
        out, _ = fast(PackedSequence(torch.randn(5, 3), torch.tensor([3, 2])))
    assert out.data.shape == (5, 8)


def test_packed_steps_checked_against_rows():
    from fastrnn import functional as FF

    T, B, steps, lengths = _backend.packed_steps(torch.tensor([3, 2]))
    w = list(fastrnn.LSTM(3, 4)._flat_weights)
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="add up to 5 rows"):
            FF.rnn("LSTM", torch.randn(4, 3), None, None, w, True, 1, 0.0, False, False, 0, lengths,
                   packed=(T, B, steps))
        with pytest.raises(ValueError):
            FF.rnn("LSTM", torch.randn(5, 3), None, None, w, True, 1, 0.0, False, False, 0, lengths,
                   packed=(T, B, steps.to(torch.int32)))
        out = FF.rnn("LSTM", torch.randn(5, 3), None, None, w, True, 1, 0.0, False, False, 0, lengths,
                     packed=(T, B, steps))
    assert out[0].shape == (5, 4)


def test_state_on_wrong_dtype_or_layout():
    ref, fast = make_pair("GRU", 3, 4)
    x = torch.randn(5, 2, 3)
    with pytest.raises(RuntimeError):
        fast(x, torch.randn(1, 2, 4, dtype=torch.float64))
    h = torch.randn(2, 1, 4).transpose(0, 1)  # non-contiguous state is fine
    torch.testing.assert_close(fast(x, h)[0], ref(x, h)[0], atol=2e-5, rtol=1e-4)


def test_very_long_sequence_linear_memory():
    """T = 100,000: no recursion, memory linear in T, forward and backward."""
    layer = fastrnn.LSTM(2, 4)
    x = torch.randn(100_000, 1, 2, requires_grad=True)
    out, (h, c) = layer(x)
    assert out.shape == (100_000, 1, 4) and torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad.shape == x.shape and torch.isfinite(x.grad).all()
    ref = torch.nn.LSTM(2, 4)
    ref.load_state_dict(layer.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(layer(x[:2000])[0], ref(x[:2000])[0], atol=2e-5, rtol=1e-4)


def test_functional_api_validates_everything_it_passes_on():
    from fastrnn import functional as FF

    layer = fastrnn.LSTM(3, 4, num_layers=2)
    w = list(layer._flat_weights)
    x = torch.randn(5, 2, 3)
    ok = FF.rnn("LSTM", x, None, None, w, True, 2, 0.0, False, False)
    assert ok[0].shape == (5, 2, 4)
    bad_calls = [
        lambda: FF.rnn("LSTM", x, torch.zeros(2, 2, 1), None, w, True, 2, 0.0, False, False),   # hx too small
        lambda: FF.rnn("LSTM", x, None, torch.zeros(1, 2, 4), w, True, 2, 0.0, False, False),   # cx layers
        lambda: FF.rnn("LSTM", x, None, None, w[:-1], True, 2, 0.0, False, False),              # weight count
        lambda: FF.rnn("LSTM", x, None, None, [w[0], w[1][:8]] + w[2:], True, 2, 0.0, False, False),
        lambda: FF.rnn("LSTM", x.double(), None, None, w, True, 2, 0.0, False, False),          # dtype
        lambda: FF.rnn("LSTM", x[0], None, None, w, True, 2, 0.0, False, False),                # 2-D input
        lambda: FF.rnn("GRU", x, None, None, w, True, 2, 0.0, False, False),                    # wrong family
        lambda: FF.lstm(x, (torch.zeros(2, 2, 4), torch.zeros(2, 2, 9)), w, num_layers=2),
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            call()


@pytest.mark.parametrize("grad", [True, False])
def test_wrong_shaped_parameter_is_refused_not_read(grad):
    for cls in (fastrnn.LSTM, fastrnn.GRU, fastrnn.RNN):
        for shape in ((2, 2), (cls(3, 4).weight_hh_l0.shape[0], 2)):  # (G*H, 2): right rows, wrong width
            layer = cls(3, 4)
            with torch.no_grad():
                layer.weight_hh_l0 = torch.nn.Parameter(torch.randn(*shape))
            with torch.set_grad_enabled(grad), pytest.raises(ValueError, match="weight"):
                layer(torch.randn(5, 2, 3))
    cell = fastrnn.GRUCell(3, 4)
    cell.weight_hh = torch.nn.Parameter(torch.randn(2, 2))
    with pytest.raises(RuntimeError):
        cell(torch.randn(2, 3))
