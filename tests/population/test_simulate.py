"""Tests of simulate_population: planted spectrum, SNR, categories, behaviour, contract."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from netphys.population import simulate_population


def test_planted_spectrum_is_exact_in_unit_space(rng: np.random.Generator) -> None:
    sim = simulate_population(200, 3000, alpha=1.2, n_latents=50, category_strength=0.0, rng=rng)
    sig = sim["signal"].values
    lat = sim["latents"].values
    ev_signal = np.sort(np.linalg.eigvalsh(np.cov(sig.T)))[::-1][:50]
    ev_latent = np.sort(np.linalg.eigvalsh(np.cov(lat.T)))[::-1]
    # orthonormal loadings scaled by sqrt(N): unit-space eigenvalues are N x latent ones
    np.testing.assert_allclose(ev_signal / 200, ev_latent, rtol=1e-8)
    lam = sim["latent_variance"].values
    np.testing.assert_allclose(lam, np.arange(1, 51) ** -1.2 / np.sum(np.arange(1, 51) ** -1.2))
    # sample variance of each latent vs planted: 3000 samples, relative sd sqrt(2/3000)=2.6 %
    np.testing.assert_allclose(lat.var(axis=0), lam, rtol=0.15)


def test_snr(rng: np.random.Generator) -> None:
    sim = simulate_population(300, 4000, snr=4.0, rng=rng)
    noise = (sim["activity"] - sim["signal"]).values
    # mean unit signal variance 1, noise variance 1/snr; 1.2M noise samples: tight
    assert noise.var() == pytest.approx(0.25, rel=0.02)
    assert sim["signal"].values.var(axis=0).mean() == pytest.approx(1.0, rel=0.1)


def test_behaviour_is_the_planted_linear_map(rng: np.random.Generator) -> None:
    sim = simulate_population(50, 500, behaviour_rank=3, behaviour_noise=0.0, rng=rng)
    lat = sim["latents"].values[:, :3]
    np.testing.assert_allclose(
        sim["behaviour"].values, lat @ sim["behaviour_map"].values, rtol=1e-10
    )
    assert np.linalg.matrix_rank(sim["behaviour"].values) == 3


def test_repeats_share_signal_not_noise(rng: np.random.Generator) -> None:
    sim = simulate_population(20, 30, n_repeats=3, rng=rng)
    act, sig = sim["activity"], sim["signal"]
    assert act.sizes["time"] == 90
    r = sim["repeat"].values
    np.testing.assert_array_equal(sig.values[r == 0], sig.values[r == 2])
    assert not np.allclose(act.values[r == 0], act.values[r == 2])
    np.testing.assert_array_equal(sim["stimulus"].values[r == 1], np.arange(30))


def test_categories_shape_latents(rng: np.random.Generator) -> None:
    sim = simulate_population(30, 2000, n_categories=4, category_strength=0.9, rng=rng)
    lat = sim["latents"].values
    labels = sim["label"].values
    between = np.var([lat[labels == c].mean(0) for c in range(4)], axis=0).sum()
    # 90 % of latent variance is category means: between-category variance dominates
    assert between / lat.var(axis=0).sum() > 0.5


def test_contract(rng: np.random.Generator) -> None:
    a = simulate_population(40, 100, rng=5, timescale=3.0, dtype=np.float32)
    b = simulate_population(40, 100, rng=5, timescale=3.0, dtype=np.float32)
    xr.testing.assert_identical(a, b)
    assert a["activity"].dtype == np.float32
    assert {"pos_x", "pos_y", "label"} <= set(a.coords)
    assert a.attrs["alpha"] == 1.0
    lag1 = np.corrcoef(a["latents"].values[:-1, 0], a["latents"].values[1:, 0])[0, 1]
    assert lag1 > 0.4  # AR(1) with timescale 3: expected exp(-1/3) = 0.72


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_units": 0}, r"`n_units` must be >= 1"),
        ({"snr": 0.0}, r"`snr` must be finite and > 0"),
        ({"n_latents": 500}, r"`n_latents` must be <= 50"),
        ({"category_strength": 2.0}, r"`category_strength` must be in \[0, 1\]"),
        ({"sample_dim": "frames"}, r"`sample_dim` must be one of"),
        ({"behaviour_rank": 0}, r"`behaviour_rank` must be >= 1"),
    ],
)
def test_errors(kwargs, match) -> None:
    args = {"n_units": 50, "n_samples": 100, **kwargs}
    with pytest.raises(ValueError, match=match):
        simulate_population(**args)
