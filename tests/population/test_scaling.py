"""scaling_analysis: planted dimensionality, agreement with a direct SVCA call, errors, plot."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

from netphys.errors import FitRangeWarning
from netphys.plot import plot_scaling
from netphys.population import scaling_analysis, simulate_population, svca


def _planted(seed: int, n_units: int = 240, n_frames: int = 800, dims: int = 6) -> xr.DataArray:
    gen = np.random.default_rng(seed)
    latents = gen.normal(size=(n_frames, dims)) * np.linspace(3, 1.5, dims)
    x = latents @ gen.normal(size=(dims, n_units)) + gen.normal(size=(n_frames, n_units))
    return xr.DataArray(x, dims=("time", "unit"))


def test_recovers_planted_dimensionality(global_random_seed: int) -> None:
    res = scaling_analysis(
        _planted(global_random_seed), sizes=[240], n_repeats=1, n_components=20, block_length=20, rng=global_random_seed
    )
    assert int(res["n_significant"].sel(n_units=240)[0]) == 6


def test_more_units_more_reliable(global_random_seed: int) -> None:
    sim = simulate_population(400, 600, alpha=1.0, snr=0.5, n_latents=100, rng=global_random_seed)
    res = scaling_analysis(
        sim["activity"], sizes=[40, 400], n_repeats=2, n_components=40, block_length=20,
        n_null=0, rng=global_random_seed,
    )
    frac = res["reliable_fraction_mean"].values
    n_sig = res["n_significant_mean"].values
    assert frac[1] > frac[0]
    assert n_sig[1] > n_sig[0]


def test_full_field_equals_direct_svca(global_random_seed: int) -> None:
    da = _planted(global_random_seed, n_units=60, n_frames=400)
    gen = np.random.default_rng(global_random_seed)
    da = da.assign_coords(pos_x=("unit", gen.uniform(size=60)), pos_y=("unit", gen.uniform(size=60)))
    res = scaling_analysis(
        da, sizes=[60], n_repeats=1, n_components=10, n_null=0, block_length=20,
        split="random", rng=global_random_seed,
    )
    assert res.attrs["sampling"] == "field_of_view"
    with pytest.warns(FitRangeWarning):  # scaling_analysis itself does not warn: alpha unused
        ref = svca(
            da.values, n_components=10, block_length=20, split="random", rng=global_random_seed
        )
    np.testing.assert_allclose(
        res["reliable_variance"].values[0, 0], ref["reliable_variance"].values, rtol=1e-10
    )
    direct = float(ref["reliable_variance"].sum() / ref["total_variance"].sum())
    assert float(res["reliable_fraction"][0, 0]) == pytest.approx(direct, rel=1e-10)
    assert isinstance(plot_scaling(res), Figure)


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"sizes": [4]}, ValueError, r"scaling_analysis\(\): `sizes` must be >= 8"),
        ({"sizes": [500]}, ValueError, r"`sizes` must be <= 60"),
        ({"sampling": "field_of_view"}, ValueError, r"needs unit coords pos_x and pos_y"),
        ({"sampling": "grid"}, ValueError, r"`sampling` must be one of"),
        ({"n_repeats": 0}, ValueError, r"`n_repeats` must be >= 1"),
    ],
)
def test_errors(kwargs: dict, err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        scaling_analysis(np.zeros((100, 60)), **kwargs)


def test_nan_error() -> None:
    x = np.random.default_rng(0).normal(size=(100, 20))
    x[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"scaling_analysis\(\): `activity` contains NaN"):
        scaling_analysis(x, sizes=[20], block_length=10)


def test_plot_rejects_other_results() -> None:
    with pytest.raises(ValueError, match=r"plot_scaling\(\): `result` must be"):
        plot_scaling(xr.Dataset())
