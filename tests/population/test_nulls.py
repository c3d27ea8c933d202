"""Tests of the circular-shift correlation null."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from netphys.errors import NetphysWarning
from netphys.population import shuffle_null, simulate_population


def test_false_positive_rate_near_nominal(rng: np.random.Generator) -> None:
    x = rng.standard_normal((3000, 150))  # independent units
    res = shuffle_null(x, min_shift=500, significance=0.05, rng=rng)
    # 11,175 pairs, nominal 5 %: binomial sd 0.2 %, plus the error of the null's own
    # quantiles from the same number of pairs; 3-7 % leaves >5 sd of both
    assert 0.03 < float(res["fraction_significant"]) < 0.07
    assert float(res["spread_ratio"]) == pytest.approx(1.0, abs=0.1)


def test_detects_correlated_population(rng: np.random.Generator) -> None:
    sim = simulate_population(100, 3000, alpha=1.0, snr=1.0, timescale=2.0, rng=rng)
    res = shuffle_null(sim["activity"], min_shift=500, rng=rng)
    # shared latents at SNR 1 make real correlations far wider than the shifted null
    assert float(res["spread_ratio"]) > 1.5
    assert float(res["fraction_significant"]) > 0.3


def test_agrees_with_direct_computation(rng: np.random.Generator) -> None:
    x = rng.standard_normal((400, 12)).cumsum(axis=0)
    res = shuffle_null(x, min_shift=50, bins=np.linspace(-1, 1, 41), rng=3)
    shifts = res["shift"].values
    shifted = np.column_stack([np.roll(x[:, j], shifts[j]) for j in range(12)])
    full = np.corrcoef(np.column_stack([x, shifted]).T)
    iu = np.triu_indices(12, k=1)
    real = np.corrcoef(x.T)[iu]
    null = full[:12, 12:][iu]  # unit i (original) with unit j (shifted), i < j
    # z-scored products vs np.corrcoef: agreement to float rounding
    np.testing.assert_allclose(
        res["real_percentiles"], np.percentile(real, [2.5, 5, 50, 95, 97.5]), rtol=1e-6
    )
    np.testing.assert_allclose(
        res["null_percentiles"], np.percentile(null, [2.5, 5, 50, 95, 97.5]), rtol=1e-6
    )
    np.testing.assert_array_equal(res["real_count"], np.histogram(real, np.linspace(-1, 1, 41))[0])
    assert float(res["real_mean"]) == pytest.approx(real.mean(), rel=1e-6)
    assert np.all((shifts >= 50) & (shifts <= 350))


def test_contract(rng: np.random.Generator) -> None:
    x = xr.DataArray(
        rng.standard_normal((500, 30)), dims=("time", "unit"), coords={"unit": np.arange(100, 130)}
    )
    before = x.values.copy()
    res = shuffle_null(x, min_shift=100, max_units=20, rng=4)
    np.testing.assert_array_equal(x.values, before)
    assert res.sizes["unit"] == 20
    assert int(res["n_pairs"]) == 190
    assert set(res["unit"].values) <= set(range(100, 130))
    xr.testing.assert_identical(res, shuffle_null(x, min_shift=100, max_units=20, rng=4))
    assert res["real_count"].dims == ("bin",)
    assert res["bin_edge"].sizes["edge"] == 401


def test_constant_unit_warns(rng: np.random.Generator) -> None:
    x = rng.standard_normal((300, 5))
    x[:, 2] = 1.0
    with pytest.warns(NetphysWarning, match=r"shuffle_null\(\): dropped 1 constant unit"):
        res = shuffle_null(x, min_shift=50, rng=0)
    assert int(res["n_dropped"]) == 1
    assert int(res["n_pairs"]) == 6


@pytest.mark.parametrize(
    ("data", "kwargs", "match"),
    [
        (
            np.ones((1500, 5)),
            {},
            r"1500 samples along 'time', too short for `min_shift`=1000 "
            r"\(needs at least 2 \* min_shift = 2000\). Lower `min_shift` \(e.g. min_shift=375\)",
        ),
        (np.full((300, 5), np.nan), {"min_shift": 10}, r"contains NaN or inf"),
        (np.ones((300, 5)), {"min_shift": 0}, r"`min_shift` must be >= 1"),
        (np.ones((300, 5)), {"min_shift": 10, "bins": [0.5, 0.1]}, r"`bins` must be increasing"),
        (np.ones((300, 5)), {"min_shift": 10, "significance": 1.5}, r"`significance` must be in"),
    ],
)
def test_errors(data, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        shuffle_null(data, **kwargs)


def test_dask_input_is_computed_blockwise_with_the_same_result(rng: np.random.Generator, capsys):
    dsa = pytest.importorskip("dask.array")
    x = rng.standard_normal((400, 12)).cumsum(axis=0)
    ref = shuffle_null(x, min_shift=50, rng=3)
    lazy = xr.DataArray(dsa.from_array(x, chunks=(50, 5)), dims=("time", "unit"))
    res = shuffle_null(lazy, min_shift=50, rng=3, progress=True)
    assert "shuffle_null" in capsys.readouterr().err  # the progress bar over the tasks
    for name in ("shift", "real_count", "null_count", "n_pairs"):
        np.testing.assert_array_equal(res[name], ref[name])
    np.testing.assert_allclose(res["null_percentiles"], ref["null_percentiles"], rtol=1e-10)
    bad = lazy.copy(data=dsa.where(dsa.arange(400)[:, None] == 321, np.nan, lazy.data))
    with pytest.raises(ValueError, match=r"shuffle_null\(\): `activity` contains NaN or inf"):
        shuffle_null(bad, min_shift=50)
