"""OASIS AR(1) deconvolution: planted events, an exact NNLS reference, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize

from netphys.population import deconvolve, simulate_calcium


def _kernel(n: int, g: float) -> np.ndarray:
    t = np.arange(n)
    diff = t[:, None] - t[None, :]
    return np.where(diff >= 0, g ** np.clip(diff, 0, None), 0.0)


def test_matches_nonnegative_least_squares() -> None:
    # with no penalty the problem is NNLS over events: c = K s, s >= 0
    rng = np.random.default_rng(0)
    g, n = 0.85, 120
    s_true = np.where(rng.random(n) < 0.08, rng.exponential(2.0, n), 0.0)
    y = _kernel(n, g) @ s_true + 0.3 * rng.standard_normal(n)
    s_ref, _ = scipy.optimize.nnls(_kernel(n, g), y)
    out = deconvolve(y[:, None], g=g)
    np.testing.assert_allclose(out["spks"].values[:, 0], s_ref, atol=1e-8)


def test_penalty_matches_a_generic_solver() -> None:
    rng = np.random.default_rng(1)
    g, n, lam = 0.9, 80, 0.5
    y = _kernel(n, g) @ np.where(rng.random(n) < 0.1, 3.0, 0.0) + 0.3 * rng.standard_normal(n)
    k = _kernel(n, g)

    def objective(s: np.ndarray) -> float:
        return 0.5 * float(np.sum((k @ s - y) ** 2)) + lam * float(s.sum())

    ref = scipy.optimize.minimize(
        objective, np.zeros(n), jac=lambda s: k.T @ (k @ s - y) + lam,
        bounds=[(0, None)] * n, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12},
    )  # fmt: skip
    out = deconvolve(y[:, None], g=g, penalty=lam)["spks"].values[:, 0]
    assert objective(out) <= ref.fun + 1e-6
    np.testing.assert_allclose(out, ref.x, atol=1e-3)


def test_recovers_planted_events_through_the_calcium_model() -> None:
    rng = np.random.default_rng(2)
    events = np.where(rng.random((600, 4)) < 0.03, 1.0, 0.0)
    ds = simulate_calcium(events, tau=1.0, frame_rate=10.0, shot_noise=0.01, neuropil=0.0,
                          deconvolution="oasis", rng=0)  # fmt: skip
    spks = ds["spks"].values
    # events are found within one frame; few false positives
    for u in range(4):
        true_t = np.flatnonzero(events[:, u])
        found = np.flatnonzero(spks[:, u] > 0)
        hits = np.mean([np.any(np.abs(found - t) <= 1) for t in true_t])
        assert hits > 0.9
        assert len(found) < 2 * len(true_t)
    corr = np.corrcoef(spks.ravel(), events.ravel())[0, 1]
    assert corr > 0.8


def test_bad_input_is_clear() -> None:
    y = np.zeros((10, 2))
    with pytest.raises(ValueError, match=r"deconvolve\(\): give the AR\(1\) coefficient `g`"):
        deconvolve(y)
    with pytest.raises(ValueError, match=r"`g` must be in \(0, 1\); got 1.5"):
        deconvolve(y, g=1.5)
    with pytest.raises(ValueError, match="`tau` needs a frame rate"):
        deconvolve(y, tau=1.0)
    with pytest.raises(ValueError, match=r"`penalty` must be finite and >= 0"):
        deconvolve(y, g=0.5, penalty=-1)
    with pytest.raises(ValueError, match="`deconvolution` must be one of"):
        simulate_calcium(y, frame_rate=10.0, deconvolution="mlspike")
