"""Shared fixtures.

One seed fixture, ``global_random_seed`` (the idea of scikit-learn's): tests that use it must
pass for any seed. CI runs seed 0; ``NETPHYS_TESTS_GLOBAL_RANDOM_SEED`` picks others:
``any`` (one random seed in 0-99, printed in the test id), ``all`` (0-99), ``40-42`` (a range)
or ``7`` (one seed). ``rng`` is a Generator seeded from it.
"""

from __future__ import annotations

import os
import random

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


def _global_random_seeds() -> list[int]:
    spec = os.environ.get("NETPHYS_TESTS_GLOBAL_RANDOM_SEED", "0").strip()
    if spec == "any":
        return [random.Random().randrange(100)]
    if spec == "all":
        return list(range(100))
    if "-" in spec:
        start, stop = (int(v) for v in spec.split("-", 1))
        return list(range(start, stop + 1))
    return [int(spec)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every test that asks for ``global_random_seed`` over the chosen seeds."""
    if "global_random_seed" in metafunc.fixturenames:
        seeds = _global_random_seeds()
        metafunc.parametrize("global_random_seed", seeds, ids=[f"seed{s}" for s in seeds])


@pytest.fixture
def rng(global_random_seed: int) -> np.random.Generator:
    """A Generator seeded with ``global_random_seed``."""
    return np.random.default_rng(global_random_seed)


@pytest.fixture(scope="session")
def shared_data() -> str:
    """Folder of the real recordings: $NETPHYS_DATA, else ../shared/data beside the checkout."""
    from netphys.io import data_dir

    try:
        return str(data_dir())
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
