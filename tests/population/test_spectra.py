"""Tests of eigenspectrum, correlation_matrix and category_autocorrelation."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from netphys.errors import NetphysWarning
from netphys.population import (
    category_autocorrelation,
    correlation_matrix,
    eigenspectrum,
    simulate_population,
)


def to_zarr(da: xr.DataArray, path, chunks: dict) -> xr.DataArray:
    da.chunk(chunks).to_dataset(name="a").to_zarr(path, zarr_format=3, consolidated=False)
    return xr.open_zarr(path, consolidated=False)["a"]


@pytest.mark.parametrize("shape", [(300, 40), (40, 300)])  # units < samples, units > samples
def test_eigenspectrum_agrees_with_numpy(shape, rng: np.random.Generator) -> None:
    x = rng.standard_normal(shape) @ np.diag(np.linspace(2, 0.1, shape[1])) + 5.0
    res = eigenspectrum(x, fit_range=(2, 20))
    k = min(shape[0] - 1, shape[1])
    expected = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1][:k]
    # covariance (or Gram) in float64 vs np.cov: agreement to 1e-6 relative
    np.testing.assert_allclose(res["variance"], expected, rtol=1e-6)
    assert float(res["total_variance"]) == pytest.approx(np.trace(np.cov(x.T)), rel=1e-9)


@pytest.mark.parametrize("alpha", [0.8, 1.0, 1.5])
def test_eigenspectrum_recovers_alpha(alpha: float, global_random_seed: int) -> None:
    sim = simulate_population(
        400, 4000, alpha=alpha, snr=1000.0, n_latents=200, category_strength=0.0, rng=global_random_seed
    )
    res = eigenspectrum(sim["activity"], fit_range=(5, 50))
    # noise floor 1e-3 below unit signal variance: components 5-50 sit well above it; sample
    # covariance of 4000 samples for 200 latents biases eigenvalues by ~sqrt(200/4000)
    assert float(res["alpha"]) == pytest.approx(alpha, abs=0.1)


@pytest.mark.parametrize("shape", [(300, 40), (40, 300)])
def test_eigenspectrum_streamed_equals_in_memory(shape, rng, tmp_path) -> None:
    da = xr.DataArray(rng.standard_normal(shape), dims=("time", "unit"))
    lazy = to_zarr(da, tmp_path / "a.zarr", {"time": 37, "unit": 17})
    mem, streamed = eigenspectrum(da), eigenspectrum(lazy)
    # chunked float64 accumulation in another order: equal to rounding
    np.testing.assert_allclose(streamed["variance"], mem["variance"], rtol=1e-9)


def test_correlation_matrix(rng: np.random.Generator, tmp_path) -> None:
    x = rng.standard_normal((200, 6)) + 100.0
    x[:, 1] += 2 * x[:, 0]
    da = xr.DataArray(x, dims=("time", "unit"), coords={"unit": np.arange(10, 16)})
    res = correlation_matrix(da)
    # shifted float64 accumulation vs np.corrcoef: agreement to 1e-6
    np.testing.assert_allclose(res["correlation"], np.corrcoef(x.T), rtol=1e-6, atol=1e-12)
    assert res["correlation"].dims == ("unit", "unit_b")
    assert res["unit"].values.tolist() == list(range(10, 16))
    lazy = to_zarr(da, tmp_path / "c.zarr", {"time": 50})
    np.testing.assert_allclose(
        correlation_matrix(lazy)["correlation"], res["correlation"], rtol=1e-9, atol=1e-12
    )
    x2 = x.copy()
    x2[:, 3] = 7.0
    with pytest.warns(NetphysWarning, match=r"correlation_matrix\(\): dropped 1 constant"):
        res2 = correlation_matrix(x2)
    assert res2.sizes["unit"] == 5
    assert int(res2["n_dropped"]) == 1
    with pytest.raises(ValueError, match=r"6 units exceed `max_units`=3"):
        correlation_matrix(x, max_units=3)


def test_category_autocorrelation_direct(rng: np.random.Generator) -> None:
    sim = simulate_population(60, 150, n_categories=3, category_strength=0.5, rng=rng)
    res = category_autocorrelation(sim["activity"], n_components=10)
    x = sim["activity"].values - sim["activity"].values.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    proj = x @ vt[:10].T
    unit = proj / np.linalg.norm(proj, axis=1, keepdims=True)
    c = unit @ unit.T  # sample x sample cosine similarity of projection vectors
    lab = sim["label"].values
    cats = np.unique(lab)
    expected = np.empty((3, 3))
    for i, a in enumerate(cats):
        for j, b in enumerate(cats):
            block = c[np.ix_(lab == a, lab == b)]
            expected[i, j] = (block.sum() - (np.trace(block) if a == b else 0)) / (
                block.size - (len(block) if a == b else 0)
            )
    # explicit T x T matrix vs the category-sum identity: equal to rounding
    np.testing.assert_allclose(res["category_correlation"], expected, rtol=1e-6)


def test_category_autocorrelation_recovery(rng: np.random.Generator) -> None:
    strong = simulate_population(100, 600, n_categories=4, category_strength=0.8, rng=rng)
    none = simulate_population(100, 600, n_categories=4, category_strength=0.0, rng=rng)
    # planted category means vs none: a large index vs ~0 (600 samples, 4 categories)
    assert float(category_autocorrelation(strong["activity"])["index"]) > 0.3
    assert abs(float(category_autocorrelation(none["activity"])["index"])) < 0.05


@pytest.mark.parametrize(
    ("func", "args", "match"),
    [
        (eigenspectrum, (np.ones((10, 5)),), None),
        (eigenspectrum, (np.full((10, 5), np.nan),), r"eigenspectrum\(\): `activity` contains"),
        (
            category_autocorrelation,
            (np.ones((10, 5)), np.zeros(3)),
            r"`labels` must hold one value per sample \(10\); got shape \(3,\)",
        ),
        (category_autocorrelation, (np.ones((10, 5)),), r"`labels`='label' names no coord"),
        (
            category_autocorrelation,
            (np.random.default_rng(0).random((10, 5)), np.zeros(10)),
            r"needs at least two categories",
        ),
    ],
)
def test_errors(func, args, match) -> None:
    if match is None:
        with pytest.raises(ValueError, match=r"`n_components`=9 exceeds min\(units=5"):
            func(*args, n_components=9)
        return
    with pytest.raises(ValueError, match=match):
        func(*args)
