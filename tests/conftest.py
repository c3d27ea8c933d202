"""Shared fixtures. Seeds come from NETPHYS_SEED (default 0), like sklearn's global_random_seed."""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import pytest

# the test process draws figures without a display; this does not reach notebook kernels
# (tests/test_tutorials.py runs them with the inline backend)
matplotlib.use("Agg")


@pytest.fixture
def seed() -> int:
    return int(os.environ.get("NETPHYS_SEED", "0"))


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def shared_data() -> str:
    """Folder of the real recordings: $NETPHYS_DATA, else ../shared/data beside the checkout."""
    from netphys.io import data_dir

    try:
        return str(data_dir())
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
