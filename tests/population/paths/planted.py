"""The planted ground-truth networks of reference/paths.md 4.2 (built by hand, no training).

4 features, 2 units per feature block per layer, 3 hidden layers, 4 distractor units per layer
(width 12, 1728 paths); classes are feature pairs, so a concept (one feature's 8 block paths) is
not a class.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from netphys.recorder.graph import edge_contributions

N_FEAT, M, N_LAYERS, D, N_DIST = 4, 2, 3, 3, 4
WIDTH = N_FEAT * M + N_DIST
CLASSES = [(0, 1), (1, 2), (2, 3), (3, 0)]
RADIX = np.array([1, WIDTH, WIDTH**2])


def block(f: int) -> range:
    return range(f * M, (f + 1) * M)


def weights(gen: np.random.Generator, noise_free: bool):
    """Hidden weight matrices (out, in) and output weights of the planted network."""
    leak = (
        (lambda shape: np.zeros(shape))
        if noise_free
        else (lambda shape: gen.uniform(0, 0.02, shape))
    )
    ws = []
    for layer in range(N_LAYERS):
        n_in = N_FEAT * D if layer == 0 else WIDTH
        w = np.zeros((WIDTH, n_in))
        for f in range(N_FEAT):
            if layer == 0:
                w[f * M : (f + 1) * M, f * D : (f + 1) * D] = 1 / D
            else:
                w[f * M : (f + 1) * M, f * M : (f + 1) * M] = 1 / M
        w[N_FEAT * M :, :] = leak((N_DIST, n_in))  # into distractors
        if layer > 0:
            w[:, N_FEAT * M :] = np.maximum(
                w[:, N_FEAT * M :], leak((WIDTH, N_DIST))
            )  # out of them
        ws.append(w)
    wo = np.zeros((len(CLASSES), WIDTH))
    for c, feats in enumerate(CLASSES):
        for f in range(N_FEAT):
            wo[c, f * M : (f + 1) * M] = 1 / M if f in feats else -0.5 / M
        wo[c, N_FEAT * M :] = leak(N_DIST)
    return ws, wo


def inputs(gen: np.random.Generator, noise_free: bool, n_per_class: int = 50):
    xs, ys = [], []
    for c, feats in enumerate(CLASSES):
        for _ in range(n_per_class):
            x = np.zeros(N_FEAT * D) if noise_free else 0.05 * np.abs(gen.normal(size=N_FEAT * D))
            for f in feats:
                x[f * D : (f + 1) * D] = 1.0 if noise_free else 1 + 0.1 * gen.normal(size=D)
            xs.append(x)
            ys.append(c)
    return torch.tensor(np.array(xs)), np.array(ys)


class PlantedMLP(nn.Module):
    def __init__(self, ws, wo):
        super().__init__()
        mods = []
        for w in ws:
            lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
            lin.weight.data = torch.tensor(w)
            mods += [lin, nn.ReLU()]
        self.hidden = nn.Sequential(*mods)
        self.out = nn.Linear(WIDTH, len(CLASSES), bias=False)
        self.out.weight.data = torch.tensor(wo)

    def forward(self, x):
        return self.out(self.hidden(x))


MLP_LAYERS = ["hidden.1", "hidden.3", "hidden.5"]


class PlantedCNN(nn.Module):
    """The same blocks as channels of 3x3 convs (pad 1) on 8x8 maps; closed-form conv path."""

    def __init__(self, ws, wo):
        super().__init__()
        mods = []
        for w in ws:
            conv = nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1, bias=False)
            conv.weight.data = torch.tensor(w)[:, :, None, None].expand(-1, -1, 3, 3) / 9
            mods += [conv, nn.ReLU()]
        self.hidden = nn.Sequential(*mods)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.out = nn.Linear(WIDTH, len(CLASSES), bias=False)
        self.out.weight.data = torch.tensor(wo)

    def forward(self, x):
        return self.out(self.flat(self.pool(self.hidden(x))))


class Res(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
        self.lin.weight.data = torch.tensor(w)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(x + self.lin(x))


class PlantedResidual(nn.Module):
    """Layers 2..L are residual blocks recorded after the add (Jacobian fallback)."""

    def __init__(self, ws, wo):
        super().__init__()
        self.lin0 = nn.Linear(ws[0].shape[1], WIDTH, bias=False)
        self.lin0.weight.data = torch.tensor(ws[0])
        self.relu0 = nn.ReLU()
        self.res1, self.res2 = Res(ws[1]), Res(ws[2])
        self.out = nn.Linear(WIDTH, len(CLASSES), bias=False)
        self.out.weight.data = torch.tensor(wo)

    def forward(self, x):
        return self.out(self.res2(self.res1(self.relu0(self.lin0(x)))))


def planted_ids(y: np.ndarray) -> list[set[int]]:
    out = []
    for c in y:
        ids = set()
        for f in CLASSES[c]:
            for p in itertools.product(block(f), repeat=N_LAYERS):
                ids.add(int(np.dot(p, RADIX)))
        out.append(ids)
    return out


def concept_of(pid: int) -> int:
    nodes = [(pid // r) % WIDTH for r in RADIX]
    fs = {n // M if n < N_FEAT * M else -1 for n in nodes}
    return fs.pop() if len(fs) == 1 else -1


def run(kind: str, seed: int, noise_free: bool = False):
    gen = np.random.default_rng(seed)
    ws, wo = weights(gen, noise_free)
    x, y = inputs(gen, noise_free)
    if kind == "mlp":
        model, layers = PlantedMLP(ws, wo), MLP_LAYERS
    elif kind == "cnn":
        model, layers = PlantedCNN(ws, wo), ["hidden.1", "hidden.3", "hidden.5"]
        x = x[:, :, None, None].expand(-1, -1, 8, 8).clone()
    else:
        model, layers = PlantedResidual(ws, wo), ["relu0", "res1", "res2"]
    model = model.double().eval()
    contrib = edge_contributions(model, x, layers=layers, progress=False)
    return contrib, y
