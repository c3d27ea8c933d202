"""RSA and CKA with split-half noise ceilings: planted shared geometry, slow references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from netphys.population._similarity import linear_cka, rdm, rsa, similarity


def _systems(noise: float, seed: int = 0, n_stim: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Two populations reading out one planted stimulus geometry z (shared RDM)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_stim, 6)) * np.array([3, 2, 1.5, 1, 0.7, 0.5])
    out = []
    for n_units in (300, 250):
        w = rng.standard_normal((6, n_units))
        sig = z @ w
        out.append(np.stack([sig + noise * rng.standard_normal(sig.shape) for _ in range(2)]))
    return out[0], out[1]


def test_rdm_and_cka_match_slow_references() -> None:
    rng = np.random.default_rng(1)
    halves = rng.standard_normal((2, 7, 5))
    slow = np.zeros((7, 7))
    for i in range(7):
        for j in range(7):
            if i != j:
                slow[i, j] = np.dot(halves[0, i] - halves[0, j], halves[1, i] - halves[1, j]) / 5
    np.testing.assert_allclose(rdm(halves), slow, atol=1e-12)
    x, y = rng.standard_normal((7, 5)), rng.standard_normal((7, 9))
    xc, yc = x - x.mean(0), y - y.mean(0)
    slow_cka = np.linalg.norm(yc.T @ xc) ** 2 / (
        np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    )
    np.testing.assert_allclose(linear_cka(x, y), slow_cka, rtol=1e-12)
    iu = np.triu_indices(7, 1)
    np.testing.assert_allclose(
        rsa(slow, slow.T * 2 + 1), scipy.stats.spearmanr(slow[iu], (slow.T * 2 + 1)[iu])[0]
    )


def test_ceiling_is_one_without_noise_and_falls_with_noise() -> None:
    clean = similarity(*_systems(0.0))
    assert clean["rsa_ceiling"] == pytest.approx(1.0)
    assert clean["cka_ceiling"] == pytest.approx(1.0)
    ceilings = [similarity(*_systems(noise))["rsa_ceiling"] for noise in (0.0, 2.0, 5.0, 10.0)]
    assert all(np.diff(ceilings) < 0), ceilings
    ckas = [similarity(*_systems(noise))["cka_ceiling"] for noise in (0.0, 2.0, 5.0, 10.0)]
    assert all(np.diff(ckas) < 0), ckas


@pytest.mark.parametrize("noise", [2.0, 5.0])
def test_planted_shared_rdm_is_recovered_within_the_ceiling(noise: float) -> None:
    a, b = _systems(noise, seed=3)
    sim = similarity(a, b)
    # the two systems share the planted geometry: the score reaches the ceiling set by noise
    assert sim["rsa"] <= sim["rsa_ceiling"] + 0.05
    assert sim["rsa_normalised"] == pytest.approx(1.0, abs=0.12)
    assert sim["cka_normalised"] == pytest.approx(1.0, abs=0.12)
    # a system with a different (shuffled) geometry scores far below the ceiling
    shuffled = b[:, :, np.random.default_rng(0).permutation(b.shape[2])]
    other = b[:, np.random.default_rng(1).permutation(40)]
    low = similarity(a, other)
    assert low["rsa_normalised"] < 0.5
    assert similarity(a, shuffled)["rsa"] == pytest.approx(sim["rsa"])  # units order is irrelevant
