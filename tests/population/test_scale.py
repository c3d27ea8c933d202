"""The units >> frames routes: exact Gram SVCA, randomized accuracy, SVCA reuse, rastermap PCs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from netphys.errors import FitRangeWarning
from netphys.population import _sorting, simulate_population, svca, svca_predict
from netphys.population._sorting import _gram_pcs, normalized_for_rastermap, rastermap_sort
from netphys.population._svca_engine import _orthonormalise, randomized_svd
from tests.population.test_svca import direct_svca


def test_gram_route_equals_direct_svd(global_random_seed: int) -> None:
    sim = simulate_population(400, 160, alpha=1.0, snr=2.0, rng=global_random_seed)  # units > train frames
    with pytest.warns(FitRangeWarning):  # snr 2, 79 SVCs: the noise tail turns negative
        res = svca(sim["activity"], block_length=10, svd_solver="gram", split="random", rng=global_random_seed)
    assert res.attrs["svd_solver"] == "gram"
    k = res.sizes["component"]
    rel, tot, sv = direct_svca(
        sim["activity"].values, res["unit_set"].values, res["is_train"].values, k
    )
    np.testing.assert_allclose(res["covariance_singular_value"], sv, rtol=1e-8)
    np.testing.assert_allclose(res["reliable_variance"], rel, rtol=1e-6, atol=1e-9 * tot[0])
    np.testing.assert_allclose(res["total_variance"], tot, rtol=1e-6, atol=1e-9 * tot[0])


def test_auto_picks_gram_when_units_exceed_frames(global_random_seed: int) -> None:
    sim = simulate_population(300, 100, snr=2.0, rng=global_random_seed)
    with pytest.warns(FitRangeWarning):  # snr 2: the noise tail turns negative
        res = svca(sim["activity"], block_length=10, rng=global_random_seed)
    with pytest.warns(FitRangeWarning):
        dense = svca(sim["activity"], block_length=10, rng=global_random_seed, svd_solver="dense")
    assert res.attrs["svd_solver"] == "gram"
    np.testing.assert_allclose(res["reliable_variance"], dense["reliable_variance"], rtol=1e-6)


def test_randomized_accuracy_first_128_within_1e3(global_random_seed: int) -> None:
    """The stated accuracy of the randomized route: SVCs 1-128 within 1e-3 (relative)."""
    sim = simulate_population(
        1200, 1600, alpha=1.0, snr=2.0, n_latents=400, category_strength=0.0, rng=global_random_seed
    )
    kw = {"block_length": 20, "n_components": 256, "split": "random", "rng": global_random_seed}
    exact = svca(sim["activity"], svd_solver="dense", **kw)
    approx = svca(sim["activity"], svd_solver="randomized", **kw)
    err = np.abs(approx["reliable_variance"][:128] - exact["reliable_variance"][:128])
    assert float((err / exact["total_variance"][:128]).max()) < 1e-3
    sv_err = np.abs(
        approx["covariance_singular_value"][:128] / exact["covariance_singular_value"][:128] - 1
    )
    assert float(sv_err.max()) < 1e-3


def test_svca_predict_reuses_a_fit(global_random_seed: int) -> None:
    sim = simulate_population(120, 600, alpha=1.0, snr=5.0, behaviour_rank=2, rng=global_random_seed)
    with pytest.warns(FitRangeWarning, match=r"starts after the last of the 10 components"):
        fit = svca(sim["activity"], n_components=10, block_length=20, keep_projections=True)
    reused = svca_predict(sim["activity"], sim["behaviour"], block_length=20, svca=fit)
    refit = svca_predict(sim["activity"], sim["behaviour"], n_components=10, block_length=20)
    np.testing.assert_array_equal(reused["explained_fraction"], refit["explained_fraction"])
    np.testing.assert_array_equal(reused["lam"], refit["lam"])


def test_svca_predict_rejects_a_fit_without_projections(global_random_seed: int) -> None:
    sim = simulate_population(60, 300, behaviour_rank=2, rng=global_random_seed)
    with pytest.warns(FitRangeWarning):
        fit = svca(sim["activity"], n_components=5, block_length=20)
    with pytest.raises(ValueError, match=r"svca_predict\(\): `svca` has no SVC time courses"):
        svca_predict(sim["activity"], sim["behaviour"], svca=fit)
    with pytest.raises(TypeError, match=r"`svca` must be the Dataset returned by svca"):
        svca_predict(sim["activity"], sim["behaviour"], svca=np.zeros(3))
    with pytest.warns(FitRangeWarning):
        fit = svca(sim["activity"][:200], n_components=5, block_length=20, keep_projections=True)
    with pytest.raises(ValueError, match=r"fitted on 200 samples but `activity` has 300"):
        svca_predict(sim["activity"], sim["behaviour"], svca=fit)


def test_rastermap_gram_pcs_are_the_exact_svd(rng: np.random.Generator) -> None:
    x = (rng.normal(size=(500, 5)) @ rng.normal(size=(5, 80)) + rng.normal(size=(500, 80)))
    x[7] = 1.0  # a constant unit is skipped (NaN row), as rastermap does
    usv = _gram_pcs(x.astype(np.float32), 20)
    xn, good = normalized_for_rastermap(x)
    u, s, _ = np.linalg.svd(xn, full_matrices=False)
    ref = u[:, :20] * s[:20]
    got = usv[good].astype(np.float64)
    signs = np.sign((got * ref).sum(axis=0))
    np.testing.assert_allclose(got * signs, ref, rtol=1e-4, atol=1e-4 * s[0])
    assert np.isnan(usv[7]).all()


@pytest.mark.slow
def test_rastermap_gram_route_sorts_planted_sequence(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    n_units, n_frames = 2400, 300
    phase = rng.permutation(n_units) / n_units
    t = np.arange(n_frames) / n_frames
    x = np.exp(-(((t[None] - phase[:, None] + 0.5) % 1 - 0.5) ** 2) / 0.002)
    x += 0.1 * rng.normal(size=x.shape)
    res = rastermap_sort(x.T, n_clusters=20, n_pcs=20)
    ordered = phase[res["order_index"].values]
    # neighbours in the sort have neighbouring phases (circular distance), far better than chance
    step = np.abs(np.diff(ordered))
    assert float(np.median(np.minimum(step, 1 - step))) < 0.01
    # the unreduced route (rastermap's own SVD of the units x samples data) sorts alike
    monkeypatch.setattr(_sorting, "_GRAM_MIN_UNITS", 10**9)
    own = rastermap_sort(x.T, n_clusters=20, n_pcs=20)
    rho = spearmanr(res["position_of_unit"], own["position_of_unit"]).statistic
    assert abs(rho) > 0.95


# ------------------------------------------------------- randomized SVD (the engine) ----
def _planted(rng: np.random.Generator, n1: int, n2: int, alpha: float) -> tuple:
    u, _ = np.linalg.qr(rng.normal(size=(n1, n1)))
    v, _ = np.linalg.qr(rng.normal(size=(n2, n2)))
    s = np.arange(1, min(n1, n2) + 1) ** -alpha
    return (u[:, : len(s)] * s) @ v[:, : len(s)].T, s


def test_randomized_svd_recovers_a_planted_power_law(rng: np.random.Generator) -> None:
    """Top triplets of a planted C = U S Vᵀ (s_n = n^-1) equal numpy's SVD of C."""
    cov, s_true = _planted(rng, 300, 240, 1.0)
    u, sv, v = randomized_svd(
        lambda m: cov @ m, lambda m: cov.T @ m, 300, 240, 40, None, 3, np.random.default_rng(0)
    )
    ref_u, ref_s, ref_vt = np.linalg.svd(cov)
    # 168 vectors, 3 power iterations: error ~ (s_169 / s_40)^7 on the vectors, squared on sv
    np.testing.assert_allclose(sv, ref_s[:40], rtol=1e-8)
    np.testing.assert_allclose(sv, s_true[:40], rtol=1e-8)
    np.testing.assert_allclose(np.abs((u * ref_u[:, :40]).sum(0)), 1.0, atol=1e-7)
    np.testing.assert_allclose(np.abs((v * ref_vt[:40].T).sum(0)), 1.0, atol=1e-7)


def test_randomized_svd_few_vectors_top_components_first(rng: np.random.Generator) -> None:
    """With no oversampling and no power iteration, the leading triplets are still close and
    the error grows down the spectrum (so the check can fail: it is not exact by design)."""
    cov, _ = _planted(rng, 300, 240, 1.0)
    noise = 1e-4 * rng.normal(size=cov.shape)
    cov = cov + noise
    _, sv, _ = randomized_svd(
        lambda m: cov @ m, lambda m: cov.T @ m, 300, 240, 40, 0, 0, np.random.default_rng(0)
    )
    err = np.abs(sv / np.linalg.svd(cov, compute_uv=False)[:40] - 1)
    assert err[:3].max() < 0.05
    assert err[30:].max() > 10 * err[:3].max()


@pytest.mark.parametrize("scale", [1e-14, 0.0])
def test_orthonormalise_ill_conditioned_and_rank_deficient(
    rng: np.random.Generator, scale: float
) -> None:
    """CholeskyQR2 falls back to Householder QR when the columns are (nearly) dependent."""
    mat = rng.normal(size=(200, 30))
    mat[:, 5] = mat[:, 4] + scale * rng.normal(size=200)
    q = _orthonormalise(mat)
    np.testing.assert_allclose(q.T @ q, np.eye(30), atol=1e-10)
    if scale:  # full rank: same column span
        np.testing.assert_allclose(q @ (q.T @ mat), mat, atol=1e-10)


def test_streamed_randomized_route_keeps_the_accuracy(global_random_seed: int) -> None:
    """The implicit-product route (cross-covariance never formed): the same stated accuracy."""
    sim = simulate_population(400, 500, alpha=1.0, snr=0.5, rng=global_random_seed)
    kw = {"n_components": 100, "block_length": 10, "split": "random", "rng": 0}
    with pytest.warns(FitRangeWarning):  # snr 0.5: the noise tail turns negative
        dense = svca(sim["activity"], svd_solver="dense", **kw)
    with pytest.warns(FitRangeWarning):
        rand = svca(sim["activity"], svd_solver="randomized", max_cov_bytes=1, chunk_size=130, **kw)
    err = np.abs(rand["reliable_variance"] - dense["reliable_variance"]) / dense["total_variance"]
    assert float(err.max()) < 1e-3
    np.testing.assert_allclose(
        rand["covariance_singular_value"], dense["covariance_singular_value"], rtol=1e-3
    )
