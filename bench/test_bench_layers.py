"""pytest-benchmark groups: fastrnn, torch.nn and the pure-PyTorch reference on one shape.

    pytest bench/ --benchmark-only [-k lstm] [--benchmark-group-by=group]

Each group is one (cell, shape, mode); compare the rows of a group. No timing is asserted.
"""
import pytest

from fastrnn import bench

SHAPES = [(15, 5, 1, 20), (10, 8, 1, 64), (100, 32, 64, 128), (200, 1, 128, 128), (100, 64, 512, 512)]
CASES = [bench.Case(c, *s) for c in ("lstm", "gru", "rnn") for s in SHAPES] + [
    bench.Case("lstm", 100, 32, 64, 256, proj_size=64),
    bench.Case("lstm", 100, 32, 64, 128, packed=True),
    bench.Case("lstm", 50, 16, 32, 64, dtype="float64"),
]


@pytest.mark.parametrize("impl", ["fastrnn", "torch", "reference"])
@pytest.mark.parametrize("mode", ["infer", "train"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.label().replace(" ", "_"))
def test_layer(benchmark, case, mode, impl):
    if impl == "reference" and (case.packed or case.T * case.B * case.H > 3_000_000):
        pytest.skip("the Python reference loop is too slow to be worth timing here")
    t_layer, f_layer, x = bench.make_layers(case)
    train = mode == "train"
    if impl == "fastrnn":
        fn = bench.step_fn(f_layer, x, train)
    elif impl == "torch":
        fn = bench.step_fn(t_layer, x, train)
    else:
        fn = bench.reference_fn(t_layer, x, train)
    benchmark.group = f"{case.label()} {mode}"
    fn()
    benchmark(fn)
