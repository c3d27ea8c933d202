"""Weight spectra: MP null, planted spikes (BBP), power-law recovery, slow versions, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from netphys.population import fit_power_law_tail, weight_spectra, weight_spectrum
from netphys.population._weights import mp_median


def test_random_gaussian_has_no_spikes_and_a_light_tail(rng: np.random.Generator) -> None:
    n, m, sigma = 800, 400, 0.05
    ds = weight_spectrum(rng.normal(0, sigma, (n, m)))
    assert int(ds["n_spikes"]) == 0
    assert float(ds["sigma2"]) == pytest.approx(sigma**2, rel=0.03)
    edge = sigma**2 * (1 + np.sqrt(m / n)) ** 2
    assert float(ds["mp_edge"]) == pytest.approx(edge, rel=0.03)
    assert float(ds["lambda_max"]) == pytest.approx(edge, rel=0.05)
    # Martin & Mahoney: random-like layers fit alpha > ~6 (a light, MP-like tail)
    assert float(ds["alpha"]) > 4.5


def test_false_spike_rate_of_random_matrices_is_small() -> None:
    """The Tracy-Widom margin (99th percentile) keeps finite-size false spikes rare."""
    hits = [
        int(weight_spectrum(np.random.default_rng(s).standard_normal((120, 60)))["n_spikes"] > 0)
        for s in range(60)
    ]
    assert np.mean(hits) <= 0.07


@pytest.mark.parametrize("k", [1, 3])
def test_planted_rank_k_above_bbp_gives_k_spikes(rng: np.random.Generator, k: int) -> None:
    n, m = 600, 300
    c = m / n
    u = np.linalg.qr(rng.standard_normal((n, k)))[0]
    v = np.linalg.qr(rng.standard_normal((m, k)))[0]
    # BBP threshold for X = G / sqrt(N): a singular value theta > c^(1/4) leaves the bulk
    theta = np.linspace(2.0, 3.0, k) * c**0.25 * np.sqrt(n)
    w = rng.standard_normal((n, m)) + (u * theta) @ v.T
    ds = weight_spectrum(w)
    assert int(ds["n_spikes"]) == k
    # and below the threshold, nothing separates
    weak = rng.standard_normal((n, m)) + (u * 0.5 * c**0.25 * np.sqrt(n)) @ v.T
    assert int(weight_spectrum(weak)["n_spikes"]) == 0
    # spikes do not move the robust scale estimate
    assert float(ds["sigma2"]) == pytest.approx(1.0, rel=0.05)


def test_power_law_exponent_recovered(rng: np.random.Generator) -> None:
    for alpha in (2.0, 3.5):
        x = 0.7 * (1 - rng.random(4000)) ** (-1 / (alpha - 1))  # Pareto, xmin 0.7
        fit = fit_power_law_tail(x)
        assert float(fit["alpha"]) == pytest.approx(alpha, abs=0.1)
        # any xmin above the true one also bounds a power law, so KS may pick a higher one
        assert float(fit["xmin"]) >= 0.7


def test_heavy_tailed_weights_have_heavier_tail_than_gaussian(rng: np.random.Generator) -> None:
    gauss = weight_spectrum(rng.standard_normal((500, 250)))
    heavy = weight_spectrum(rng.standard_t(1.5, size=(500, 250)))
    assert float(heavy["alpha"]) < 3.0 < float(gauss["alpha"])


def _slow_tail(x: np.ndarray) -> tuple[float, float]:
    """Clauset et al.: for each candidate xmin the MLE alpha and the KS distance, pick min D."""
    x = np.sort(x)
    best = (np.inf, np.nan, np.nan)
    for xmin in np.unique(x)[:-1]:
        tail = x[x >= xmin]
        n = len(tail)
        alpha = 1 + n / np.sum(np.log(tail / xmin))
        model = 1 - (tail / xmin) ** (1 - alpha)
        emp = np.arange(n) / n
        d = np.max(np.abs(model - emp))
        if d < best[0]:
            best = (d, alpha, xmin)
    return best[1], best[2]


def test_agrees_with_slow_implementation(rng: np.random.Generator) -> None:
    w = rng.standard_t(3, size=(150, 90))
    ds = weight_spectrum(w)
    eig = np.sort(np.linalg.eigvalsh(w.T @ w / 150))[::-1]
    np.testing.assert_allclose(ds["eigenvalue"].values, eig, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        float(ds["stable_rank"]), np.linalg.norm(w, "fro") ** 2 / np.linalg.norm(w, 2) ** 2
    )
    alpha, xmin = _slow_tail(eig)
    assert float(ds["xmin"]) == pytest.approx(xmin)
    assert float(ds["alpha"]) == pytest.approx(alpha, rel=1e-6)
    # a wide matrix is the same as its transpose
    np.testing.assert_allclose(weight_spectrum(w.T)["eigenvalue"].values, eig, rtol=1e-9)
    # the MP median from the density, by direct integration of a fine grid
    ratio = 90 / 150
    lo, hi = (1 - np.sqrt(ratio)) ** 2, (1 + np.sqrt(ratio)) ** 2
    grid = np.linspace(lo, hi, 200001)
    dens = np.sqrt(np.maximum((hi - grid) * (grid - lo), 0)) / (2 * np.pi * ratio * grid)
    cdf = integrate.cumulative_trapezoid(dens, grid, initial=0)
    assert mp_median(ratio) == pytest.approx(grid[np.searchsorted(cdf, 0.5)], abs=1e-4)


def test_weight_spectra_rows_per_layer_and_session(rng: np.random.Generator) -> None:
    mats = {"a": rng.standard_normal((40, 20)), "b": rng.standard_normal((30, 60))}
    ds = weight_spectra({0: mats, 3: {k: 2 * v for k, v in mats.items()}})
    assert ds["alpha"].dims == ("session", "layer")
    assert ds.sizes["component"] == 30
    one = weight_spectrum(mats["a"])
    np.testing.assert_allclose(
        ds["eigenvalue"].sel(session=0, layer="a").values[:20], one["eigenvalue"].values
    )
    assert np.isnan(ds["eigenvalue"].sel(session=0, layer="a").values[20:]).all()
    # scaling the weights scales sigma2 and the eigenvalues, not the exponent or spike count
    assert float(ds["sigma2"].sel(session=3, layer="b")) == pytest.approx(
        4 * float(ds["sigma2"].sel(session=0, layer="b"))
    )
    assert float(ds["alpha"].sel(session=3, layer="b")) == pytest.approx(
        float(ds["alpha"].sel(session=0, layer="b")), rel=1e-6
    )


def test_bad_input() -> None:
    with pytest.raises(
        ValueError, match=r"weight_spectrum\(\): `weights` must be 2-D .* got shape \(4, 3, 3, 3\)"
    ):
        weight_spectrum(np.ones((4, 3, 3, 3)))
    with pytest.raises(ValueError, match="`weights` is empty"):
        weight_spectrum(np.ones((0, 5)))
    w = np.ones((5, 4))
    w[1, 1] = np.nan
    with pytest.raises(ValueError, match="holds 1 NaN or inf"):
        weight_spectrum(w)
    with pytest.raises(ValueError, match=r"weights\['fc'\]` holds 1 NaN"):
        weight_spectra({"fc": w})
    with pytest.raises(ValueError, match=r"`weights\['big'\]` holds values up to 1e"):
        weight_spectra({"big": np.full((3, 3), 1e200)})
    with pytest.raises(ValueError, match="non-empty mapping"):
        weight_spectra({})
    with pytest.raises(ValueError, match="same layers"):
        weight_spectra({0: {"a": np.ones((3, 3))}, 1: {"b": np.ones((3, 3))}})
    with pytest.raises(ValueError, match="`sigma2` must be finite and > 0"):
        weight_spectrum(np.eye(3), sigma2=-1.0)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        fit_power_law_tail(np.ones((3, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_power_law_tail(np.array([1.0, np.inf]))
