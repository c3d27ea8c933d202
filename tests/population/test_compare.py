"""compare: matched sizes, planted differences, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from netphys.population import compare
from netphys.population._simulate import simulate_population


@pytest.fixture(scope="module")
def pair():
    a = simulate_population(120, 1200, alpha=1.0, snr=5.0, timescale=5.0, rng=1)["activity"]
    b = simulate_population(150, 1500, alpha=2.0, snr=5.0, timescale=5.0, rng=2)["activity"]
    return a, b


def test_matched_sizes_and_schema(pair):
    a, b = pair
    res = compare(a, b, labels=("model", "mouse"), sort=False, n_boot=0, rng=0)
    assert list(res.recording.values) == ["model", "mouse"]
    assert res["n_units"].values.tolist() == [120, 120]  # the smaller population
    assert res["n_frames"].values.tolist() == [1200, 1200]
    assert res.attrs["n_units"] == 120
    assert res.attrs["n_frames"] == 1200
    assert res.raster.dims == ("recording", "raster_unit", "raster_time")
    assert res.raster.shape == (2, 120, 500)
    assert res.eigen_variance.dims == ("recording", "component")
    assert res.corr_real.dims == ("recording", "corr_bin")
    np.testing.assert_allclose(res.corr_real.sum("corr_bin"), 1.0)
    json.dumps(res.attrs)  # attrs are JSON-safe
    small = compare(a, b, n_units=40, n_frames=300, sort=False, n_boot=0, rng=0)
    assert small.raster.shape == (2, 40, 300)


def test_planted_exponents_are_ordered(pair):
    a, b = pair
    res = compare(a, b, sort=False, n_boot=0, rng=0)
    # planted alpha 1 vs 2: the cross-validated SVCA exponent follows (measured 1.37 vs 2.22);
    # the plain eigenspectrum does not have to (its tail is the noise floor, see eigenspectrum)
    assert float(res.svca_alpha[1]) > float(res.svca_alpha[0]) + 0.3
    assert float(res.participation_ratio[1]) < float(res.participation_ratio[0])
    # correlated populations: real correlations spread wider than their shuffle null
    assert (res.corr_spread_ratio > 1.5).all()


def test_same_recording_gives_same_measures(pair, rng):
    a, _ = pair
    scaled = a * rng.uniform(0.5, 3.0, a.sizes["unit"]) + 7.0  # z-scoring removes unit scales
    res = compare(a, scaled, sort=False, n_boot=0, rng=5)
    for key in ("svca_alpha", "eigen_alpha", "participation_ratio", "corr_mean"):
        np.testing.assert_allclose(res[key][0], res[key][1], rtol=1e-6, atol=1e-9)


def test_deterministic_and_inputs_untouched(pair):
    a, b = pair
    a0 = a.copy(deep=True)
    r1 = compare(a, b, n_units=30, n_frames=400, sort=False, rng=3)
    r2 = compare(a, b, n_units=30, n_frames=400, sort=False, rng=3)
    xr.testing.assert_identical(r1, r2)
    xr.testing.assert_identical(a, a0)


def test_sparsity_measures():
    rng = np.random.default_rng(0)
    dense = rng.uniform(1, 2, (400, 20))
    sparse = rng.exponential(size=(400, 20)) * (rng.random((400, 20)) < 0.05)
    res = compare(dense, sparse, sort=False, n_boot=0, rng=0)
    assert float(res.sparsity[1]) > 0.8 > 0.1 > float(res.sparsity[0])
    assert float(res.fraction_zero[1]) > 0.9
    assert float(res.fraction_zero[0]) == 0.0


def test_errors(pair):
    a, b = pair
    with pytest.raises(ValueError, match=r"compare\(\): `n_units`=500.*ask for 8 to 120"):
        compare(a, b, n_units=500)
    with pytest.raises(ValueError, match=r"compare\(\): `n_frames`=5000.*ask for 16 to 1200"):
        compare(a, b, n_frames=5000)
    with pytest.raises(ValueError, match=r"`labels` must be two different names"):
        compare(a, b, labels=("x", "x"))
    with pytest.raises(TypeError, match=r"compare\(\): `b` must be"):
        compare(a, {"x": 1})
    with pytest.raises(TypeError, match=r"compare\(\): `a` is a path.*compare_recordings"):
        compare("some/folder", b)


def _shared_geometry(n_units: int, noise: float, seed: int) -> xr.DataArray:
    """Stimuli 0..59 shown twice; responses read out one planted 5-d stimulus geometry."""
    rng = np.random.default_rng(42)
    z = rng.standard_normal((60, 5)) * np.array([3, 2, 1.5, 1, 0.5])
    own = np.random.default_rng(seed)
    sig = z @ own.standard_normal((5, n_units))
    frames = np.concatenate([sig + noise * own.standard_normal(sig.shape) for _ in range(2)])
    return xr.DataArray(
        frames,
        dims=("time", "unit"),
        coords={"stimulus": ("time", np.tile(np.arange(60), 2)),
                "repeat": ("time", np.repeat([0, 1], 60))},
    )  # fmt: skip


def test_similarity_intervals_and_caveats():
    a, b = _shared_geometry(90, 2.0, 1), _shared_geometry(120, 2.0, 2)
    res = compare(a, b, sort=False, n_boot=4, rng=0)
    # a planted shared geometry: RSA reaches its split-half noise ceiling
    assert 0.3 < float(res["rsa_ceiling"]) < 1.0
    assert float(res["rsa_normalised"]) == pytest.approx(1.0, abs=0.15)
    assert float(res["cka_normalised"]) == pytest.approx(1.0, abs=0.15)
    low, high = res["rsa_ci"].values
    assert low <= high
    assert res["svca_alpha_ci"].dims == ("recording", "bound")
    assert np.all(np.isfinite(res["corr_mean_ci"].values))
    caveats = " ".join(res.attrs["caveats"])
    assert "fewer than 100" in caveats  # 90 units
    assert "not the papers' 11..500" in caveats
    assert "N=90" in res.attrs["matching"]
    json.dumps(res.attrs)
    # without shared stimuli there is no RSA, and the caveat says why
    plain = compare(a.drop_vars(["stimulus", "repeat"]), b, sort=False, n_boot=0, rng=0)
    assert "rsa" not in plain
    assert "do not share stimulus ids" in " ".join(plain.attrs["caveats"])
