"""Shared fixtures. Seeds come from NETPHYS_SEED (default 0), like sklearn's global_random_seed."""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")


@pytest.fixture
def seed() -> int:
    return int(os.environ.get("NETPHYS_SEED", "0"))


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def shared_data() -> str:
    """Path of the real recordings in ../shared/data (beside the checkout)."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.normpath(os.path.join(here, "..", "..", "shared", "data"))
    if not os.path.isdir(path):
        pytest.skip(f"shared data folder not found at {path}")
    return path
