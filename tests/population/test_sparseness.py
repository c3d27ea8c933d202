"""Sparseness: planted 5% code, a slow loop implementation, labels, real data, bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from netphys.population import sparseness, sparseness_summary


def _planted(n_units: int = 200, n_frames: int = 400, k: int = 10, amp: float = 2.0):
    """Frame t drives units (k t + j) mod n_units, j < k: exactly k / n_units active per frame,
    and every unit is active in exactly k * n_frames / n_units frames."""
    x = np.zeros((n_frames, n_units))
    for t in range(n_frames):
        x[t, (k * t + np.arange(k)) % n_units] = amp
    return x


def test_planted_five_percent_closed_form() -> None:
    x = _planted()
    ds = sparseness(x)
    n_t, n_u = x.shape
    p = 0.05
    np.testing.assert_allclose(ds["fraction_active"].values, p)
    np.testing.assert_allclose(ds["fraction_frames_active"].values, p)
    # A = p for an on/off code of equal amplitudes, S = (1 - A) / (1 - 1/n)
    np.testing.assert_allclose(ds["population_sparseness"].values, (1 - p) / (1 - 1 / n_u))
    np.testing.assert_allclose(ds["lifetime_sparseness"].values, (1 - p) / (1 - 1 / n_t))
    # Bernoulli(p) excess kurtosis (1 - 6 p (1 - p)) / (p (1 - p)), scale-free
    kurt = (1 - 6 * p * (1 - p)) / (p * (1 - p))
    np.testing.assert_allclose(ds["population_kurtosis"].values, kurt, rtol=1e-9)
    np.testing.assert_allclose(ds["lifetime_kurtosis"].values, kurt, rtol=1e-9)


def test_dense_code_is_not_sparse() -> None:
    ds = sparseness(np.ones((30, 40)) * 3.0)
    np.testing.assert_allclose(ds["population_sparseness"].values, 0.0, atol=1e-12)
    np.testing.assert_allclose(ds["fraction_active"].values, 1.0)
    assert np.isnan(ds["lifetime_kurtosis"].values).all()  # constant units: undefined


def _slow(x: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    def vg(r: np.ndarray) -> float:
        n = len(r)
        if np.sum(r**2) == 0:
            return np.nan
        a = (np.sum(r) / n) ** 2 / (np.sum(r**2) / n)
        return (1 - a) / (1 - 1 / n)

    return {
        "lifetime_sparseness": np.array([vg(x[:, i]) for i in range(x.shape[1])]),
        "population_sparseness": np.array([vg(x[t]) for t in range(x.shape[0])]),
        "fraction_active": np.array([np.mean(x[t] > threshold) for t in range(x.shape[0])]),
        "fraction_frames_active": np.array(
            [np.mean(x[:, i] > threshold) for i in range(x.shape[1])]
        ),
        "lifetime_kurtosis": np.array([stats.kurtosis(x[:, i]) for i in range(x.shape[1])]),
        "population_kurtosis": np.array([stats.kurtosis(x[t]) for t in range(x.shape[0])]),
    }


@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_agrees_with_slow_loops_and_streams(rng: np.random.Generator, threshold: float) -> None:
    x = np.maximum(rng.standard_normal((230, 37)) + 0.3, 0) * rng.gamma(2.0, size=37)
    x[:, 3] = 0.0  # a silent unit
    slow = _slow(x, threshold)
    lazy = xr.DataArray(x, dims=("time", "unit")).chunk({"time": 50})
    for ds in (
        sparseness(x, threshold=threshold),
        sparseness(lazy, threshold=threshold, chunk_size=17),
    ):
        for name, expected in slow.items():
            np.testing.assert_allclose(
                ds[name].values, expected, rtol=1e-7, atol=1e-9, err_msg=name
            )
    assert np.isnan(slow["lifetime_sparseness"][3])


def test_keeps_session_layer_condition_labels() -> None:
    x = _planted(n_units=20, n_frames=40, k=2)
    da = xr.DataArray(
        x,
        dims=("time", "unit"),
        coords={
            "session": ("time", np.repeat([0, 1], 20)),
            "condition": ("time", np.tile(["stimulus", "spontaneous"], 20)),
            "layer": ("unit", np.repeat(["a", "b"], 10)),
        },
    )
    ds = sparseness(da)
    assert ds["population_sparseness"].dims == ("time",)
    assert ds["lifetime_sparseness"].dims == ("unit",)
    np.testing.assert_array_equal(ds["session"].values, da["session"].values)
    np.testing.assert_array_equal(ds["condition"].values, da["condition"].values)
    np.testing.assert_array_equal(ds["layer"].values, da["layer"].values)
    summ = sparseness_summary(da, by=("session", "layer"), condition="stimulus")
    assert summ["fraction_active"].dims == ("session", "layer")
    assert summ["n_frames"].sel(session=0, layer="a") == 10
    # within one layer of 10 units, 2 of 20 planted units per frame land in either half
    direct = sparseness(
        da.sel(time=(da.session == 1) & (da.condition == "stimulus"), unit=da.layer == "b")
    )
    assert float(summ["fraction_active"].sel(session=1, layer="b")) == pytest.approx(
        float(direct["fraction_active"].mean())
    )


def test_real_recordings(shared_data: str) -> None:
    from netphys.io.dataset import open_dataset

    spks = open_dataset(os.path.join(shared_data, "suite2p_pynapple_a0662", "suite2p"))["spks"]
    counts = open_dataset(os.path.join(shared_data, "ibl_brainbox_289units", "spikes.npz"))[
        "counts"
    ]
    for da in (spks, counts):
        ds = sparseness(da)
        frac = ds["fraction_active"].values
        assert ((frac >= 0) & (frac <= 1)).all()
        life = ds["lifetime_sparseness"].values
        assert np.nanmin(life) >= 0 and np.nanmax(life) <= 1
        assert ds.sizes["unit"] == da.sizes["unit"]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"sparseness\(\): `activity` must be non-negative"):
        sparseness(np.array([[1.0, -1.0], [0.0, 2.0]]))
    x = np.ones((5, 3))
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf \(first at sample 2\)"):
        sparseness(x)
    with pytest.raises(ValueError, match="holds values up to 1e"):
        sparseness(np.full((4, 3), 1e200))
    with pytest.raises(ValueError, match="must be 2-D"):
        sparseness(np.ones(5))
    with pytest.raises(ValueError, match="at least 2 units"):
        sparseness(np.ones((5, 1)))
    with pytest.raises(ValueError, match="`threshold` must be finite and >= 0"):
        sparseness(np.ones((5, 3)), threshold=-1)
    with pytest.raises(TypeError, match="`threshold` must be a number"):
        sparseness(np.ones((5, 3)), threshold="0")
    with pytest.raises(
        ValueError, match="`by` entry 'session' must be a coord along 'time' or 'unit'"
    ):
        sparseness_summary(np.ones((5, 3)), by=["session"])
