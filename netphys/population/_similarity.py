"""Representational similarity (cross-validated RDMs, Spearman) and linear CKA.

Both need the same stimuli shown to both systems, each at least twice. Every score comes with
a split-half noise ceiling computed from the two repeats of each system, as Brain-Score and
rsatoolbox report them: the Spearman-Brown-corrected agreement of a system with itself across
repeats, and for a pair the geometric mean of the two systems' ceilings.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
import xarray as xr

__all__ = ["linear_cka", "rdm", "rsa", "shared_stimuli", "similarity", "split_repeats"]


def split_repeats(
    values: np.ndarray, stimulus: np.ndarray, repeat: np.ndarray, ids: np.ndarray
) -> np.ndarray:
    """Per-stimulus responses of the first two repeats: array (2, len(ids), n_units).

    Repeat half ``h`` is the mean over the presentations of each stimulus whose rank among
    that stimulus's repeats has parity ``h`` (even and odd repeats).
    """
    reps = np.unique(repeat[repeat >= 0])
    out = np.zeros((2, len(ids), values.shape[1]))
    for h in range(2):
        sel = np.isin(repeat, reps[h::2])
        for j, s in enumerate(ids):
            out[h, j] = values[sel & (stimulus == s)].mean(axis=0)
    return out


def rdm(halves: np.ndarray, *, crossvalidated: bool = True) -> np.ndarray:
    """Representational dissimilarity matrix (stimulus x stimulus) from two repeat halves.

    Cross-validated squared Euclidean distance per unit:
    ``d(i, j) = (a_i - a_j)·(b_i - b_j) / N`` with ``a``, ``b`` the two halves, an unbiased
    estimate of the noise-free distance (it can be negative). ``crossvalidated=False`` gives
    the plain squared distance of the mean response.

    Examples
    --------
    >>> x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    >>> rdm(np.stack([x, x]))[0].tolist()
    [0.0, 0.5, 2.0]
    """
    a, b = halves[0], halves[1]
    if not crossvalidated:
        a = b = (a + b) / 2
    # (a_i - a_j)·(b_i - b_j) = a_i b_i + a_j b_j - a_i b_j - a_j b_i
    gab = a @ b.T
    diag = (a * b).sum(1)
    out: np.ndarray = (diag[:, None] + diag[None, :] - gab - gab.T) / a.shape[1]
    np.fill_diagonal(out, 0.0)
    return out


def rsa(rdm_a: np.ndarray, rdm_b: np.ndarray) -> float:
    """Spearman correlation of the upper triangles of two RDMs."""
    iu = np.triu_indices(rdm_a.shape[0], k=1)
    return float(scipy.stats.spearmanr(rdm_a[iu], rdm_b[iu])[0])


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment of two (stimulus x unit) response matrices.

    ``CKA = ||Yᵀ X||²_F / (||Xᵀ X||_F ||Yᵀ Y||_F)`` after centring each unit over stimuli
    (Kornblith et al. 2019); 1 for representations equal up to rotation and isotropic scaling.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((20, 5))
    >>> round(linear_cka(x, 3 * x @ np.linalg.qr(np.random.default_rng(1).normal(size=(5, 5)))[0]), 6)
    1.0
    """
    xc, yc = x - x.mean(0), y - y.mean(0)
    kx, ky = xc @ xc.T, yc @ yc.T  # Gram form: cheap for few stimuli and many units
    num = float((kx * ky).sum())
    den = float(np.sqrt((kx * kx).sum() * (ky * ky).sum()))
    return num / den if den > 0 else np.nan


def _spearman_brown(r: float) -> float:
    return 2 * r / (1 + r) if np.isfinite(r) and r > -1 else np.nan


def _self_agreement(halves: np.ndarray) -> tuple[float, float]:
    """Split-half reliability of a system's RDM (Spearman-Brown) and of its CKA."""
    r_rdm = rsa(
        rdm(halves[[0, 0]], crossvalidated=False), rdm(halves[[1, 1]], crossvalidated=False)
    )
    return _spearman_brown(r_rdm), linear_cka(halves[0], halves[1])


def similarity(halves_a: np.ndarray, halves_b: np.ndarray) -> dict[str, float]:
    """RSA and CKA between two systems, with split-half noise ceilings.

    Parameters
    ----------
    halves_a, halves_b : numpy.ndarray of shape (2, n_stimuli, n_units)
        Each system's responses to the same stimuli (same order) in two repeat halves
        (see :func:`split_repeats`); the unit counts may differ.

    Returns
    -------
    dict
        ``rsa`` (Spearman between the cross-validated RDMs), ``rsa_ceiling`` (geometric mean
        of the systems' Spearman-Brown-corrected split-half RDM reliabilities: 1 for noise-free
        data), ``rsa_normalised`` (``rsa / rsa_ceiling``); ``cka`` (linear CKA of the
        repeat-mean responses), ``cka_ceiling`` (geometric mean of each system's CKA between
        its two halves), ``cka_normalised``; ``n_stimuli``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> z = rng.standard_normal((30, 4))
    >>> a = np.stack([z @ rng.standard_normal((4, 50))] * 2)
    >>> b = np.stack([z @ rng.standard_normal((4, 60))] * 2)
    >>> sim = similarity(a, b)
    >>> sim["rsa_ceiling"], sim["cka_ceiling"]
    (1.0, 1.0)
    """
    rsa_ab = rsa(rdm(halves_a), rdm(halves_b))
    cka_ab = linear_cka(halves_a.mean(0), halves_b.mean(0))
    ra, ca = _self_agreement(halves_a)
    rb, cb = _self_agreement(halves_b)
    rsa_ceiling = float(np.sqrt(ra * rb)) if ra > 0 and rb > 0 else np.nan
    cka_ceiling = float(np.sqrt(ca * cb)) if ca > 0 and cb > 0 else np.nan
    return {
        "rsa": rsa_ab,
        "rsa_ceiling": rsa_ceiling,
        "rsa_normalised": rsa_ab / rsa_ceiling if rsa_ceiling > 0 else np.nan,
        "cka": cka_ab,
        "cka_ceiling": cka_ceiling,
        "cka_normalised": cka_ab / cka_ceiling if cka_ceiling > 0 else np.nan,
        "n_stimuli": float(halves_a.shape[1]),
    }


def shared_stimuli(a: xr.DataArray, b: xr.DataArray, *, min_stimuli: int = 4) -> np.ndarray | None:
    """Stimulus ids shown at least twice to both systems (None when too few or no coords)."""
    ids = []
    for da in (a, b):
        if "stimulus" not in da.coords or "repeat" not in da.coords:
            return None
        stim = np.asarray(da["stimulus"].values)
        rep = np.asarray(da["repeat"].values)
        ok = (stim >= 0) & (rep >= 0)
        s = np.unique(stim[ok])
        reps = [len(np.unique(rep[ok & (stim == v)])) for v in s]
        ids.append({int(v) for v, c in zip(s, reps, strict=True) if c >= 2})
    common = np.array(sorted(ids[0] & ids[1]))
    return common if len(common) >= min_stimuli else None
