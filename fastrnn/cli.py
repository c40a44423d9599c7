"""The ``fastrnn`` command: bench, info (and demo)."""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args) -> int:
    import fastrnn

    info = fastrnn.info()
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:>14}: {v}")
    return 0


def _cmd_bench(args) -> int:
    import torch

    from . import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda needs a CUDA GPU")
    if args.shape:
        cases = [bench.Case(c, *bench.parse_shape(s), dtype=args.dtype, device=args.device)
                 for c in args.cell for s in args.shape]
    elif args.device == "cuda":
        cases = bench.cuda_cases(args.cell)
    else:
        cases = bench.default_cases(args.quick, args.cell)
    modes = args.mode
    rounds = args.rounds or (5 if args.quick else 9)
    import fastrnn

    info = fastrnn.info()
    print(f"fastrnn {info['version']} (kernel ISA {info['isa']}, {info['threads']} threads) vs torch {info['torch']}")
    peak1, peak = bench.fma_peak(1), bench.fma_peak(info["threads"])
    print(f"measured float32 FMA peak: {peak1:.1f} GFLOP/s on 1 thread, {peak:.1f} on {info['threads']}")
    print("speedup = torch time / fastrnn time, median of alternating rounds; GFLOP/s is fastrnn's")
    print(bench.HEADER)
    rows = bench.run(cases, modes, rounds=rounds, progress=lambda r: print(bench.format_row(r), flush=True))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "fma_peak_gflops": {"1": peak1, str(info["threads"]): peak},
                       "rows": bench.rows_as_dicts(rows)}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastrnn", description="fast drop-in RNN/LSTM/GRU layers for PyTorch")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bench", help="compare fastrnn with torch.nn on the same layers")
    b.add_argument("--quick", action="store_true", help="small shapes and few rounds (under a minute)")
    b.add_argument("--cell", nargs="+", choices=["lstm", "gru", "rnn"], default=["lstm", "gru", "rnn"])
    b.add_argument("--shape", nargs="+", help="T,B,I,H (instead of the default shapes)")
    b.add_argument("--mode", nargs="+", choices=["infer", "train"], default=["infer", "train"])
    b.add_argument("--rounds", type=int, default=0, help="alternating rounds per row")
    b.add_argument("--threads", type=int, default=0, help="torch.set_num_threads before measuring")
    b.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: against cuDNN, synchronized")
    b.add_argument("--dtype", choices=["float32", "float64", "float16", "bfloat16"], default="float32",
                   help="dtype for --shape rows")
    b.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    b.set_defaults(fn=_cmd_bench)

    i = sub.add_parser("info", help="version, kernel ISA, CUDA build, threads, torch version")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=_cmd_info)

    try:
        from .demos import add_demo_parser
    except ImportError:  # pragma: no cover
        add_demo_parser = None
    if add_demo_parser is not None:
        add_demo_parser(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ValueError as e:
        print(f"fastrnn: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
