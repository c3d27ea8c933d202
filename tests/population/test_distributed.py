"""The population analyses on a dask.distributed cluster equal the in-memory results.

A 2-worker LocalCluster (processes) runs for the whole module; each test builds a small
dask-backed population, runs the analysis with the client current, checks that the work ran
on the workers (the chunk kernels show up in the task stream) and compares with the same call
on the numpy array to 1e-8. ``test_nothing_is_gathered_whole`` checks, by recording every
result the client gathers, that no analysis brings the recording back to the client.
"""

from __future__ import annotations

import warnings

import dask.array as dsa
import dask.sizeof
import numpy as np
import pytest
import xarray as xr

distributed = pytest.importorskip("distributed")

from netphys import population as pop  # noqa: E402
from netphys.errors import FitRangeWarning  # noqa: E402

RTOL = 1e-8


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, memory_limit="600MB",
        dashboard_address=":0",
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def _lazy(x: np.ndarray, chunks: int = 100, **coords) -> xr.DataArray:
    data = dsa.from_array(x, chunks=(chunks, -1))
    return xr.DataArray(data, dims=("time", "unit"), coords=coords)


def _close(a, b, rtol: float = RTOL) -> None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = np.nanmax(np.abs(b)) if np.isfinite(b).any() else 1.0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


def _ran_on_workers(stream, name: str = "_run_kernel") -> bool:
    return any(name in str(t.get("key", "")) for t in stream.data)


@pytest.fixture
def gathered(client, monkeypatch) -> list[int]:
    """Record the size in bytes of everything the client gathers from the workers."""
    sizes: list[int] = []
    original = distributed.Client.gather

    def gather(self, futures, *args, **kwargs):
        out = original(self, futures, *args, **kwargs)
        sizes.append(int(dask.sizeof.sizeof(out)))
        return out

    monkeypatch.setattr(distributed.Client, "gather", gather)
    return sizes


@pytest.fixture(scope="module")
def sim() -> xr.Dataset:
    return pop.simulate_population(120, 600, alpha=1.0, snr=2.0, behaviour_rank=2, rng=0)


@pytest.mark.parametrize("solver", ["dense", "gram", "randomized"])
def test_svca(client, sim, solver: str) -> None:
    x = sim["activity"].values
    kw = {"n_components": 20, "block_length": 20, "svd_solver": solver, "max_cov_bytes": 1}
    ref = pop.svca(x, **kw)
    with distributed.get_task_stream(client) as ts:
        res = pop.svca(_lazy(x), **kw)
    assert solver == "gram" or _ran_on_workers(ts)
    for name in ("reliable_variance", "total_variance", "covariance_singular_value"):
        _close(res[name], ref[name])


def test_svca_projections_and_predict(client, sim) -> None:
    x, beh = sim["activity"].values, sim["behaviour"].values
    ref = pop.svca_predict(x, beh, n_components=10, block_length=20)
    res = pop.svca_predict(_lazy(x), beh, n_components=10, block_length=20)
    _close(res["explained_reliable_variance"], ref["explained_reliable_variance"])


def test_eigenspectrum_both_routes(client, sim) -> None:
    x = sim["activity"].values
    for arr in (x, x[:100]):  # units < samples (covariance) and units > samples (Gram)
        ref = pop.eigenspectrum(arr, n_components=20)
        with distributed.get_task_stream(client) as ts:
            res = pop.eigenspectrum(_lazy(arr, chunks=40), n_components=20)
        assert _ran_on_workers(ts)
        _close(res["variance"], ref["variance"])


def test_correlation_matrix(client, sim) -> None:
    x = sim["activity"].values
    ref = pop.correlation_matrix(x)
    res = pop.correlation_matrix(_lazy(x))
    _close(res["correlation"], ref["correlation"])


def test_cvpca(client) -> None:
    s = pop.simulate_population(80, 200, alpha=1.0, snr=2.0, n_repeats=2, rng=1)
    resp = pop.repeat_responses(s["activity"])
    ref = pop.cvpca(resp.values, n_shuffles=3, rng=0)
    lazy = resp.copy(data=dsa.from_array(resp.values, chunks=(-1, -1, 30)))
    with distributed.get_task_stream(client) as ts:
        res = pop.cvpca(lazy, n_shuffles=3, rng=0)
    assert _ran_on_workers(ts)
    _close(res["signal_variance"], ref["signal_variance"])


def test_shuffle_null(client, sim) -> None:
    x = sim["activity"].values
    ref = pop.shuffle_null(x, min_shift=50, max_units=100, rng=0)
    with distributed.get_task_stream(client) as ts:
        res = pop.shuffle_null(_lazy(x), min_shift=50, max_units=100, rng=0)
    assert _ran_on_workers(ts, "matmul")
    # the same rng gives the same units and shifts, hence the same histograms
    for name in ("shift", "unit", "real_count", "null_count", "n_pairs", "n_dropped"):
        np.testing.assert_array_equal(res[name], ref[name])
    for name in ("real_percentiles", "null_percentiles", "real_mean", "null_mean"):
        _close(res[name], ref[name])


def test_reduced_rank_regression(client, sim) -> None:
    x, y = sim["behaviour"].values, sim["activity"].values[:, :20]
    ref = pop.reduced_rank_regression(x, y, block_length=20, rng=0)
    with distributed.get_task_stream(client) as ts:
        res = pop.reduced_rank_regression(_lazy(x, chunks=150), _lazy(y), block_length=20, rng=0)
    assert _ran_on_workers(ts)
    for name in ("variance_explained", "variance_explained_target", "lam"):
        _close(res[name], ref[name])
    # the estimator: fitted from blockwise sums, predicting lazily
    model = pop.ReducedRankRegression(rank=2, lam=0.1).fit(x, y)
    lazy_model = pop.ReducedRankRegression(rank=2, lam=0.1).fit(_lazy(x).data, _lazy(y).data)
    _close(lazy_model.coef_, model.coef_)
    _close(lazy_model.intercept_, model.intercept_)
    pred = lazy_model.predict(_lazy(x).data)
    assert isinstance(pred, dsa.Array)
    _close(pred.compute(), model.predict(x))


def test_nothing_is_gathered_whole(client, gathered) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4000, 40)) + rng.normal(size=(4000, 2)) @ rng.normal(size=(2, 40))
    lazy, beh = _lazy(x, chunks=500), x[:, :2] + rng.normal(size=(4000, 2))
    # the check itself can fail: loading the recording gathers all of it
    assert np.array_equal(lazy.values, x) and max(gathered) >= x.nbytes
    calls = {
        "svca": lambda: pop.svca(
            lazy, n_components=5, block_length=50, max_cov_bytes=1, n_power_iter=1
        ),
        "svca dense": lambda: pop.svca(lazy, n_components=5, block_length=50),
        "eigenspectrum": lambda: pop.eigenspectrum(lazy, n_components=5),
        "correlation_matrix": lambda: pop.correlation_matrix(lazy),
        "shuffle_null": lambda: pop.shuffle_null(lazy, min_shift=500, rng=0),
        "reduced_rank_regression": lambda: pop.reduced_rank_regression(beh, lazy, rng=0),
        # the SVC time courses (4000 x 2 per set) come back by design, the recording does not
        "svca_predict": lambda: pop.svca_predict(lazy, beh, n_components=2, block_length=50),
    }
    sess = _sessions(rng, repeats=150)
    session_lazy = _lazy(sess[0], chunks=300, **sess[1])
    resp = rng.normal(size=(2, 30, 2000))
    calls |= {
        "tuning_drift": lambda: pop.tuning_drift(session_lazy),
        "subspace_alignment": lambda: pop.subspace_alignment(session_lazy, n_components=3),
        "spectrum_over_sessions": lambda: pop.spectrum_over_sessions(
            session_lazy, n_components=5
        ),
        "cvpca": lambda: pop.cvpca(
            xr.DataArray(
                dsa.from_array(resp, chunks=(-1, -1, 250)), dims=("repeat", "stimulus", "unit")
            ),
            n_shuffles=2,
        ),
    }
    sizes = {"tuning_drift": sess[0].nbytes, "subspace_alignment": sess[0].nbytes}
    sizes |= {"spectrum_over_sessions": sess[0].nbytes, "cvpca": resp.nbytes}
    sizes["svca_predict"] = x.nbytes * 2  # limit: a quarter of the recording
    for name, call in calls.items():
        gathered.clear()
        with warnings.catch_warnings():  # 2-5 components: the power-law fits are cut short
            warnings.filterwarnings("ignore", category=FitRangeWarning)
            call()
        assert gathered, name  # it ran on the cluster
        most = sizes.get(name, x.nbytes) // 8
        assert max(gathered) < most, f"{name} gathered {max(gathered)} of {most * 8} bytes"


def _sessions(rng: np.random.Generator, repeats: int = 60) -> tuple[np.ndarray, dict]:
    label = np.tile(np.arange(4), repeats)
    tuning = rng.normal(size=(4, 40))
    x = np.concatenate([tuning[label], tuning[label] + 0.3 * rng.normal(size=(4, 40))[label]])
    x += 0.2 * rng.normal(size=x.shape)
    coords = {
        "session": ("time", np.repeat([0, 1], len(label))),
        "label": ("time", np.tile(label, 2)),
    }
    return x, coords


def test_tuning_drift_alignment_spectra(client) -> None:
    x, coords = _sessions(np.random.default_rng(2))
    mem = xr.DataArray(x, dims=("time", "unit"), coords=coords)
    lazy = _lazy(x, chunks=60, **coords)
    with distributed.get_task_stream(client) as ts:
        drift = pop.tuning_drift(lazy)
    assert _ran_on_workers(ts)
    _close(drift["tuning"], pop.tuning_drift(mem)["tuning"])
    for method in ("pca", "svca"):
        ref = pop.subspace_alignment(mem, n_components=3, method=method)
        res = pop.subspace_alignment(lazy, n_components=3, method=method)
        _close(res["component_variance"], ref["component_variance"])
    with pytest.warns(FitRangeWarning, match=r"session 0: svca\(\)"):
        ref = pop.spectrum_over_sessions(mem, n_components=10)
    with pytest.warns(FitRangeWarning, match=r"session 0: svca\(\)"):
        res = pop.spectrum_over_sessions(lazy, n_components=10)
    _close(res["pca_variance"], ref["pca_variance"])
    _close(res["svca_reliable_variance"], ref["svca_reliable_variance"])


def test_nan_error_from_the_workers(client) -> None:
    x = np.random.default_rng(0).normal(size=(200, 30))
    x[150, 3] = np.nan
    with pytest.raises(ValueError, match=r"svca\(\): `activity` contains NaN or inf"):
        pop.svca(_lazy(x), block_length=10)


def test_partial_sums_too_big_for_a_worker_are_not_formed(client) -> None:
    from netphys.population._stream import fits_on_workers

    lazy = _lazy(np.zeros((10, 3)))
    assert fits_on_workers(100e6, lazy)  # 3 x 100 MB fit in the 600 MB limit
    assert not fits_on_workers(300e6, lazy)
    assert fits_on_workers(300e6, np.zeros((10, 3)))  # in memory: no worker involved
