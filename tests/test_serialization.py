"""state_dict round trips, torch.save/load of whole modules, deepcopy, dtype conversions."""
import copy
import io
import warnings

import pytest
import torch

import fastrnn
from conftest import MODES, TORCH_LAYER, assert_close, make_pair


@pytest.mark.parametrize("mode", MODES)
def test_state_dict_round_trip_with_torch(mode):
    ref, fast = make_pair(mode, 3, 5, num_layers=2, bidirectional=True)
    back = TORCH_LAYER[mode](3, 5, num_layers=2, bidirectional=True,
                             **({"nonlinearity": "relu"} if mode == "RNN_RELU" else {}))
    back.load_state_dict(fast.state_dict())
    for (n, a), (_, b) in zip(back.named_parameters(), ref.named_parameters()):
        assert torch.equal(a, b), n
    assert list(fast.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize("mode", MODES)
def test_save_load_whole_module_and_deepcopy(mode, tmp_path):
    ref, fast = make_pair(mode, 3, 5, num_layers=2)
    x = torch.randn(4, 2, 3)
    expect = fast(x)[0]
    path = tmp_path / "m.pt"
    torch.save(fast, path)
    loaded = torch.load(path, weights_only=False)
    assert type(loaded) is type(fast)
    assert torch.equal(loaded(x)[0], expect)
    buf = io.BytesIO()
    torch.save(fast.state_dict(), buf)
    buf.seek(0)
    fresh = type(fast)(3, 5, num_layers=2, **({"nonlinearity": "relu"} if mode == "RNN_RELU" else {}))
    fresh.load_state_dict(torch.load(buf))
    assert torch.equal(fresh(x)[0], expect)
    dup = copy.deepcopy(fast)
    assert torch.equal(dup(x)[0], expect)
    assert dup.weight_hh_l0 is not fast.weight_hh_l0


def test_to_double_and_back():
    ref, fast = make_pair("LSTM", 3, 5)
    fast64 = copy.deepcopy(fast).double()
    ref64 = copy.deepcopy(ref).double()
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    assert_close(fast64(x)[0], ref64(x)[0], torch.float64)
    fast32 = fast64.to(torch.float32)
    assert fast32.weight_ih_l0.dtype == torch.float32
    assert_close(fast32(x.float())[0], ref(x.float())[0], torch.float32)


@pytest.mark.parametrize("mode", MODES)
def test_half_falls_back_with_a_warning(mode):
    import fastrnn.modules as M

    M._warned.clear()
    ref, fast = make_pair(mode, 3, 5)
    fast_h, ref_h = copy.deepcopy(fast).half(), copy.deepcopy(ref).half()
    x = torch.randn(4, 2, 3).half()
    with pytest.warns(RuntimeWarning, match="float32 and float64"):
        out = fast_h(x)[0]
    assert out.dtype == torch.float16
    assert torch.equal(out, ref_h(x)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast_h(x)


def test_cells_round_trip(tmp_path):
    cell = fastrnn.LSTMCell(3, 4)
    torch.save(cell, tmp_path / "c.pt")
    back = torch.load(tmp_path / "c.pt", weights_only=False)
    x = torch.randn(2, 3)
    assert torch.equal(back(x)[0], cell(x)[0])
    tc = torch.nn.LSTMCell(3, 4)
    tc.load_state_dict(cell.state_dict())
    assert_close(tc(x)[0], cell(x)[0], torch.float32)
