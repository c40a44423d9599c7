"""The three cells and fastrnn.convert()."""
import copy

import pytest
import torch

import fastrnn
from conftest import assert_close

CELLS = [
    (torch.nn.LSTMCell, fastrnn.LSTMCell, {}),
    (torch.nn.GRUCell, fastrnn.GRUCell, {}),
    (torch.nn.RNNCell, fastrnn.RNNCell, {}),
    (torch.nn.RNNCell, fastrnn.RNNCell, {"nonlinearity": "relu"}),
]


def _pair(tc, fc, kw, dtype, bias=True):
    ref = tc(3, 5, bias=bias, dtype=dtype, **kw)
    fast = fc(3, 5, bias=bias, dtype=dtype, **kw)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _flat(h):
    return list(h) if isinstance(h, tuple) else [h]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("tc,fc,kw", CELLS)
def test_cell_parity(tc, fc, kw, with_state, batched, bias, dtype):
    ref, fast = _pair(tc, fc, kw, dtype, bias)
    assert isinstance(fast, tc)
    x = torch.randn(*((4, 3) if batched else (3,)), dtype=dtype, requires_grad=True)
    hshape = (4, 5) if batched else (5,)
    leaves = [x]
    hx = None
    if with_state:
        h = torch.randn(*hshape, dtype=dtype, requires_grad=True)
        if tc is torch.nn.LSTMCell:
            c = torch.randn(*hshape, dtype=dtype, requires_grad=True)
            hx, leaves = (h, c), [x, h, c]
        else:
            hx, leaves = h, [x, h]
    out_r = _flat(ref(x, hx))
    out_f = _flat(fast(x, hx))
    for a, b in zip(out_f, out_r):
        assert a.shape == b.shape
        assert_close(a, b, dtype, "cell output")
    cot = [torch.randn_like(o) for o in out_r]
    g_r = torch.autograd.grad(out_r, leaves + list(ref.parameters()), cot)
    g_f = torch.autograd.grad(out_f, leaves + list(fast.parameters()), cot)
    for a, b in zip(g_f, g_r):
        assert_close(a, b, dtype, "cell grad")


@pytest.mark.parametrize("tc,fc,kw", CELLS)
def test_cell_errors_match_torch(tc, fc, kw):
    ref, fast = _pair(tc, fc, kw, torch.float32)
    lstm = tc is torch.nn.LSTMCell
    bad = [
        (torch.randn(2, 3, 1),),
        (torch.randn(2, 4),),
        (torch.randn(2, 3), (torch.randn(3, 5), torch.randn(3, 5)) if lstm else torch.randn(3, 5)),
        (torch.randn(2, 3), (torch.randn(2, 6), torch.randn(2, 6)) if lstm else torch.randn(2, 6)),
    ]
    for args in bad:
        with pytest.raises(Exception) as er:
            ref(*args)
        with pytest.raises(Exception) as ef:
            fast(*args)
        assert type(ef.value) is type(er.value)
        assert str(ef.value) == str(er.value)


def test_cell_gradcheck():
    for tc, fc, kw in CELLS:
        cell = fc(2, 3, dtype=torch.float64, **kw)
        names = [n for n, _ in cell.named_parameters()]
        params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
        x = torch.rand(2, 2, dtype=torch.float64, requires_grad=True)
        h = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
        c = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)

        def fn(x, h, c, *ps):
            hx = (h, c) if tc is torch.nn.LSTMCell else h
            return torch.func.functional_call(cell, dict(zip(names, ps)), (x, hx))

        if kw:  # relu: keep away from the kink
            with torch.no_grad():
                for p in params:
                    p.abs_()
        assert torch.autograd.gradcheck(fn, (x, h, c, *params), eps=1e-6, atol=1e-7)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = torch.nn.LSTM(3, 8, batch_first=True)
        self.blocks = torch.nn.Sequential(torch.nn.GRU(8, 8), torch.nn.RNN(8, 8, nonlinearity="relu"))
        self.cell = torch.nn.GRUCell(8, 8)
        self.head = torch.nn.Linear(8, 1)

    def forward(self, x):
        y, _ = self.enc(x)
        y = y.transpose(0, 1)
        y, _ = self.blocks[0](y)
        y, _ = self.blocks[1](y)
        h = self.cell(y[-1])
        return self.head(h)


def test_convert_replaces_in_place_and_keeps_parameters():
    torch.manual_seed(0)
    net = Net()
    ref = copy.deepcopy(net)
    params_before = {n: p for n, p in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.eval()
    out = fastrnn.convert(net)
    assert out is net
    assert type(net.enc) is fastrnn.LSTM and type(net.blocks[0]) is fastrnn.GRU
    assert type(net.blocks[1]) is fastrnn.RNN and net.blocks[1].nonlinearity == "relu"
    assert type(net.cell) is fastrnn.GRUCell and type(net.head) is torch.nn.Linear
    assert not net.training and not net.enc.training
    for n, p in net.named_parameters():
        assert p is params_before[n]
    x = torch.randn(4, 5, 3)
    assert_close(net(x), ref(x), torch.float32, "converted output")
    # An optimizer built before the call still updates the converted model's tensors.
    net.train()
    ref.train()
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1)
    for model, o in ((net, opt), (ref, opt_ref)):
        o.zero_grad()
        model(x).pow(2).mean().backward()
        o.step()
    for (n, a), (_, b) in zip(net.named_parameters(), ref.named_parameters()):
        assert_close(a, b, torch.float32, n)
    assert fastrnn.convert(net) is net  # twice: harmless
    assert type(net.enc) is fastrnn.LSTM


def test_convert_root_module_and_state_dict():
    lstm = torch.nn.LSTM(2, 3, num_layers=2)
    fast = fastrnn.convert(lstm)
    assert type(fast) is fastrnn.LSTM
    assert fast.weight_hh_l1 is lstm.weight_hh_l1
    assert fast.state_dict().keys() == lstm.state_dict().keys()
    back = torch.nn.LSTM(2, 3, num_layers=2)
    back.load_state_dict(fast.state_dict())
    assert repr(fast) == repr(lstm)
