"""Forecaster, closed-loop forecast against a step-by-step reference, and the demos."""
import json
import subprocess
import sys

import pytest
import torch

import fastrnn
from fastrnn.forecast import forecast
from fastrnn.models import Forecaster


def _step_by_step(model, ctx, steps):
    """The plain reference: run the context, then feed each prediction back through the module."""
    with torch.no_grad():
        y, st = model(ctx)
        p = y[:, -1]
        out = [p]
        for _ in range(steps - 1):
            y, st = model(p.unsqueeze(1), st)
            p = y[:, -1]
            out.append(p)
    return torch.stack(out, 1)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("residual", [False, True])
def test_forecast_matches_step_by_step(cell, layers, residual):
    torch.manual_seed(0)
    m = Forecaster(cell, input_size=2, hidden_size=16, num_layers=layers, output_size=2, residual=residual)
    ctx = torch.randn(3, 12, 2)
    got = forecast(m, ctx, 40)
    want = _step_by_step(m, ctx, 40)
    assert got.shape == (3, 40, 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(forecast(m, ctx[0], 5), want[0, :5], atol=1e-5, rtol=1e-4)


def test_forecast_on_torch_layer_and_window_method():
    torch.manual_seed(0)
    fast = Forecaster("lstm", hidden_size=8)
    ref = Forecaster("lstm", hidden_size=8, layer_cls=torch.nn.LSTM)
    ref.load_state_dict(fast.state_dict())
    ctx = torch.randn(20)
    torch.testing.assert_close(forecast(fast, ctx, 25), forecast(ref, ctx, 25), atol=1e-5, rtol=1e-4)
    # window method == re-running the last window by hand
    w = forecast(fast, ctx, 6, method="window", window=10)
    buf = ctx[-10:].reshape(1, 10, 1)
    for s in range(6):
        with torch.no_grad():
            p = fast(buf)[0][:, -1:]
        torch.testing.assert_close(w[s], p.reshape(()), atol=1e-6, rtol=1e-5)
        buf = torch.cat([buf[:, 1:], p], 1)
    assert forecast(fast, ctx, 0).shape == (0,)
    for bad in [dict(steps=-1), dict(steps=3, method="x"), dict(steps=3, method="window", window=0)]:
        with pytest.raises(ValueError):
            forecast(fast, ctx, **bad)


def test_forecaster_shapes_and_errors():
    m = Forecaster("gru", input_size=3, hidden_size=5, output_size=2)
    y, h = m(torch.randn(4, 7, 3))
    assert y.shape == (4, 7, 2) and h.shape == (1, 4, 5)
    assert isinstance(m.rnn, fastrnn.GRU) and m.rnn.batch_first
    with pytest.raises(ValueError):
        Forecaster("transformer")
    with pytest.raises(ValueError):
        Forecaster(input_size=1, output_size=2, residual=True)


def _demo(name, tmp_path, *extra):
    png = tmp_path / f"{name}.png"
    res = subprocess.run(
        [sys.executable, "-m", "fastrnn.cli", "demo", name, "--epochs", "1", "--json", "--quiet", "--plot", str(png),
         *extra], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "falling back" not in res.stderr  # the native layers ran
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("train_loss", "test_rmse", "baseline_rmse", "seconds"):
        assert isinstance(out[key], float), key
    return out, png


@pytest.mark.parametrize("name", ["sine", "airline", "charlm"])
def test_demo_quick(name, tmp_path):
    out, png = _demo(name, tmp_path)
    assert out["demo"] == name and out["epochs"] == 1
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert out["plot"] is None
    else:
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_compare_and_cell(tmp_path):
    out, _ = _demo("sine", tmp_path, "--cell", "gru", "--compare")
    assert out["cell"] == "gru" and out["torch_seconds"] > 0


def test_demo_bad_arguments(tmp_path):
    res = subprocess.run([sys.executable, "-m", "fastrnn.cli", "demo", "sine", "--epochs", "-3"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and "epochs" in res.stderr
