"""Peak memory of one training step (forward + backward) of a torch.nn or fastrnn layer.

Run each side in its own process (the peak resident size is process-wide):

    python bench/train_memory.py torch LSTM 100 64 512 512
    python bench/train_memory.py fastrnn LSTM 100 64 512 512

Prints the rise of the process's peak RSS over the baseline after the layer is built and
warmed up (one training step on a 2 x 2 slice). A measurement tool, not a test: RSS moves
with the allocator by about 0.5 MiB.
"""
import resource
import sys

import torch

import fastrnn


def main(argv):
    which, cell = argv[0], argv[1]
    T, B, I, H = map(int, argv[2:6])
    cls = {"torch": getattr(torch.nn, cell), "fastrnn": getattr(fastrnn, cell)}[which]
    torch.manual_seed(0)
    layer = cls(I, H)
    x = torch.randn(T, B, I)
    # A training step on a tiny slice first: loads the libraries' forward and backward code
    # (page faults of code and of one-time library buffers are not the step's memory).
    out, h = layer(x[:2, :2])
    (out.sum() + (h[0] if isinstance(h, tuple) else h).sum()).backward()
    layer.zero_grad(set_to_none=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out, h = layer(x)
    (out.sum() + (h[0] if isinstance(h, tuple) else h).sum()).backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{which} {cell} ({T},{B},{I},{H}) training step peak over baseline: {(peak - base) / 1024:.1f} MiB")


if __name__ == "__main__":
    main(sys.argv[1:])
