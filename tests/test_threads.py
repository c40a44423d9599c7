"""Determinism at a fixed thread count, agreement across thread counts, concurrent callers."""
import threading

import pytest
import torch

from conftest import MODES, assert_close, make_pair


def _fwd_bwd(layer, x):
    out, h = layer(x)
    g = torch.autograd.grad(out.sum(), [x] + list(layer.parameters()))
    return [out.detach()] + [t.detach() for t in g]


@pytest.mark.parametrize("mode", MODES)
def test_bitwise_deterministic_and_thread_count_independent(mode):
    _, fast = make_pair(mode, 16, 96)
    x = torch.randn(8, 48, 16, requires_grad=True)  # big enough for the threaded path
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = _fwd_bwd(fast, x)
        b = _fwd_bwd(fast, x)
        for u, v in zip(a, b):
            assert torch.equal(u, v)
        torch.set_num_threads(1)
        c = _fwd_bwd(fast, x)
    finally:
        torch.set_num_threads(old)
    for u, v in zip(a, c):
        assert_close(u, v, torch.float32, "threads 2 vs 1")


def test_concurrent_python_threads_on_different_modules():
    pairs = [make_pair(m, 6, 32, num_layers=2, seed=i) for i, m in enumerate(MODES)]
    xs = [torch.randn(20, 8, 6) for _ in pairs]
    expected = [ref(x)[0].detach() for (ref, _), x in zip(pairs, xs)]
    errors = []

    def work(i):
        try:
            for _ in range(20):
                out = pairs[i][1](xs[i])[0]
                out.sum().backward()
                torch.testing.assert_close(out.detach(), expected[i], atol=2e-5, rtol=1e-4)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(pairs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("proj", [0, 24])
def test_single_step_threads_pack_their_panels(mode, proj):
    """T=1 calls with large weights run on 2 threads (threads_for counts the packing), each
    thread packing only its own panels: every output and gradient must still match torch."""
    if proj and mode != "LSTM":
        pytest.skip("proj_size is LSTM's")
    kw = {"proj_size": proj} if proj else {}
    ref, fast = make_pair(mode, 200, 160, **kw)
    x = torch.randn(1, 2, 200, requires_grad=True)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.no_grad():
            y_inf = fast(x)[0]
        got = _fwd_bwd(fast, x)
    finally:
        torch.set_num_threads(old)
    want = _fwd_bwd(ref, x)
    assert_close(y_inf, want[0], torch.float32, "inference output")
    for i, (u, v) in enumerate(zip(got, want)):
        assert_close(u, v, torch.float32, f"tensor {i}")
