"""Cross-session analyses: planted truth, agreement with slow code, streaming, contract, errors."""

from __future__ import annotations

import warnings

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

from netphys import plot as sp
from netphys.errors import FitRangeWarning
from netphys.population import simulate_population
from netphys.population._sessions import (
    concept_persistence,
    spectrum_over_sessions,
    subspace_alignment,
    tuning_drift,
)


# ----------------------------------------------------------------------------- helpers ----
def _rotated(rng, *, n_units=200, n_frames=400, k=3, theta=30.0, noise=0.05):
    """Two sessions whose k-dim signal subspaces are rotated by ``theta`` degrees."""
    q, _ = np.linalg.qr(rng.normal(size=(n_units, 2 * k)))
    q0, p = q[:, :k], q[:, k:]
    t = np.radians(theta)
    q1 = q0 * np.cos(t) + p * np.sin(t)
    scales = np.array([5.0, 4.0, 3.0])[:k]
    parts = [
        (rng.normal(size=(n_frames, k)) * scales) @ b.T
        + noise * rng.normal(size=(n_frames, n_units))
        for b in (q0, q1)
    ]
    return xr.DataArray(
        np.concatenate(parts),
        dims=("time", "unit"),
        coords={"session": ("time", np.repeat([0, 1], n_frames)), "unit": np.arange(n_units)},
    )


def _retuned(rng, *, n_units=200, n_cat=8, n_rep=40, fraction=0.3, noise=0.2):
    """Two sessions where a known ``fraction`` of units gets a new random tuning curve."""
    tun0 = rng.normal(size=(n_cat, n_units))
    retuned = rng.permutation(n_units)[: round(fraction * n_units)]
    tun1 = tun0.copy()
    tun1[:, retuned] = rng.normal(size=(n_cat, len(retuned)))
    label = np.tile(np.arange(n_cat), n_rep)
    x = np.concatenate([tun0[label], tun1[label]])
    x = x + noise * rng.normal(size=x.shape)
    act = xr.DataArray(
        x,
        dims=("time", "unit"),
        coords={
            "session": ("time", np.repeat([3, 7], len(label))),
            "label": ("time", np.tile(label, 2)),
            "condition": ("time", np.full(2 * len(label), "stimulus")),
        },
    )
    return act, retuned


# ------------------------------------------------------------------------------- drift ----
def test_tuning_drift_recovers_retuned_fraction(rng):
    act, retuned = _retuned(rng, fraction=0.3)
    res = tuning_drift(act, stable_threshold=0.9)
    corr = res["unit_tuning_correlation"].sel(session_a=3, session_b=7).values
    stable = np.setdiff1d(np.arange(act.sizes["unit"]), retuned)
    # noise 0.2 over 40 repeats: stable units keep r > 0.95; random re-tuned curves over 8
    # categories exceed r = 0.9 with probability < 1%
    assert corr[stable].min() > 0.95
    assert np.mean(corr[retuned] < 0.9) > 0.95
    assert abs(float(res["fraction_stable"].sel(session_a=3, session_b=7)) - 0.7) < 0.02
    # population vectors: 70% of units identical, 30% independent with equal variance -> r ~ 0.7
    pop = res["population_correlation"].sel(session_a=3, session_b=7).values
    assert np.all(np.abs(pop - 0.7) < 0.15)
    diag = res["tuning_correlation"].values.diagonal()
    np.testing.assert_allclose(diag, 1.0)


def test_tuning_drift_matches_direct_loops(rng):
    act, _ = _retuned(rng, n_units=15, n_cat=4, n_rep=6)
    res = tuning_drift(act, chunk_size=7)
    x, ses, lab = act.values, act.session.values, act.label.values
    for ia, a in enumerate([3, 7]):
        for ib, b in enumerate([3, 7]):
            ta = np.array(
                [[x[(ses == a) & (lab == c), u].mean() for c in range(4)] for u in range(15)]
            )
            tb = np.array(
                [[x[(ses == b) & (lab == c), u].mean() for c in range(4)] for u in range(15)]
            )
            want_unit = [np.corrcoef(ta[u], tb[u])[0, 1] for u in range(15)]
            want_pop = [np.corrcoef(ta[:, c], tb[:, c])[0, 1] for c in range(4)]
            np.testing.assert_allclose(
                res["unit_tuning_correlation"].values[ia, ib], want_unit, atol=1e-10
            )
            np.testing.assert_allclose(
                res["population_correlation"].values[ia, ib], want_pop, atol=1e-10
            )
            np.testing.assert_allclose(res["tuning"].values[ia], ta.T, atol=1e-12)


def test_tuning_drift_dask_dict_and_categories(rng):
    act, _ = _retuned(rng, n_units=30, n_cat=5, n_rep=10)
    lazy = act.copy(data=dsa.from_array(act.values, chunks=(37, 30)))
    a = tuning_drift(act)
    b = tuning_drift(lazy)
    xr.testing.assert_allclose(a, b)
    parts = {s: act.isel(time=np.flatnonzero(act.session.values == s)).drop_vars("session")
             for s in (3, 7)}  # fmt: skip
    c = tuning_drift(parts)
    np.testing.assert_allclose(c["tuning_correlation"].values, a["tuning_correlation"].values)
    sub = tuning_drift(act, categories=[0, 1, 2])
    assert sub.sizes["category"] == 3
    assert sub.attrs["method"] == "tuning_drift"


# --------------------------------------------------------------------------- alignment ----
@pytest.mark.parametrize("theta", [0.0, 30.0, 60.0])
def test_subspace_alignment_recovers_rotation_pca(rng, theta):
    act = _rotated(rng, theta=theta)
    res = subspace_alignment(act, n_components=3)
    ang = res["principal_angle"].sel(session_a=0, session_b=1).values
    # noise 0.05 per unit vs signal sd >= 3 along each axis: angles within 2 degrees
    np.testing.assert_allclose(ang, theta, atol=2.0)
    np.testing.assert_allclose(res["principal_angle"].values[0, 0], 0.0, atol=1e-3)
    # variance of session 0 along session 1's components = cos^2(theta) of its own
    cap = float(res["captured_variance"].sel(session_a=0, session_b=1))
    assert abs(cap - np.cos(np.radians(theta)) ** 2) < 0.03
    np.testing.assert_allclose(res["captured_variance"].values.diagonal(), 1.0)


def test_subspace_alignment_recovers_rotation_svca(rng):
    act = _rotated(rng, n_units=400, theta=45.0, noise=0.1)
    res = subspace_alignment(act, n_components=3, method="svca", rng=0)
    ang = res["principal_angle"].sel(session_a=0, session_b=1).values
    # each unit set holds a random half of the units, so each set's restricted subspaces are
    # rotated by theta only up to O(1/sqrt(200)) ~ 4 degree distortions, symmetric about theta
    np.testing.assert_allclose(ang, 45.0, atol=6.0)
    assert abs(ang.mean() - 45.0) < 1.5
    cap = float(res["captured_variance"].sel(session_a=0, session_b=1))
    assert abs(cap - 0.5) < 0.05  # cos^2(45) of the reliable variance
    np.testing.assert_allclose(res["captured_variance"].values.diagonal(), 1.0)
    assert res.attrs["method"] == "svca"


def test_subspace_alignment_gram_and_covariance_agree(rng):
    wide = _rotated(rng, n_units=120, n_frames=60, theta=20.0)  # units > frames: Gram path
    tall = wide.isel(unit=slice(0, 50))  # units < frames: covariance path
    for act in (wide, tall):
        res = subspace_alignment(act, n_components=3)
        lazy = act.copy(data=dsa.from_array(act.values, chunks=(25, 40)))
        res2 = subspace_alignment(lazy, n_components=3, chunk_size=17)
        np.testing.assert_allclose(
            # arccos near cos = 1 turns 1e-16 rounding into 1e-6 degrees
            res["principal_angle"].values,
            res2["principal_angle"].values,
            atol=1e-4,
        )
        np.testing.assert_allclose(
            res["component_variance"].values, res2["component_variance"].values, rtol=1e-8
        )
    # direct: eigenvectors of each session's covariance
    x = tall.values
    bases = []
    for s in (0, 1):
        xs = x[tall.session.values == s]
        _, v = np.linalg.eigh(np.cov(xs.T))
        bases.append(v[:, ::-1][:, :3])
    cos = np.linalg.svd(bases[0].T @ bases[1], compute_uv=False)
    want = np.degrees(np.arccos(np.clip(np.sort(cos)[::-1], 0, 1)))
    got = subspace_alignment(tall, n_components=3)["principal_angle"].values[0, 1]
    np.testing.assert_allclose(got, want, atol=1e-4)


# ----------------------------------------------------------------------------- spectra ----
def test_spectrum_over_sessions_recovers_alphas():
    parts = {
        s: simulate_population(150, 600, alpha=a, snr=20.0, category_strength=0.0, rng=s)[
            "activity"
        ]
        for s, a in ((0, 1.0), (1, 1.5), (2, 2.0))
    }
    res = spectrum_over_sessions(parts, n_components=40, fit_range=(2, 30))
    # snr 20 and 600 frames: PCA and SVCA exponents within 0.2 of the planted ones
    np.testing.assert_allclose(res["pca_alpha"].values, [1.0, 1.5, 2.0], atol=0.2)
    np.testing.assert_allclose(res["svca_alpha"].values, [1.0, 1.5, 2.0], atol=0.25)
    assert np.all(res["reliable_fraction"].values > 0.6)  # summed over 40 SVCs incl. the tail
    one = spectrum_over_sessions({5: parts[0]}, n_components=10, fit_range=(2, 8),
                                 reliable=False)  # fmt: skip
    assert one.sizes["session"] == 1
    assert np.isnan(one["svca_alpha"].values).all()


def test_spectrum_over_sessions_drops_constant_units(rng):
    x = rng.normal(size=(200, 30))
    x[:, :5] = 0.0  # dead units
    act = xr.DataArray(x, dims=("time", "unit"),
                       coords={"session": ("time", np.repeat([0, 1], 100))})  # fmt: skip
    # pure noise: the reliable variance turns negative early; one warning names the sessions
    with pytest.warns(FitRangeWarning, match=r"spectrum_over_sessions\(\): \d power-law fit") as w:
        res = spectrum_over_sessions(act, n_components=10, fit_range=(2, 8))
    assert len(w) == 1 and "svca(): the power-law fit asked for components 2..8" in str(w[0].message)
    assert res["n_active_units"].values.tolist() == [25, 25]


# ---------------------------------------------------------------------------- concepts ----
def _planted_concepts(rng):
    a = xr.Dataset(
        {"concept": ("path", np.repeat([0, 1, 2, 3], 10))}, coords={"path": np.arange(40)}
    )
    b_paths = np.r_[np.arange(10), np.arange(10, 15), np.arange(100, 105), np.arange(200, 210)]
    b = xr.Dataset({"concept": ("path", np.repeat([0, 1, 2], 10))}, coords={"path": b_paths})
    act_a = rng.normal(size=(4, 60))
    act_b = np.stack([
        act_a[0] + 0.1 * rng.normal(size=60),
        rng.normal(size=60),
        act_a[2] + 0.1 * rng.normal(size=60),
    ])  # fmt: skip
    return a, b, act_a, act_b


def test_concept_persistence_planted(rng):
    a, b, act_a, act_b = _planted_concepts(rng)
    res = concept_persistence(a, b, activity_a=act_a, activity_b=act_b)
    assert res["status"].values.tolist() == ["kept", "changed", "changed", "lost"]
    assert res["match"].values[:3].tolist() == [0, 1, 2]
    np.testing.assert_allclose(res["match_jaccard"].values[:3], [1.0, 5 / 15, 0.0])
    assert float(res["fraction_kept"]) == 0.25
    assert float(res["fraction_changed"]) == 0.5
    assert float(res["fraction_lost"]) == 0.25
    assert float(res["match_correlation"][2]) > 0.9
    # without activity, concept 2 (new paths, same function) cannot be told from lost
    plain = concept_persistence(a, b)
    assert plain["status"].values.tolist() == ["kept", "changed", "lost", "lost"]
    strict = concept_persistence(a, b, kept_jaccard=1.0, changed_jaccard=0.5)
    assert strict["status"].values.tolist() == ["kept", "lost", "lost", "lost"]


def test_concept_persistence_reads_trees(rng):
    a, b, act_a, act_b = _planted_concepts(rng)

    def tree(ds, act):
        da = xr.DataArray(act, dims=("concept", "sample"))
        return xr.DataTree.from_dict({
            "/": xr.Dataset(), "/concepts": ds, "/activity": da.to_dataset(name="concept_activity"),
        })  # fmt: skip

    res = concept_persistence(tree(a, act_a), tree(b, act_b))
    assert res["status"].values.tolist() == ["kept", "changed", "changed", "lost"]


# ------------------------------------------------------------------------------- plots ----
def test_plots_return_figures(rng):
    act, _ = _retuned(rng, n_units=30, n_cat=4, n_rep=20)
    a, b, act_a, act_b = _planted_concepts(rng)
    with pytest.warns(FitRangeWarning):
        spec = spectrum_over_sessions(act, n_components=10, fit_range=(2, 8))
    figs = [
        sp.plot_tuning_drift(tuning_drift(act)),
        sp.plot_subspace_alignment(subspace_alignment(act, n_components=3)),
        sp.plot_spectrum_over_sessions(spec),
        sp.plot_concept_persistence(concept_persistence(a, b, activity_a=act_a,
                                                        activity_b=act_b)),
    ]  # fmt: skip
    assert all(isinstance(f, Figure) for f in figs)
    with pytest.raises(ValueError, match=r"plot_tuning_drift\(\): the result lacks"):
        sp.plot_tuning_drift(xr.Dataset())


# ------------------------------------------------------------------------------ errors ----
def test_errors_sessions(rng):
    x = rng.normal(size=(40, 6))
    plain = xr.DataArray(x, dims=("time", "unit"))
    with pytest.raises(ValueError, match=r"tuning_drift\(\): `activity` needs a 'session'"):
        tuning_drift(plain)
    with pytest.raises(ValueError, match=r"subspace_alignment\(\): `activity` needs a 'session'"):
        subspace_alignment(x)
    one = plain.assign_coords(session=("time", np.zeros(40, int)),
                              label=("time", np.tile([0, 1], 20)))  # fmt: skip
    with pytest.raises(ValueError, match=r"needs at least 2 sessions to compare; got 1"):
        tuning_drift(one)
    with pytest.raises(ValueError, match=r"needs at least 2 sessions to compare; got 1"):
        subspace_alignment(one)
    two = one.assign_coords(session=("time", np.repeat([0, 1], 20)))
    with pytest.raises(ValueError, match=r"`sessions` \[5\] not found"):
        subspace_alignment(two, sessions=[0, 5], n_components=2)
    with pytest.raises(ValueError, match=r"no frame has condition 'stimulus'"):
        tuning_drift(two.assign_coords(condition=("time", np.full(40, "spontaneous"))))


def test_errors_units_and_categories(rng):
    x = rng.normal(size=(40, 6))
    lab = np.tile([0, 1], 20)
    two = xr.DataArray(
        x,
        dims=("time", "unit"),
        coords={"session": ("time", np.repeat([0, 1], 20)), "label": ("time", lab)},
    )
    a = xr.DataArray(x[:20], dims=("time", "unit"), coords={"unit": np.arange(6)})
    b = xr.DataArray(x[20:], dims=("time", "unit"), coords={"unit": np.arange(1, 7)})
    with pytest.raises(
        ValueError, match=r"units are not matched across sessions.*lacks units \[0\]"
    ):
        subspace_alignment({0: a, 1: b}, n_components=2)
    nan = two.copy(data=x.copy())
    nan.values[25, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf in session 1 .*dropna"):
        tuning_drift(nan)
    with pytest.raises(ValueError, match=r"NaN or inf in session 1"):
        subspace_alignment(nan, n_components=2)
    with pytest.raises(ValueError, match=r"no per-frame category coordinate 'digit'"):
        tuning_drift(two, category="digit")
    missing = two.assign_coords(label=("time", np.r_[np.tile([0, 1], 10), np.zeros(20, int)]))
    with pytest.raises(ValueError, match=r"category 1 has no frame in session 1"):
        tuning_drift(missing)
    with pytest.raises(ValueError, match=r"`n_components`=30 exceeds"):
        subspace_alignment(two, n_components=30)
    with pytest.raises(ValueError, match=r"`method` must be one of 'pca', 'svca'"):
        subspace_alignment(two, method="ica")
    with pytest.raises(ValueError, match=r"`stable_threshold` must be in \[-1, 1\]"):
        tuning_drift(two, stable_threshold=2.0)


def test_errors_concepts(rng):
    a, b, act_a, act_b = _planted_concepts(rng)
    with pytest.raises(TypeError, match=r"concept_persistence\(\): `concepts_a` must be"):
        concept_persistence(np.zeros(3), b)
    with pytest.raises(ValueError, match=r"needs a 'concept' variable along 'path'"):
        concept_persistence(xr.Dataset({"x": ("path", [1])}), b)
    with pytest.raises(ValueError, match=r"activity of A has 60 samples and of B 30"):
        concept_persistence(a, b, activity_a=act_a, activity_b=act_b[:, :30])
    with pytest.raises(ValueError, match=r"`changed_jaccard`=0.6 must not exceed"):
        concept_persistence(a, b, changed_jaccard=0.6)
    with pytest.raises(ValueError, match=r"must be \(concept, sample\) with 4 concepts"):
        concept_persistence(a, b, activity_a=act_a[:2], activity_b=act_b)


def test_inputs_not_modified(rng):
    act, _ = _retuned(rng, n_units=20, n_cat=4, n_rep=10)
    before = act.copy(deep=True)
    tuning_drift(act)
    subspace_alignment(act, n_components=2, method="svca")
    with warnings.catch_warnings():  # 3 SVCs per session: cut short for some seeds, not all
        warnings.filterwarnings("ignore", category=FitRangeWarning)
        spectrum_over_sessions(act, n_components=5, fit_range=(2, 4))
    xr.testing.assert_identical(act, before)
