"""The demo's network and data: a small CNN and scikit-learn's digits."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

__all__ = ["DEMO_LAYERS", "DemoCNN", "load_digits_split"]

#: Post-activation layers the demo records, in forward order.
DEMO_LAYERS = ["act1", "act2", "act3"]


class DemoCNN(nn.Module):
    """Conv(1->w)+BN+ReLU, Conv(w->2w)+BN+ReLU, MaxPool, Linear(32w->64)+ReLU, Linear(64->10).

    Parameters
    ----------
    width : int, default=16
        Channels of the first convolution (the second has twice as many).

    Examples
    --------
    >>> import torch
    >>> DemoCNN()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.act2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(2 * width * 16, 64)
        self.act3 = nn.ReLU()
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: Any) -> Any:
        """Return the logits of a batch of 8x8 images."""
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.pool(self.act2(self.bn2(self.conv2(x))))
        x = self.act3(self.fc1(self.flatten(x)))
        return self.fc2(x)


def load_digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load the digits (8x8, scaled to [0, 1]) split 50/50, stratified.

    Parameters
    ----------
    seed : int, default=0
        Seed of the split.

    Returns
    -------
    tuple of numpy.ndarray
        ``x_train, y_train, x_test, y_test``; images are float32 (n, 1, 8, 8).

    Examples
    --------
    >>> x_tr, y_tr, x_te, y_te = load_digits_split()
    >>> x_tr.shape, len(y_te)
    ((898, 1, 8, 8), 899)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[:, None]
    y = digits.target.astype("int64")
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.5, stratify=y, random_state=seed)
    return x_tr, y_tr, x_te, y_te


#: Trial-to-trial variability of the demo and continual recordings: spiking units (Poisson
#: counts at 20 Hz per unit of activity in 100 ms frames) on every recorded layer, so that
#: repeats differ like a mouse's and cvPCA/SVCA separate signal from noise.
DEMO_VARIABILITY: list[dict[str, Any]] = [{"kind": "poisson", "rate": 20.0, "frame_time": 0.1}]
