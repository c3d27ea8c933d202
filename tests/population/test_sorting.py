"""Tests of rastermap_sort."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.stats
import xarray as xr

from netphys.population import rastermap_sort


def sequence_population(rng: np.random.Generator, n_units: int = 120, n_time: int = 600):
    """Units fire in a travelling wave: unit i peaks at phase i / n_units; order shuffled."""
    t = np.arange(n_time)[:, None]
    phase = np.arange(n_units)[None, :] / n_units * 100
    x = np.exp(-0.5 * (((t - phase) % 100 - 50) / 4.0) ** 2)
    x += 0.05 * rng.standard_normal(x.shape)
    perm = rng.permutation(n_units)
    return x[:, perm], perm


def test_recovers_planted_sequence(rng: np.random.Generator) -> None:
    x, perm = sequence_population(rng)
    res = rastermap_sort(x, n_clusters=20, locality=0.5)
    true_pos = perm[res["order_index"].values]  # planted index of each unit, in sorted order
    # a circular sequence may be cut anywhere and read either way: use the best circular
    # shift; rank correlation > 0.9 means the wave is recovered up to reversal and rotation
    best = max(
        abs(scipy.stats.spearmanr(np.arange(len(true_pos)), (true_pos + s) % len(perm))[0])
        for s in range(0, len(perm), 5)
    )
    assert best > 0.9


def test_contract_and_silence(rng: np.random.Generator, capsys) -> None:
    x = xr.DataArray(
        rng.standard_normal((200, 60)),
        dims=("time", "unit"),
        coords={"unit": np.arange(1000, 1060), "pos_x": ("unit", np.arange(60.0))},
    )
    before = x.values.copy()
    root_handlers = list(logging.getLogger().handlers)
    res = rastermap_sort(x, rng=0)
    assert capsys.readouterr().out == ""  # rastermap's prints and logs are silenced
    assert logging.getLogger().handlers == root_handlers  # its basicConfig is undone
    np.testing.assert_array_equal(x.values, before)
    assert sorted(res["order"].values.tolist()) == list(range(1000, 1060))
    pos = res["position_of_unit"].values
    np.testing.assert_array_equal(res["order_index"].values[pos], np.arange(60))
    assert res["embedding"].dims == ("unit",)
    assert "pos_x" in res.coords
    xr.testing.assert_identical(res, rastermap_sort(x, rng=0))


@pytest.mark.parametrize(
    ("data", "kwargs", "match"),
    [
        (np.ones((100, 3)), {}, r"needs at least 4 units"),
        (np.full((100, 10), np.nan), {}, r"contains NaN or inf"),
        (np.ones((100, 10)), {"n_clusters": 50}, r"`n_clusters` must be <= 10"),
        (np.ones((10, 300)), {"n_clusters": 200}, r"`n_clusters` must be <= 199"),
        (np.ones((100, 10)), {"locality": -1.0}, r"`locality` must be finite and >= 0"),
    ],
)
def test_errors(data, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        rastermap_sort(data, **kwargs)
