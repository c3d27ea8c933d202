"""Tests of reduced-rank regression: closed form, planted rank, sklearn contract, SVC prediction."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import xarray as xr
from sklearn.linear_model import Ridge
from sklearn.utils.estimator_checks import parametrize_with_checks

from netphys.population import (
    ReducedRankRegression,
    reduced_rank_regression,
    simulate_population,
    svca,
    svca_predict,
)


@parametrize_with_checks([ReducedRankRegression(), ReducedRankRegression(rank=1, lam=0.1)])
def test_sklearn_compatible(estimator, check) -> None:
    check(estimator)


def closed_form(x: np.ndarray, y: np.ndarray, lam: float, rank: int) -> np.ndarray:
    """CanonCor2 written plainly: coefficient matrix (n_features, n_targets) of rank `rank`."""
    cxx = np.cov(x.T) + lam * np.eye(x.shape[1])
    cyx = np.cov(y.T, x.T)[: y.shape[1], y.shape[1] :]
    k = np.real(scipy.linalg.inv(scipy.linalg.sqrtm(cxx)))
    d, s, ct = np.linalg.svd(cyx @ k)
    b = k @ ct.T[:, :rank]
    a = d[:, :rank] * s[:rank]
    return b @ a.T


def test_equals_closed_form(rng: np.random.Generator) -> None:
    x = rng.standard_normal((200, 6)) @ rng.standard_normal((6, 6))
    y = x @ rng.standard_normal((6, 5)) + rng.standard_normal((200, 5))
    for rank in (1, 3, 5):
        model = ReducedRankRegression(rank=rank, lam=0.3).fit(x, y)
        # eigh-based inverse square root vs sqrtm: equal to float rounding
        np.testing.assert_allclose(model.coef_.T, closed_form(x, y, 0.3, rank), rtol=1e-6)
        assert np.linalg.matrix_rank(model.coef_) == rank


def test_full_rank_is_ridge(rng: np.random.Generator) -> None:
    x = rng.standard_normal((150, 4))
    y = rng.standard_normal((150, 7))
    model = ReducedRankRegression(lam=0.5).fit(x, y)
    ridge = Ridge(alpha=0.5 * (150 - 1)).fit(x, y)  # lam is on the 1/(T-1) covariance scale
    np.testing.assert_allclose(model.coef_, ridge.coef_, rtol=1e-8)
    np.testing.assert_allclose(model.predict(x), ridge.predict(x), rtol=1e-8, atol=1e-10)


def test_recovers_planted_rank(rng: np.random.Generator) -> None:
    x = rng.standard_normal((600, 10))
    y = x @ rng.standard_normal((10, 3)) @ rng.standard_normal((3, 12))
    y += 0.3 * rng.standard_normal(y.shape)
    res = reduced_rank_regression(x, y, ranks=[1, 2, 3, 4, 6, 10], rng=rng)
    ve = res["variance_explained"]
    # rank-3 signal with noise variance ~1/30 of it: the gain stops at rank 3
    assert float(ve.sel(rank=3) - ve.sel(rank=2)) > 0.02
    assert float(ve.sel(rank=10) - ve.sel(rank=3)) < 0.005
    assert float(ve.sel(rank=3)) > 0.9
    assert res["lam"].dims == ("split", "rank")


def test_cross_validation_is_honest(rng: np.random.Generator) -> None:
    x, y = rng.standard_normal((300, 8)), rng.standard_normal((300, 5))
    res = reduced_rank_regression(x, y, rng=rng)
    # independent data: held-out variance explained is not positive beyond noise
    assert float(res["variance_explained"].max()) < 0.02


def test_contract(rng: np.random.Generator) -> None:
    x = rng.standard_normal((100, 3))
    y = xr.DataArray(x @ rng.standard_normal((3, 4)), dims=("time", "neuron_pc"))
    xb = x.copy()
    res = reduced_rank_regression(x, y, rng=1)
    np.testing.assert_array_equal(x, xb)
    assert res["rank"].values.tolist() == [1, 2, 3]
    assert res["variance_explained_target"].dims == ("rank", "neuron_pc")
    xr.testing.assert_identical(res, reduced_rank_regression(x, y, rng=1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ranks": [-1]}, r"`ranks` must be positive ints; got -1"),
        ({"ranks": [0, 1]}, r"`ranks` must be positive ints; got 0"),
        ({"ranks": [5]}, r"rank 5 exceeds min\(n_source_features, n_targets\) = 3"),
        ({"lambdas": [-0.1]}, r"`lambdas` must be finite numbers >= 0"),
        ({"n_splits": 1}, r"`n_splits` must be >= 2"),
        ({"n_splits": 30}, r"too few for `n_splits`=30"),
    ],
)
def test_function_errors(kwargs, match, rng: np.random.Generator) -> None:
    x, y = rng.standard_normal((100, 3)), rng.standard_normal((100, 4))
    with pytest.raises(ValueError, match=match):
        reduced_rank_regression(x, y, **kwargs)


def test_more_errors(rng: np.random.Generator) -> None:
    x, y = rng.standard_normal((100, 3)), rng.standard_normal((90, 4))
    with pytest.raises(ValueError, match=r"same number of samples; got 100 and 90"):
        reduced_rank_regression(x, y)
    y = rng.standard_normal((100, 4))
    y[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"`target` contains NaN"):
        reduced_rank_regression(x, y)
    with pytest.raises(ValueError, match=r"`rank` must be >= 1; got -2"):
        ReducedRankRegression(rank=-2).fit(x, x)
    with pytest.raises(ValueError, match=r"`rank`=4 exceeds min\(n_features, n_targets\) = 3"):
        ReducedRankRegression(rank=4).fit(x, rng.standard_normal((100, 5)))
    with pytest.raises(ValueError, match=r"`lam` must be a finite number >= 0"):
        ReducedRankRegression(lam=-1.0).fit(x, x)


def test_svca_predict_agrees_with_direct_computation(rng: np.random.Generator) -> None:
    sim = simulate_population(200, 1200, alpha=1.0, snr=5.0, behaviour_rank=2, rng=rng)
    res = svca_predict(
        sim["activity"], sim["behaviour"], n_components=15, block_length=20, ranks=[1, 2, 4], rng=2
    )
    base = svca(
        sim["activity"],
        n_components=15,
        block_length=20,
        rng=np.random.default_rng(2),
        keep_projections=True,
    )
    np.testing.assert_allclose(res["reliable_variance"], base["reliable_variance"], rtol=1e-10)
    train = base["is_train"].values
    beh = sim["behaviour"].values
    beh = (beh - beh[train].mean(0)) / beh[train].std(0)
    resid = []
    for s, name in enumerate(("projection_1", "projection_2")):
        y = base[name].values
        lam = float(res["lam"].sel(rank=2).values[s])
        model = ReducedRankRegression(rank=2, lam=lam).fit(beh[train], y[train])
        resid.append(y[~train] - model.predict(beh[~train]))
    explained = base["reliable_variance"].values - (resid[0] * resid[1]).mean(0)
    # the same regression through the estimator: equal to float rounding
    np.testing.assert_allclose(
        res["explained_reliable_variance"].sel(rank=2), explained, rtol=1e-6, atol=1e-10
    )


def test_svca_predict_recovers_behaviour_share(rng: np.random.Generator) -> None:
    sim = simulate_population(
        300,
        2000,
        alpha=1.0,
        snr=10.0,
        behaviour_rank=2,
        behaviour_noise=0.01,
        category_strength=0.0,
        rng=rng,
    )
    res = svca_predict(sim["activity"], sim["behaviour"], n_components=20, block_length=20, rng=1)
    frac = res["explained_fraction"]
    # behaviour reads out latents 1-2 almost noiselessly: SVCs 1-2 are nearly fully explained
    # at rank 2 and not at rank 1; SVCs 5+ (other latents) are not explained
    assert float(frac.sel(rank=2, component=[1, 2]).min()) > 0.9
    assert float(frac.sel(rank=1, component=2)) < 0.5
    assert float(np.abs(frac.sel(rank=2, component=slice(5, 20))).mean()) < 0.2
    assert res["cumulative_explained_fraction"].dims == ("rank", "component")
    with pytest.raises(ValueError, match=r"`behaviour` has 100 samples but `activity` has 2000"):
        svca_predict(sim["activity"], sim["behaviour"][:100])


def test_dask_inputs_are_read_in_chunks_with_the_same_result(rng: np.random.Generator) -> None:
    dsa = pytest.importorskip("dask.array")
    x = rng.standard_normal((300, 4)) + 3.0
    y = x @ rng.standard_normal((4, 6)) + rng.standard_normal((300, 6))
    ref = reduced_rank_regression(x, y, ranks=[1, 2], block_length=10, rng=0)
    lazy_y = xr.DataArray(dsa.from_array(y, chunks=(40, 3)), dims=("time", "unit"))
    res = reduced_rank_regression(x, lazy_y, ranks=[1, 2], block_length=10, rng=0, chunk_size=7)
    for name in ("variance_explained", "variance_explained_target", "lam"):
        np.testing.assert_allclose(res[name], ref[name], rtol=1e-10, atol=1e-12)
    model = ReducedRankRegression(rank=2, lam=0.5).fit(x, y)
    lazy = ReducedRankRegression(rank=2, lam=0.5).fit(dsa.from_array(x, chunks=50), lazy_y)
    np.testing.assert_allclose(lazy.coef_, model.coef_, rtol=1e-10)
    np.testing.assert_allclose(lazy.intercept_, model.intercept_, rtol=1e-10)
    np.testing.assert_allclose(lazy.predict(dsa.from_array(x)).compute(), model.predict(x))
    with pytest.raises(ValueError, match=r"ReducedRankRegression: `X` must be 2-D .* got shapes"):
        ReducedRankRegression().fit(dsa.from_array(x[:200]), lazy_y)
    bad = dsa.where(dsa.arange(300)[:, None] == 123, np.inf, lazy_y.data)
    with pytest.raises(ValueError, match=r"`target` contains NaN or inf \(first at sample 123"):
        reduced_rank_regression(x, bad)
