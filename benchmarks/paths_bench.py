"""Throughput of the path analysis: samples/s on CPU for the demo CNN and a width-256 CNN,
and the exact K-best DP versus the beam search (time ratio and agreement).

Run: ``python benchmarks/paths_bench.py [--n-samples 512] [--threads 2]``. Prints ratios
measured in the same process; the machines are noisy, so compare numbers from one run only.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from netphys.population.paths import layer_names, path_flow, path_transitions, top_paths
from netphys.recorder.graph import edge_contributions


class CNN(nn.Module):
    """Conv(1->w1)+BN+ReLU, Conv(w1->w2)+BN+ReLU, MaxPool2, flatten, Linear(->w3)+ReLU, Linear(->10)."""

    def __init__(self, w1: int = 16, w2: int = 32, w3: int = 64) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = (
            nn.Conv2d(1, w1, 3, padding=1),
            nn.BatchNorm2d(w1),
            nn.ReLU(),
        )
        self.conv2, self.bn2, self.relu2 = (
            nn.Conv2d(w1, w2, 3, padding=1),
            nn.BatchNorm2d(w2),
            nn.ReLU(),
        )
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.relu3, self.fc2 = nn.Linear(w2 * 16, w3), nn.ReLU(), nn.Linear(w3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.fc2(self.relu3(self.fc1(torch.flatten(self.pool(x), 1))))


def _time(f, *args, **kw):
    t = time.perf_counter()
    out = f(*args, **kw)
    return out, time.perf_counter() - t


def bench(name: str, model: nn.Module, x: torch.Tensor, k: int, exact: bool) -> None:
    layers = ["relu1", "relu2", "relu3"]
    contrib, t_c = _time(edge_contributions, model, x, layers=layers, progress=False)
    tr, t_t = _time(path_transitions, contrib, flow_seed="activity")
    _, t_f = _time(path_flow, tr)
    beam, t_b = _time(top_paths, tr, k=k)
    n = x.shape[0]
    total = t_c + t_t + t_f + t_b
    print(
        f"{name}: {n} samples, {int(np.prod([contrib[lay].sizes['node'] for lay in layer_names(contrib)]))} paths, "
        f"methods {contrib.attrs['methods']}"
    )
    print(
        f"  contributions {n / t_c:8.1f} samples/s | transitions+flow {n / (t_t + t_f):8.1f} samples/s "
        f"| beam top-{k} {n / t_b:8.1f} samples/s | whole {n / total:7.1f} samples/s"
    )
    print(f"  beam certified {beam['certified'].values.mean():.2f}")
    if exact:
        ex, t_e = _time(top_paths, tr, k=k, method="exact")
        cert = beam["certified"].values
        same = (beam["path_id"].values[cert] == ex["path_id"].values[cert]).all()
        agree = (beam["path_id"].values == ex["path_id"].values).all(1).mean()
        print(
            f"  exact DP {n / t_e:8.1f} samples/s; exact/beam time ratio {t_e / t_b:.2f}; "
            f"certified samples {int(cert.sum())}, all equal to exact: {bool(same)}; "
            f"top-{k} identical to exact on {agree:.2f} of all samples"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-samples", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (contributions only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.n_samples, 1, 8, 8)
    dev = torch.device(args.device)
    print(f"{args.device}, torch {torch.__version__}, {args.threads} threads")
    bench("demo CNN (16-32-64)", CNN().eval().to(dev), x, args.k, exact=True)
    bench(
        "wide CNN (256-256-256)",
        CNN(256, 256, 256).eval().to(dev),
        x[: max(1, args.n_samples // 4)],
        args.k,
        exact=True,
    )


if __name__ == "__main__":
    main()
