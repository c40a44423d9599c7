"""Worked examples: ``fastrnn demo sine | airline | charlm``.

* sine: a window of 10 noisy sine values -> the next value (many-to-one). The test RMSE is
  measured against the clean sine (what the noisy points hide), next to the noise level and
  the previous-value baseline; a closed-loop forecast of the test part is plotted too.
* airline: monthly airline passengers 1949-1960, a window of 12 months -> the next month,
  trained on the first 80 % (log scale, standardized on the training part only), RMSE in
  passengers on the held-out last 20 % against "previous month" and "same month last year".
* charlm: a character-level LSTM language model on seven Shakespeare sonnets, trained with
  truncated BPTT carrying the hidden state from chunk to chunk; prints a generated sample.

Each prints train and test loss every epoch, ``--json`` makes the last line a JSON object
(train_loss, test_rmse, baseline_rmse, seconds, ...), ``--compare`` also trains the same
model on torch.nn and prints both wall times, ``--plot PATH`` writes a PNG (with matplotlib,
``pip install fastrnn[demo]``).
"""
from __future__ import annotations

import json
import math
import time
from typing import Dict, List, Optional

import torch
from torch import nn

from . import data
from .forecast import forecast
from .models import Forecaster

DEFAULT_EPOCHS = {"sine": 60, "airline": 150, "charlm": 25}
TORCH_LAYERS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def add_demo_parser(sub) -> None:
    d = sub.add_parser("demo", help="train a worked example: sine, airline or charlm")
    d.add_argument("name", choices=["sine", "airline", "charlm"])
    d.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm")
    d.add_argument("--epochs", type=int, default=0, help="training epochs (default: the demo's own)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--hidden", type=int, default=0, help="hidden size (default: the demo's own)")
    d.add_argument("--plot", metavar="PATH", default=None,
                   help="PNG to write (default fastrnn_<name>.png; '' for none)")
    d.add_argument("--compare", action="store_true", help="also train the same model on torch.nn; print both times")
    d.add_argument("--json", action="store_true", help="last line: a JSON object with the results")
    d.add_argument("--quiet", action="store_true", help="no progress bar, no per-epoch lines")
    d.set_defaults(fn=run_demo)


def _progress(iterable, quiet: bool, desc: str):
    if quiet:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return iterable
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)


def _write(msg: str, quiet: bool) -> None:
    if quiet:
        return
    try:
        from tqdm import tqdm

        tqdm.write(msg)
    except ImportError:  # pragma: no cover
        print(msg)


def _rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean((a.double() - b.double()) ** 2)))


# ----------------------------------------------------------------------------------------
# Forecasting demos
# ----------------------------------------------------------------------------------------
def _fit_windows(model, xtr, ytr, xte, yte, epochs, lr, batch_size, seed, quiet, name):
    """Many-to-one training (MSE on the last step). Returns per-epoch train/test losses."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1), eta_min=lr * 0.05)
    loss_fn = nn.MSELoss()
    hist = {"train": [], "test": []}
    for epoch in _progress(range(epochs), quiet, name):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        total = 0.0
        for i in range(0, len(xtr), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            out, _ = model(xtr[idx])
            loss = loss_fn(out[:, -1], ytr[idx, 0])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        model.eval()
        with torch.no_grad():
            test = float(loss_fn(model(xte)[0][:, -1], yte[:, 0]))
        hist["train"].append(total / len(xtr))
        hist["test"].append(test)
        _write(f"epoch {epoch + 1:4d}/{epochs}  train loss {hist['train'][-1]:.5f}  test loss {test:.5f}", quiet)
    return hist


def _demo_sine(args, layer_cls=None) -> Dict:
    torch.manual_seed(args.seed)
    noise, window = 0.1, 10
    series, clean = data.noisy_sine(n_points=200, noise=noise, x_range=(-4 * math.pi, 4 * math.pi),
                                    seed=args.seed, return_clean=True)
    ds = data.SlidingWindow(series, window)
    x, y = ds.tensors()
    y_clean = data.SlidingWindow(clean, window).tensors()[1]
    n_test = int(round(len(ds) * 0.2))
    xtr, ytr, xte, yte = x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:]
    model = Forecaster(args.cell, hidden_size=args.hidden or 32, layer_cls=layer_cls)
    hist = _fit_windows(model, xtr, ytr, xte, yte, args.epochs, 0.01, 16, args.seed, args.quiet, "sine")
    model.eval()
    with torch.no_grad():
        pred = model(xte)[0][:, -1, 0]
    truth = y_clean[-n_test:, 0, 0]
    res = {
        "train_loss": hist["train"][-1] if hist["train"] else None,
        "test_loss": hist["test"][-1] if hist["test"] else None,
        "test_rmse": _rmse(pred, truth),
        "test_rmse_noisy": _rmse(pred, yte[:, 0, 0]),
        "baseline_rmse": _rmse(xte[:, -1, 0], truth),
        "noise": noise,
    }
    n_ctx = len(series) - n_test
    closed = forecast(model, series[:n_ctx], n_test)
    res["closed_loop_rmse"] = _rmse(closed, clean[n_ctx:])
    _write(f"test RMSE vs the clean sine: {res['test_rmse']:.4f} (noise level {noise}, previous-value baseline "
           f"{res['baseline_rmse']:.4f}); closed-loop forecast of the test part: {res['closed_loop_rmse']:.4f}",
           args.quiet)
    res["_plot"] = dict(hist=hist, t=list(range(len(series))), series=series, clean=clean,
                        pred_t=list(range(len(series) - n_test, len(series))), pred=pred, closed=closed)
    return res


def _demo_airline(args, layer_cls=None) -> Dict:
    torch.manual_seed(args.seed)
    series, months = data.airline_passengers(with_months=True)
    window = 12
    logs = torch.log(series)
    n_test = int(round(len(series) * 0.2))
    train_part = logs[:-n_test]
    scaler = data.StandardScaler().fit(train_part)
    scaled = scaler.transform(logs)
    ds = data.SlidingWindow(scaled, window)
    x, y = ds.tensors()
    # Windows whose target lies in the held-out last 20 %.
    xtr, ytr, xte, yte = x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:]
    model = Forecaster(args.cell, hidden_size=args.hidden or 32, residual=True, layer_cls=layer_cls)
    hist = _fit_windows(model, xtr, ytr, xte, yte, args.epochs, 0.005, 8, args.seed, args.quiet, "airline")
    model.eval()
    with torch.no_grad():
        pred_scaled = model(xte)[0][:, -1, 0]
    pred = torch.exp(scaler.inverse_transform(pred_scaled))
    truth = series[-n_test:]
    prev = series[-n_test - 1:-1]
    seasonal = series[-n_test - 12:-12]
    res = {
        "train_loss": hist["train"][-1] if hist["train"] else None,
        "test_loss": hist["test"][-1] if hist["test"] else None,
        "test_rmse": _rmse(pred, truth) * 1000,
        "baseline_rmse": _rmse(prev, truth) * 1000,
        "seasonal_baseline_rmse": _rmse(seasonal, truth) * 1000,
        "units": "passengers",
    }
    _write(f"test RMSE {res['test_rmse']:.0f} passengers; baselines: previous month {res['baseline_rmse']:.0f}, "
           f"same month last year {res['seasonal_baseline_rmse']:.0f}", args.quiet)
    res["_plot"] = dict(hist=hist, t=list(range(len(series))), series=series, clean=None,
                        pred_t=list(range(len(series) - n_test, len(series))), pred=pred, closed=None)
    return res


# ----------------------------------------------------------------------------------------
# Character-level language model with truncated BPTT
# ----------------------------------------------------------------------------------------
class CharLM(nn.Module):
    def __init__(self, vocab: int, cell: str, hidden: int, layer_cls=None):
        super().__init__()
        from .models import LAYERS

        self.embed = nn.Embedding(vocab, 32)
        self.rnn = (layer_cls or LAYERS[cell])(32, hidden)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids, state=None):  # ids: [T, B]
        y, state = self.rnn(self.embed(ids), state)
        return self.head(y), state


def _demo_charlm(args, layer_cls=None) -> Dict:
    torch.manual_seed(args.seed)
    text = data.sonnets()
    vocab = data.CharVocab(text)
    ids = vocab.encode(text)
    n_test = len(ids) // 10
    train_ids, test_ids = ids[:-n_test], ids[-n_test:]
    batches = data.TBPTTBatcher(train_ids, batch_size=16, bptt=32)
    model = CharLM(len(vocab), args.cell, args.hidden or 128, layer_cls)
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    loss_fn = nn.CrossEntropyLoss()
    hist = {"train": [], "test": []}
    V = len(vocab)
    for epoch in _progress(range(args.epochs), args.quiet, "charlm"):
        model.train()
        state, total, count = None, 0.0, 0
        for x, y in batches:
            state = data.detach_state(state)
            opt.zero_grad()
            logits, state = model(x, state)
            loss = loss_fn(logits.reshape(-1, V), y.reshape(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item() * y.numel()
            count += y.numel()
        test_loss, _ = _charlm_eval(model, test_ids, V)
        hist["train"].append(total / count)
        hist["test"].append(test_loss)
        _write(f"epoch {epoch + 1:4d}/{args.epochs}  train loss {hist['train'][-1]:.4f}  test loss {test_loss:.4f}"
               " (nats/char)", args.quiet)
    test_loss, test_rmse = _charlm_eval(model, test_ids, V)
    # Baseline: the unigram distribution of the training text.
    freq = torch.bincount(train_ids, minlength=V).double() + 1
    freq /= freq.sum()
    tgt = test_ids[1:]
    base_loss = float(-torch.log(freq[tgt]).mean())
    onehot = torch.nn.functional.one_hot(tgt, V).double()
    base_rmse = float(torch.sqrt(((freq.unsqueeze(0) - onehot) ** 2).sum(1).mean()))
    sample = _charlm_sample(model, vocab, "Shall I", 200, args.seed)
    _write(f"test loss {test_loss:.3f} nats/char (unigram baseline {base_loss:.3f}); sample:\n{sample}", args.quiet)
    return {
        "train_loss": hist["train"][-1] if hist["train"] else None,
        "test_loss": test_loss,
        "baseline_loss": base_loss,
        "test_rmse": test_rmse,
        "baseline_rmse": base_rmse,
        "rmse_meaning": "root mean squared error of the predicted next-char distribution against the one-hot truth",
        "sample": sample,
        "_plot": dict(hist=hist),
    }


@torch.no_grad()
def _charlm_eval(model, ids, V):
    model.eval()
    logits, _ = model(ids[:-1].unsqueeze(1))
    logits = logits[:, 0]
    tgt = ids[1:]
    loss = float(nn.functional.cross_entropy(logits, tgt))
    probs = torch.softmax(logits.double(), -1)
    onehot = nn.functional.one_hot(tgt, V).double()
    rmse = float(torch.sqrt(((probs - onehot) ** 2).sum(1).mean()))
    return loss, rmse


@torch.no_grad()
def _charlm_sample(model, vocab, prompt: str, n: int, seed: int, temperature: float = 0.8) -> str:
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    logits, state = model(vocab.encode(prompt).unsqueeze(1))
    out: List[int] = []
    for _ in range(n):
        p = torch.softmax(logits[-1, 0] / temperature, -1)
        nxt = int(torch.multinomial(p, 1, generator=gen))
        out.append(nxt)
        logits, state = model(torch.tensor([[nxt]]), state)
    return prompt + vocab.decode(out)


# ----------------------------------------------------------------------------------------
DEMOS = {"sine": _demo_sine, "airline": _demo_airline, "charlm": _demo_charlm}


def _plot(name: str, res: Dict, path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    p = res["_plot"]
    series_plot = "series" in p
    fig, axes = plt.subplots(1, 2 if series_plot else 1, figsize=(12 if series_plot else 6, 4))
    ax = axes[0] if series_plot else axes
    ax.plot(p["hist"]["train"], label="train")
    ax.plot(p["hist"]["test"], label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(f"{name}: loss")
    ax.legend()
    if series_plot:
        ax = axes[1]
        ax.plot(p["t"], p["series"].numpy(), ".", ms=3, label="data", color="0.5")
        if p["clean"] is not None:
            ax.plot(p["t"], p["clean"].numpy(), "-", lw=1, label="clean", color="k")
        ax.plot(p["pred_t"], p["pred"].numpy(), "-", lw=2, label="one-step prediction", color="C1")
        if p.get("closed") is not None:
            ax.plot(p["pred_t"], p["closed"].numpy(), "--", lw=1.5, label="closed-loop forecast", color="C2")
        ax.axvline(p["pred_t"][0], color="0.7", ls=":")
        ax.set_title(f"{name}: test predictions (right of the line)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run_demo(args) -> int:
    if args.epochs < 0:
        raise ValueError(f"--epochs must be positive, got {args.epochs}")
    if args.hidden < 0:
        raise ValueError(f"--hidden must be positive, got {args.hidden}")
    args.epochs = args.epochs or DEFAULT_EPOCHS[args.name]
    fn = DEMOS[args.name]
    if args.compare:  # warm both implementations up (first-call costs) before timing either
        warm = _quiet_copy(args)
        warm.epochs = 1
        fn(warm)
        fn(warm, layer_cls=TORCH_LAYERS[args.cell])
    t0 = time.perf_counter()
    res = fn(args)
    seconds = time.perf_counter() - t0
    out = {"demo": args.name, "cell": args.cell, "epochs": args.epochs, "seed": args.seed}
    out.update({k: v for k, v in res.items() if not k.startswith("_")})
    out["seconds"] = seconds
    print(f"fastrnn {args.name} ({args.cell}): trained {args.epochs} epochs in {seconds:.2f} s")
    if args.compare:
        t1 = time.perf_counter()
        ref = fn(_quiet_copy(args), layer_cls=TORCH_LAYERS[args.cell])
        torch_seconds = time.perf_counter() - t1
        out["torch_seconds"] = torch_seconds
        out["torch_test_rmse"] = ref["test_rmse"]
        print(f"torch.nn {args.name} ({args.cell}): trained {args.epochs} epochs in {torch_seconds:.2f} s "
              f"(fastrnn {seconds:.2f} s, {torch_seconds / seconds:.2f}x)")
    path = f"fastrnn_{args.name}.png" if args.plot is None else args.plot
    out["plot"] = None
    if path:
        written = _plot(args.name, res, path)
        if written:
            out["plot"] = written
            print(f"wrote {written}")
        else:
            print("matplotlib is not installed: no plot (pip install 'fastrnn[demo]' for plots)")
    if args.json:
        print(json.dumps(out))
    return 0


def _quiet_copy(args):
    import copy

    a = copy.copy(args)
    a.quiet = True
    return a
