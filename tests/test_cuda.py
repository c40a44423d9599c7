"""CUDA kernels against torch.nn (cuDNN) on the GPU. Skipped without a GPU, never faked.

compute-sanitizer (memcheck, racecheck) on a small run, on a GPU machine:
    compute-sanitizer --tool memcheck python -m pytest tests/test_cuda.py -k small -x
    compute-sanitizer --tool racecheck python -m pytest tests/test_cuda.py -k small -x
"""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import _backend
from conftest import MODES, TORCH_LAYER, make_pair

HAVE_GPU = torch.cuda.is_available() and _backend.CUDA_COMPILED
gpu = pytest.mark.skipif(not HAVE_GPU, reason="needs a CUDA GPU and a CUDA build of fastrnn")


def test_info_reports_cuda_build():
    info = fastrnn.info()
    assert info["cuda_compiled"] == _backend.CUDA_COMPILED
    assert info["cuda_devices"] >= 0  # no driver: 0, and no crash


def _flat(h):
    return list(h) if isinstance(h, tuple) else [h]


def _compare(mode, dtype, tol, packed=False, **kw):
    ref, fast = make_pair(mode, 5, 24, dtype=dtype, **kw)
    ref, fast = ref.cuda(), fast.cuda()
    x = torch.randn(7, 6, 5, dtype=dtype, device="cuda", requires_grad=True)
    inp = x
    if packed:
        inp = pack_padded_sequence(x, torch.tensor([7, 3, 5, 1, 7, 2]), enforce_sorted=False)
    out_r, h_r = ref(inp)
    out_f, h_f = fast(inp)
    if packed:
        out_r, out_f = out_r.data, out_f.data
    torch.testing.assert_close(out_f, out_r, **tol)
    for a, b in zip(_flat(h_f), _flat(h_r)):
        torch.testing.assert_close(a, b, **tol)
    g = torch.randn_like(out_r)
    gr = torch.autograd.grad(out_r, [x] + list(ref.parameters()), g, retain_graph=True)
    gf = torch.autograd.grad(out_f, [x] + list(fast.parameters()), g)
    for a, b in zip(gf, gr):
        torch.testing.assert_close(a, b, **tol)


@gpu
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("layers,bidir", [(1, False), (2, True)])
@pytest.mark.parametrize("mode", MODES)
def test_gpu_parity_float32(mode, layers, bidir, packed):
    _compare(mode, torch.float32, dict(atol=2e-5, rtol=1e-4), packed=packed, num_layers=layers, bidirectional=bidir)


@gpu
def test_gpu_parity_lstm_proj_float64():
    _compare("LSTM", torch.float64, dict(atol=1e-10, rtol=1e-10), proj_size=7, num_layers=2)


@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", MODES)
def test_gpu_half_error_within_twice_torch(mode, dtype):
    """fastrnn's error against a float64 reference is at most 2x torch's own in the same dtype."""
    ref64, _ = make_pair(mode, 8, 32, dtype=torch.float64)
    ref64 = ref64.cuda()
    lo = TORCH_LAYER[mode](8, 32, dtype=dtype, **({"nonlinearity": "relu"} if mode == "RNN_RELU" else {})).cuda()
    lo.load_state_dict(ref64.state_dict())
    fast = fastrnn.modules._TWINS[type(lo)](8, 32, dtype=dtype,
                                            **({"nonlinearity": "relu"} if mode == "RNN_RELU" else {})).cuda()
    fast.load_state_dict(ref64.state_dict())
    x = torch.randn(50, 16, 8, device="cuda", dtype=torch.float64)
    truth = ref64(x)[0]
    err_torch = (lo(x.to(dtype))[0].double() - truth).abs().max().item()
    err_fast = (fast(x.to(dtype))[0].double() - truth).abs().max().item()
    assert err_fast <= 2 * err_torch + 1e-6, (err_fast, err_torch)


@gpu
@pytest.mark.parametrize("mode", MODES)
def test_gpu_gradcheck_small(mode):
    torch.manual_seed(0)
    layer = fastrnn.modules._TWINS[type(make_pair(mode, 2, 3)[0])](
        2, 3, bidirectional=True, dtype=torch.float64, **({"nonlinearity": "relu"} if mode == "RNN_RELU" else {})
    ).cuda()
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.rand(3, 2, 2, dtype=torch.float64, device="cuda", requires_grad=True)

    def fn(x, *ps):
        out, h = torch.func.functional_call(layer, dict(zip(names, ps)), (x,))
        return (out, *_flat(h))

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-7)
