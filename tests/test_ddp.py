"""DistributedDataParallel: 2 processes (gloo, localhost) train like one process on the combined batch."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastrnn

STEPS, B, T, I, H = 3, 4, 6, 3, 8


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = fastrnn.LSTM(I, H, num_layers=2, batch_first=True)
        self.gru = fastrnn.GRU(H, H, batch_first=True)
        self.head = torch.nn.Linear(H, 1)

    def forward(self, x):
        y, _ = self.rnn(x)
        y, _ = self.gru(y)
        return self.head(y[:, -1])


def _data():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(2 * B, T, I, generator=g), torch.randn(2 * B, 1, generator=g)) for _ in range(STEPS)]


def _worker(rank, world, port, out_path):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = torch.nn.parallel.DistributedDataParallel(Net())
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in _data():
            xs, ys = x[rank * B:(rank + 1) * B], y[rank * B:(rank + 1) * B]
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(xs), ys).backward()
            opt.step()
        if rank == 0:
            torch.save(model.module.state_dict(), out_path)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="gloo not available")
def test_ddp_matches_single_process(tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ddp_state = torch.load(out)
    single = Net()
    opt = torch.optim.SGD(single.parameters(), lr=0.1)
    for x, y in _data():
        opt.zero_grad()
        torch.nn.functional.mse_loss(single(x), y).backward()
        opt.step()
    for name, p in single.state_dict().items():
        torch.testing.assert_close(ddp_state[name], p, atol=1e-6, rtol=1e-5, msg=name)
