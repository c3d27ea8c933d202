"""Shared fixtures. Seeds come from NETPHYS_SEED (default 0), like sklearn's global_random_seed."""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# the test process draws figures without a display; this does not reach notebook kernels
# (tests/test_tutorials.py runs them with the inline backend)
matplotlib.use("Agg")

# Property tests: the "ci" profile (default) is derandomized, so CI runs the same examples every
# time; "dev" explores more and new examples each run: HYPOTHESIS_PROFILE=dev pytest -m property
settings.register_profile(
    "ci", max_examples=12, derandomize=True, deadline=None, print_blob=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
settings.register_profile("dev", max_examples=200, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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
