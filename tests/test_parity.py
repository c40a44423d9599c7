"""Outputs, final states and every gradient of fastrnn's layers against torch.nn."""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from conftest import MODES, assert_close, make_pair

DTYPES = [torch.float32, torch.float64]


def _states(mode, L, B, R, H, dtype, batched=True):
    shape_h = (L, B, R) if batched else (L, R)
    shape_c = (L, B, H) if batched else (L, H)
    h0 = torch.randn(*shape_h, dtype=dtype, requires_grad=True)
    if mode == "LSTM":
        c0 = torch.randn(*shape_c, dtype=dtype, requires_grad=True)
        return (h0, c0), [h0, c0]
    return h0, [h0]


def _flat(h):
    return list(h) if isinstance(h, tuple) else [h]


def run_and_compare(ref, fast, x, hx, leaves, dtype, packed=False):
    """Forward both layers, backprop the same random cotangents, compare everything."""
    out_r, h_r = ref(x, hx) if hx is not None else ref(x)
    out_f, h_f = fast(x, hx) if hx is not None else fast(x)
    if packed:
        assert torch.equal(out_r.batch_sizes, out_f.batch_sizes)
        assert (out_r.sorted_indices is None) == (out_f.sorted_indices is None)
        out_r, out_f = out_r.data, out_f.data
    assert out_f.shape == out_r.shape and out_f.dtype == out_r.dtype
    assert_close(out_f, out_r, dtype, "output")
    for a, b in zip(_flat(h_f), _flat(h_r)):
        assert a.shape == b.shape
        assert_close(a, b, dtype, "final state")
    cot = [torch.randn_like(out_r)] + [torch.randn_like(h) for h in _flat(h_r)]
    params_r, params_f = list(ref.parameters()), list(fast.parameters())
    g_r = torch.autograd.grad([out_r] + _flat(h_r), leaves + params_r, cot, retain_graph=True)
    g_f = torch.autograd.grad([out_f] + _flat(h_f), leaves + params_f, cot)
    names = [f"leaf{i}" for i in range(len(leaves))] + [n for n, _ in ref.named_parameters()]
    for name, a, b in zip(names, g_f, g_r):
        assert_close(a, b, dtype, f"grad {name}")


GRID = list(itertools.product(
    [1, 2, 3],          # num_layers
    [False, True],      # bidirectional
    [False, True],      # batch_first
    [True, False],      # bias
))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layers,bidir,batch_first,bias", GRID)
@pytest.mark.parametrize("mode", MODES)
def test_grid(mode, layers, bidir, batch_first, bias, dtype, projection_path):
    T, B, I, H = 5, 3, 4, 6
    ref, fast = make_pair(mode, I, H, num_layers=layers, bidirectional=bidir, batch_first=batch_first,
                          bias=bias, dtype=dtype)
    x = torch.randn(*((B, T, I) if batch_first else (T, B, I)), dtype=dtype, requires_grad=True)
    D = 2 if bidir else 1
    hx, leaves = _states(mode, layers * D, B, H, H, dtype)
    run_and_compare(ref, fast, x, hx, [x] + leaves, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layers,bidir", [(1, False), (2, True), (3, False)])
@pytest.mark.parametrize("proj", [1, 3])
def test_lstm_proj(proj, layers, bidir, dtype, projection_path):
    T, B, I, H = 6, 4, 5, 7
    ref, fast = make_pair("LSTM", I, H, num_layers=layers, bidirectional=bidir, proj_size=proj, dtype=dtype)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    D = 2 if bidir else 1
    hx, leaves = _states("LSTM", layers * D, B, proj, H, dtype)
    run_and_compare(ref, fast, x, hx, [x] + leaves, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("mode", MODES)
def test_no_initial_state(mode, dtype):
    ref, fast = make_pair(mode, 3, 5, num_layers=2, bidirectional=True, dtype=dtype)
    x = torch.randn(4, 2, 3, dtype=dtype, requires_grad=True)
    run_and_compare(ref, fast, x, None, [x], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_unbatched(mode, batch_first, dtype):
    ref, fast = make_pair(mode, 3, 5, num_layers=2, bidirectional=True, batch_first=batch_first, dtype=dtype)
    x = torch.randn(6, 3, dtype=dtype, requires_grad=True)
    hx, leaves = _states(mode, 4, None, 5, 5, dtype, batched=False)
    run_and_compare(ref, fast, x, hx, [x] + leaves, dtype)
    x2 = torch.randn(6, 3, dtype=dtype, requires_grad=True)
    run_and_compare(ref, fast, x2, None, [x2], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(1, 4, 3, 5), (7, 1, 3, 5), (6, 3, 2, 1), (1, 1, 1, 1)], ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_edge_sizes(mode, shape, dtype, projection_path):
    T, B, I, H = shape
    ref, fast = make_pair(mode, I, H, num_layers=2, bidirectional=True, dtype=dtype)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    hx, leaves = _states(mode, 4, B, H, H, dtype)
    run_and_compare(ref, fast, x, hx, [x] + leaves, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mode", MODES + ["LSTM_PROJ"])
def test_step_projection(mode, batch_first, dtype, monkeypatch):
    """Batches of 8 or more with inputs wider than 4: LSTM and RNN sum x W_ih^T into each step's
    GEMM (two K chunks of input here, partial vectors of hidden units). Inference takes that
    path at any size (here forced by a zero fusion threshold), training up to the threshold;
    plain, batch-first and packed input against torch."""
    import fastrnn.functional as F
    from fastrnn import _backend

    kw, R = {}, 36
    if mode == "LSTM_PROJ":
        mode, kw, R = "LSTM", dict(proj_size=7), 7
    T, B, I, H = 5, 9, 70, 36
    w_hh = torch.zeros(_backend.GATES[mode] * H, R, dtype=dtype)
    assert F._step_projects(mode, B, I, w_hh) == (mode != "GRU")
    ref, fast = make_pair(mode, I, H, num_layers=2, bidirectional=True, batch_first=batch_first, dtype=dtype, **kw)
    x = torch.randn(B, T, I, dtype=dtype) if batch_first else torch.randn(T, B, I, dtype=dtype)
    hx, _ = _states(mode, 4, B, R, H, dtype)
    hx = tuple(h.detach() for h in hx) if isinstance(hx, tuple) else hx.detach()
    lengths = torch.tensor([5, 5, 4, 4, 3, 2, 2, 1, 1])
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first)
    small = F.FUSE_MAX_MACS
    monkeypatch.setattr(F, "FUSE_MAX_MACS", 0)
    with torch.no_grad():
        for inp in (x, packed):
            (out_r, h_r), (out_f, h_f) = ref(inp, hx), fast(inp, hx)
            if inp is packed:
                out_r, out_f = out_r.data, out_f.data
            assert_close(out_f, out_r, dtype, "output")
            for a, b in zip(_flat(h_f), _flat(h_r)):
                assert_close(a, b, dtype, "final state")
    for threshold in (0, small):  # weight gradients by torch's GEMMs, by the core
        monkeypatch.setattr(F, "FUSE_MAX_MACS", threshold)
        xg = x.clone().requires_grad_(True)
        hx, leaves = _states(mode, 4, B, R, H, dtype)
        run_and_compare(ref, fast, xg, hx, [xg] + leaves, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("bidir", [False, True])
@pytest.mark.parametrize("mode", MODES + ["LSTM_PROJ"])
def test_packed(mode, bidir, enforce_sorted, dtype, projection_path):
    kw = {}
    R = H = 6
    if mode == "LSTM_PROJ":
        mode, kw, R = "LSTM", dict(proj_size=3), 3
    T, B, I = 7, 5, 4
    ref, fast = make_pair(mode, I, H, num_layers=2, bidirectional=bidir, dtype=dtype, **kw)
    lengths = torch.tensor([7, 5, 5, 2, 1])
    if not enforce_sorted:
        lengths = lengths[torch.tensor([3, 0, 4, 2, 1])]
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    D = 2 if bidir else 1
    hx, leaves = _states(mode, 2 * D, B, R, H, dtype)
    run_and_compare(ref, fast, packed, hx, [x] + leaves, dtype, packed=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("I", [4, 12])
@pytest.mark.parametrize("layers,bidir,state", [(1, False, False), (2, True, True)])
@pytest.mark.parametrize("mode", MODES + ["LSTM_PROJ"])
def test_packed_inference(mode, layers, bidir, state, I, dtype, projection_path, monkeypatch):
    """Inference on a PackedSequence: the native loops read and write its rows in place
    (ForwardArgs::steps), with the inline, step-fused and up-front input projections and torch's
    addmm before the loop (projection_path): torch's numbers, and the padded path's."""
    import fastrnn.modules

    kw = {}
    R = H = 6
    if mode == "LSTM_PROJ":
        mode, kw, R = "LSTM", dict(proj_size=3), 3
    T, B = 7, 9
    ref, fast = make_pair(mode, I, H, num_layers=layers, bidirectional=bidir, dtype=dtype, **kw)
    lengths = torch.tensor([3, 7, 1, 5, 5, 2, 7, 1, 4])
    packed = pack_padded_sequence(torch.randn(T, B, I, dtype=dtype), lengths, enforce_sorted=False)
    hx = None
    if state:
        hx, _ = _states(mode, layers * (2 if bidir else 1), B, R, H, dtype)
        hx = tuple(h.detach() for h in hx) if mode == "LSTM" else hx.detach()
    with torch.no_grad():
        out_r, h_r = ref(packed, hx)
        out_f, h_f = fast(packed, hx)
        monkeypatch.setattr(fastrnn.modules, "_PACKED_ROWS", False)
        out_p, h_p = fast(packed, hx)
    assert torch.equal(out_f.batch_sizes, out_r.batch_sizes)
    assert torch.equal(out_f.unsorted_indices, out_r.unsorted_indices)
    assert out_f.data.shape == out_r.data.shape
    assert_close(out_f.data, out_r.data, dtype, "output")
    assert_close(out_f.data, out_p.data, dtype, "output (padded path)")
    for a, b, c in zip(_flat(h_f), _flat(h_r), _flat(h_p)):
        assert a.shape == b.shape
        assert_close(a, b, dtype, "final state")
        assert_close(a, c, dtype, "final state (padded path)")


@pytest.mark.parametrize("mode", MODES)
def test_packed_roundtrip_padded_output(mode):
    """Padded output of a packed run: zeros past each length, like torch."""
    ref, fast = make_pair(mode, 3, 4, bidirectional=True)
    x = torch.randn(5, 3, 3)
    lengths = torch.tensor([2, 5, 3])
    p = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_f, _ = pad_packed_sequence(fast(p)[0])
    out_r, _ = pad_packed_sequence(ref(p)[0])
    assert_close(out_f, out_r, torch.float32, "padded")
    assert torch.all(out_f[3:, 0] == 0)


@pytest.mark.parametrize("mode", MODES)
def test_backward_in_eval_mode(mode):
    ref, fast = make_pair(mode, 3, 4, num_layers=2, dropout=0.3)
    ref.eval()
    fast.eval()
    x = torch.randn(5, 2, 3, requires_grad=True)
    run_and_compare(ref, fast, x, None, [x], torch.float32)


@pytest.mark.parametrize("mode", MODES)
def test_inference_no_grad(mode):
    ref, fast = make_pair(mode, 3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        out_r, h_r = ref(x)
        out_f, h_f = fast(x)
    assert not out_f.requires_grad
    assert_close(out_f, out_r, torch.float32, "output")
    with torch.inference_mode():
        out_i, _ = fast(x)
    assert_close(out_i, out_r, torch.float32, "inference_mode output")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("batch_first,bias,state", [(False, True, None), (True, True, "given"),
                                                    (False, False, "given"), (False, True, "strided")])
@pytest.mark.parametrize("mode", MODES)
def test_inference_single_layer(mode, batch_first, bias, state, dtype, monkeypatch):
    """A single unidirectional layer in inference takes the modules' short path to the kernel
    (fastrnn.functional.single_layer): the same numbers as torch, and as the general path."""
    import fastrnn.modules

    ref, fast = make_pair(mode, 3, 10, batch_first=batch_first, bias=bias, dtype=dtype)
    x = torch.randn(2, 7, 3, dtype=dtype) if batch_first else torch.randn(7, 2, 3, dtype=dtype)
    hx = None
    if state is not None:
        hx, _ = _states(mode, 1, 2, 10, 10, dtype)
        hx = tuple(h.detach() for h in hx) if mode == "LSTM" else hx.detach()
        if state == "strided":  # not contiguous: the general path takes it
            hx = tuple(h.transpose(0, 1).contiguous().transpose(0, 1) for h in hx) if mode == "LSTM" \
                else hx.transpose(0, 1).contiguous().transpose(0, 1)
    with torch.no_grad():
        out_r, h_r = ref(x, hx)
        out_f, h_f = fast(x, hx)
        monkeypatch.setattr(fastrnn.modules, "_FAST_LAYER", False)
        out_g, h_g = fast(x, hx)
    assert out_f.shape == out_r.shape and not out_f.requires_grad
    assert_close(out_f, out_r, dtype, "output")
    assert torch.equal(out_f, out_g)
    for a, b, c in zip(_flat(h_f), _flat(h_r), _flat(h_g)):
        assert a.shape == b.shape
        assert_close(a, b, dtype, "final state")
        assert torch.equal(a, c)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("batch_first,bias,state,x_grad", [(False, True, None, False), (True, True, "given", True),
                                                           (False, False, "given", False), (False, True, "frozen", True)])
@pytest.mark.parametrize("mode", MODES)
def test_training_single_layer(mode, batch_first, bias, state, x_grad, dtype, monkeypatch):
    """Training through a single unidirectional layer takes the same short path (the same
    autograd Function as the general path, called directly): torch's outputs and gradients,
    and bit for bit those of the general path. "frozen": no parameter requires grad, only x."""
    import fastrnn.modules

    ref, fast = make_pair(mode, 3, 10, batch_first=batch_first, bias=bias, dtype=dtype)
    if state == "frozen":
        for layer in (ref, fast):
            layer.requires_grad_(False)
    x = torch.randn(2, 7, 3, dtype=dtype) if batch_first else torch.randn(7, 2, 3, dtype=dtype)
    x.requires_grad_(x_grad)
    hx = _states(mode, 1, 2, 10, 10, dtype)[0] if state == "given" else None
    outs = []
    for layer, fast_path in ((ref, True), (fast, True), (fast, False)):
        monkeypatch.setattr(fastrnn.modules, "_FAST_LAYER", fast_path)
        layer.zero_grad(set_to_none=True)
        leaves = [p for p in layer.parameters() if p.requires_grad] + ([x] if x_grad else []) + \
            (_flat(hx) if hx is not None else [])
        out, h = layer(x, hx)
        torch.manual_seed(7)
        loss = (out * torch.randn_like(out)).sum() + sum((t * torch.randn_like(t)).sum() for t in _flat(h))
        grads = torch.autograd.grad(loss, leaves) if leaves else ()
        outs.append((out, _flat(h), grads))
    (out_r, h_r, g_r), (out_f, h_f, g_f), (out_g, h_g, g_g) = outs
    assert_close(out_f, out_r, dtype, "output")
    assert torch.equal(out_f, out_g)
    for a, b, c in zip(h_f, h_r, h_g):
        assert a.shape == b.shape
        assert_close(a, b, dtype, "final state")
        assert torch.equal(a, c)
    assert len(g_f) == len(g_r) == len(g_g)
    for a, b, c in zip(g_f, g_r, g_g):
        assert_close(a, b, dtype, "gradient")
        assert torch.equal(a, c)


def test_inference_single_layer_falls_back():
    """Weights the short path does not take (not contiguous) run the general path."""
    ref, fast = make_pair("LSTM", 3, 10)
    with torch.no_grad():
        fast.weight_hh_l0.set_(fast.weight_hh_l0.t().contiguous().t())
        ref.weight_hh_l0.copy_(fast.weight_hh_l0)
    assert not fast.weight_hh_l0.is_contiguous()
    x = torch.randn(7, 2, 3)
    with torch.no_grad():
        out_r, (h_r, c_r) = ref(x)
        out_f, (h_f, c_f) = fast(x)
    assert_close(out_f, out_r, torch.float32, "output")
    assert_close(c_f, c_r, torch.float32, "cell state")


@pytest.mark.parametrize("mode", MODES)
def test_dropout_between_layers(mode):
    """Training-mode dropout: zeroes a fraction of layer outputs, is scaled, and depends on the seed."""
    _, fast = make_pair(mode, 3, 64, num_layers=2, dropout=0.5)
    fast.train()
    x = torch.randn(4, 8, 3)
    torch.manual_seed(0)
    a, _ = fast(x)
    torch.manual_seed(0)
    b, _ = fast(x)
    torch.manual_seed(1)
    c, _ = fast(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    fast.eval()
    d, _ = fast(x)
    e, _ = fast(x)
    assert torch.equal(d, e)
    # With p=1 the second layer sees only zeros: its output is that of a zero input.
    _, f1 = make_pair(mode, 3, 5, num_layers=2, dropout=1.0)
    f1.train()
    out, _ = f1(x)
    ref_single = f1.__class__(5, 5, **({"nonlinearity": "relu"} if mode == "RNN_RELU" else {}))
    ref_single.weight_ih_l0.data.copy_(f1.weight_ih_l1)
    ref_single.weight_hh_l0.data.copy_(f1.weight_hh_l1)
    ref_single.bias_ih_l0.data.copy_(f1.bias_ih_l1)
    ref_single.bias_hh_l0.data.copy_(f1.bias_hh_l1)
    expect, _ = ref_single(torch.zeros(4, 8, 5))
    assert_close(out, expect, torch.float32, "p=1 dropout")


def test_noncontiguous_input():
    ref, fast = make_pair("LSTM", 4, 5)
    x = torch.randn(3, 6, 8)[:, ::2, ::2].detach().requires_grad_()
    assert not x.is_contiguous()
    run_and_compare(ref, fast, x, None, [x], torch.float32)


def test_larger_shape_threads():
    """A shape large enough for the threaded kernel path."""
    for mode in MODES:
        ref, fast = make_pair(mode, 16, 96, num_layers=1)
        x = torch.randn(6, 48, 16, requires_grad=True)
        run_and_compare(ref, fast, x, None, [x], torch.float32)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidir", [False, True])
def test_expanded_output_gradient(mode, bidir, projection_path):
    """out.sum() hands backward a stride-0 gradient: fastrnn copies it, and for RNN computes
    the input gradients in place over that copy. Same gradients as torch."""
    torch.manual_seed(3)
    ref, fast = make_pair(mode, 5, 7, num_layers=2, bidirectional=bidir)
    x = torch.randn(9, 4, 5, requires_grad=True)
    xf = x.detach().clone().requires_grad_(True)
    for layer, inp in ((ref, x), (fast, xf)):
        out, h = layer(inp)
        (out.sum() + (h[0] if isinstance(h, tuple) else h).sum()).backward()
    assert_close(xf.grad, x.grad, torch.float32, "input grad")
    for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
        assert_close(q.grad, p.grad, torch.float32, name)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("use", ["out", "h", "c", "transposed", "batch_first"])
def test_incoming_gradient_layouts(mode, use, projection_path):
    """The gradients torch hands to backward as they come: None for an unused output, stride 0
    from a sum, permuted strides from a transpose or batch_first. Small layers (one native
    backward call, weight gradients included) and a large one (input projection by torch),
    against torch."""
    for T, B, I, H in ((6, 3, 2, 5), (7, 4, 40, 24), (7, 4, 300, 40)):
        torch.manual_seed(5)
        bf = use == "batch_first"
        ref, fast = make_pair(mode, I, H, batch_first=bf)
        x = torch.randn(B, T, I) if bf else torch.randn(T, B, I)
        x.requires_grad_(True)
        xf = x.detach().clone().requires_grad_(True)
        w = torch.randn(T, H, B)
        for layer, inp in ((ref, x), (fast, xf)):
            out, h = layer(inp)
            hn, cn = h if isinstance(h, tuple) else (h, None)
            if use == "out" or use == "batch_first":
                loss = out.sum()
            elif use == "h":
                loss = (hn * 2).sum()
            elif use == "c":
                loss = cn.sum() if cn is not None else hn.sum()
            else:
                loss = (out.transpose(1, 2) * w).sum()
            loss.backward()
        assert_close(xf.grad, x.grad, torch.float32, "input grad")
        for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
            assert_close(q.grad, p.grad, torch.float32, name)
