"""A DDP recording worker: ``python _ddp_worker.py RANK WORLD PATH N KILL_AT MODE DTYPE [ddp]``.

Each rank initialises a gloo process group (file:// rendezvous next to PATH), records its
shard (every ``WORLD``-th sample, like ``DistributedSampler`` without shuffling) of ``N``
deterministic inputs through a small CNN, skipping samples already committed (resume), and
with ``KILL_AT`` >= 0 SIGKILLs itself after that many forward calls. With ``ddp`` the model is
wrapped in ``DistributedDataParallel`` (layers ``module.1``, ``module.3``).
"""

from __future__ import annotations

import datetime
import os
import signal
import sys

import torch
from torch import distributed as dist
from torch import nn

import netphys


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)
    ).eval()


def inputs(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 6, 6, generator=g)


def main() -> None:
    rank, world, path, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    kill_at = int(sys.argv[5]) if len(sys.argv) > 5 else -1
    mode = sys.argv[6] if len(sys.argv) > 6 else "w"
    dist.init_process_group(
        "gloo",
        init_method=f"file://{path}.rendezvous",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    torch.set_num_threads(1)
    m, x = model(), inputs(n)
    wrapped = len(sys.argv) > 8 and sys.argv[8] == "ddp"
    if wrapped:
        m = nn.parallel.DistributedDataParallel(m)
    mine = torch.arange(rank, n, world)
    with (
        torch.no_grad(),
        netphys.DistributedRecorder(
            m,
            path,
            layers=[f"{'module.' if wrapped else ''}{k}" for k in ("1", "3")],
            dtype=sys.argv[7] if len(sys.argv) > 7 else "float32",
            chunk_frames=8,
            mode=mode,
            writer="inline",  # commit at each block: deterministic kill
        ) as rec,
    ):
        done = set(rec.committed_samples().tolist())
        todo = [int(i) for i in mine if int(i) not in done]
        for k, s in enumerate(range(0, len(todo), 5)):
            if k == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            idx = torch.tensor(todo[s : s + 5])
            rec.annotate(stimulus=idx, label=idx % 5, condition=["even", "odd"][rank])
            m(x[idx])
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
