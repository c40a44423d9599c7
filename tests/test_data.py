"""fastrnn.data: exact window sizes and values, scalers, TBPTT continuity, text utilities."""
import math

import pytest
import torch

from fastrnn import data


def test_noisy_sine():
    s = data.noisy_sine(seed=3)
    assert s.dtype == torch.float32 and s.shape == (100,)
    assert torch.equal(s, data.noisy_sine(seed=3))
    assert not torch.equal(s, data.noisy_sine(seed=4))
    noisy, clean = data.noisy_sine(n_points=1000, noise=0.1, seed=0, return_clean=True)
    x = torch.linspace(-2 * math.pi, 2 * math.pi, 1000, dtype=torch.float64)
    torch.testing.assert_close(clean, torch.sin(x).float())
    assert abs(float((noisy - clean).std()) - 0.1) < 0.01
    assert torch.equal(data.noisy_sine(noise=0.0, seed=1), torch.sin(torch.linspace(-2 * math.pi, 2 * math.pi, 100,
                                                                                       dtype=torch.float64)).float())
    for bad in [dict(n_points=0), dict(noise=-1.0), dict(x_range=(1.0, 0.0)), dict(noise=float("nan"))]:
        with pytest.raises(ValueError):
            data.noisy_sine(**bad)


def test_airline_passengers():
    s = data.airline_passengers()
    assert s.shape == (144,) and s.dtype == torch.float32
    assert s[0] == 112 and s[-1] == 432 and float(s.sum()) == 40363
    s2, months = data.airline_passengers(with_months=True)
    assert months[0] == "1949-01" and months[-1] == "1960-12" and len(months) == 144
    assert float(s2.max()) == 622


def test_sliding_window_next():
    series = torch.arange(100, dtype=torch.float32)
    ds = data.SlidingWindow(series, window=10)
    assert len(ds) == 90
    x, y = ds[0]
    assert x.shape == (10, 1) and y.shape == (1, 1)
    assert torch.equal(x[:, 0], series[0:10]) and float(y) == 10.0
    x, y = ds[89]
    assert torch.equal(x[:, 0], series[89:99]) and float(y) == 99.0
    with pytest.raises(IndexError):
        ds[90]
    h = data.SlidingWindow(series, window=10, horizon=3, stride=5)
    assert len(h) == (100 - 13) // 5 + 1
    x, y = h[1]
    assert torch.equal(x[:, 0], series[5:15]) and torch.equal(y[:, 0], series[15:18])


def test_sliding_window_shifted_and_multivariate():
    series = torch.arange(50, dtype=torch.float32)
    ds = data.SlidingWindow(series, window=15, target="shifted")
    assert len(ds) == 35
    x, y = ds[0]
    assert torch.equal(x[:, 0], series[0:15]) and torch.equal(y[:, 0], series[1:16])
    mv = torch.stack([series, -series], 1)
    ds2 = data.SlidingWindow(mv, window=4)
    x, y = ds2[2]
    assert x.shape == (4, 2) and torch.equal(y[0], mv[6])
    xs, ys = ds2.tensors()
    assert xs.shape == (46, 4, 2) and ys.shape == (46, 1, 2)
    loader = torch.utils.data.DataLoader(ds, batch_size=8)
    xb, yb = next(iter(loader))
    assert xb.shape == (8, 15, 1)


def test_sliding_window_errors():
    s = torch.arange(10.0)
    for kw in [dict(window=10), dict(window=0), dict(window=3, horizon=0), dict(window=3, stride=0),
               dict(window=3, target="bogus"), dict(window=2.5)]:
        with pytest.raises(ValueError):
            data.SlidingWindow(s, **kw)
    with pytest.raises(ValueError):
        data.SlidingWindow(torch.zeros(2, 3, 4), window=1)


def test_split_and_scalers_roundtrip():
    s = torch.arange(10, dtype=torch.float32) * 3 + 7
    train, test = data.chronological_split(s, 0.2)
    assert torch.equal(train, s[:8]) and torch.equal(test, s[8:])
    mm = data.MinMaxScaler().fit(train)
    t = mm.transform(train)
    assert float(t.min()) == 0.0 and abs(float(t.max()) - 1.0) < 1e-6
    assert float(mm.transform(test)[-1]) > 1.0  # fitted on the training part only
    torch.testing.assert_close(mm.inverse_transform(mm.transform(s)), s)
    mm2 = data.MinMaxScaler((-1, 1)).fit(train)
    assert float(mm2.transform(train).min()) == -1.0
    st = data.StandardScaler()
    z = st.fit_transform(train)
    assert abs(float(z.mean())) < 1e-6 and abs(float(z.std(unbiased=False)) - 1) < 1e-6
    torch.testing.assert_close(st.inverse_transform(st.transform(s)), s)
    mv = torch.randn(20, 3) * torch.tensor([1.0, 10.0, 100.0])
    st2 = data.StandardScaler().fit(mv)
    torch.testing.assert_close(st2.transform(mv).std(0, unbiased=False), torch.ones(3))
    with pytest.raises(RuntimeError):
        data.StandardScaler().transform(s)
    with pytest.raises(ValueError):
        data.chronological_split(s, 1.5)


@pytest.mark.parametrize("batch_first", [False, True])
def test_tbptt_continuity(batch_first):
    N, B, bptt = 103, 4, 7
    seq = torch.arange(N)
    tb = data.TBPTTBatcher(seq, batch_size=B, bptt=bptt, batch_first=batch_first)
    L = N // B
    assert tb.stream_length == L and tb.offsets == [0, L, 2 * L, 3 * L]
    assert len(tb) == math.ceil((L - 1) / bptt)
    chunks = list(tb)
    assert len(chunks) == len(tb)
    seen = []
    prev_end = None
    for x, y in chunks:
        if batch_first:
            x, y = x.t(), y.t()
        assert x.shape == y.shape and x.shape[1] == B
        assert torch.equal(y[:-1], x[1:])          # target = input shifted by one
        assert torch.equal(y[-1], x[-1] + 1)
        if prev_end is not None:                   # chunk k+1 continues where chunk k ended
            assert torch.equal(x[0], prev_end + 1)
        prev_end = x[-1]
        seen.append(x.reshape(-1))
    for b in range(B):                              # streams start at evenly spaced offsets
        assert int((chunks[0][0].t() if batch_first else chunks[0][0])[0, b]) == b * L
    allx = torch.cat(seen)
    assert len(allx) == len(set(allx.tolist()))     # each position an input at most once per epoch
    assert list(tb)[0][0].shape == chunks[0][0].shape  # re-iterable, no shuffling
    assert torch.equal(list(tb)[1][0], chunks[1][0])


def test_tbptt_values_and_errors():
    vals = torch.randn(50, 3)
    tb = data.TBPTTBatcher(vals, batch_size=5, bptt=4)
    x, y = next(iter(tb))
    assert x.shape == (4, 5, 3) and torch.equal(x[0, 1], vals[10])
    for kw in [dict(batch_size=0, bptt=3), dict(batch_size=2, bptt=0), dict(batch_size=60, bptt=3)]:
        with pytest.raises(ValueError):
            data.TBPTTBatcher(vals, **kw)


def test_detach_state():
    h = torch.randn(2, 3, requires_grad=True) * 2
    c = torch.randn(2, 3, requires_grad=True) * 2
    d = data.detach_state((h, c))
    assert isinstance(d, tuple) and not d[0].requires_grad and not d[1].requires_grad
    assert torch.equal(d[0], h)
    assert not data.detach_state(h).requires_grad
    assert data.detach_state(None) is None
    with pytest.raises(TypeError):
        data.detach_state("h")


def test_char_vocab_and_text():
    text = data.sonnets()
    assert "Shall I compare thee to a summer's day?" in text
    v = data.CharVocab(text)
    ids = v.encode("Shall I")
    assert ids.dtype == torch.int64 and v.decode(ids) == "Shall I"
    assert v.decode(v.encode(text)) == text
    with pytest.raises(ValueError):
        v.encode("\u2603")
    with pytest.raises(ValueError):
        v.decode([len(v)])
    with pytest.raises(ValueError):
        data.CharVocab("")
