"""Scores of concepts and path sets against categories: selectivity, purity, overlap.

Algorithm: ``reference/paths.md`` section 3.6. Never imports torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import xarray as xr

from netphys._validation import as_rng, check_int, check_labels, check_positive_float
from netphys.population.paths._layers import portable_strings
from netphys.population.paths._matrices import as_sparse, check_matrix

__all__ = ["class_path_overlap", "concept_selectivity", "path_classifier_agreement"]


def _class_means(a: np.ndarray, y_idx: np.ndarray, n_cls: int) -> tuple[np.ndarray, np.ndarray]:
    oh = np.zeros((y_idx.size, n_cls))
    oh[np.arange(y_idx.size), y_idx] = 1.0
    cnt = oh.sum(0)
    tot = a.sum(1, keepdims=True)
    mu = (a @ oh) / np.maximum(cnt, 1)
    mu_not = (tot - a @ oh) / np.maximum(y_idx.size - cnt, 1)
    return mu, mu_not


def _permutation_p(
    a: np.ndarray, y_idx: np.ndarray, n_cls: int, obs: np.ndarray, n_perm: int, gen: Any
) -> np.ndarray:
    """Permutation p-value of each concept's maximal selectivity."""
    ge = np.zeros(a.shape[0])
    for _ in range(n_perm):
        pm, pn = _class_means(a, gen.permutation(y_idx), n_cls)
        ge += ((pm - pn) / (pm + pn + 1e-12)).max(1) >= obs - 1e-12
    return np.asarray((1.0 + ge) / (1.0 + n_perm))


def _purity(a: np.ndarray, y_idx: np.ndarray, n_cls: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-concept purity and mass, and the mass-weighted global purity."""
    sums = np.zeros((a.shape[0], n_cls))
    for c in range(n_cls):
        sums[:, c] = a[:, y_idx == c].sum(1)
    mass = a.sum(1)
    purity = np.where(mass > 0, sums.max(1) / np.where(mass > 0, mass, 1), 0.0)
    purity_global = float((purity * mass).sum() / mass.sum()) if mass.sum() > 0 else 0.0
    return purity, mass, purity_global


def _iou(a: np.ndarray, y_idx: np.ndarray, n_cls: int) -> np.ndarray:
    """Dissection-style IoU with a class-fraction quantile threshold."""
    iou = np.zeros((a.shape[0], n_cls))
    for c in range(n_cls):
        in_c = y_idx == c
        q = np.quantile(a, 1 - in_c.mean(), axis=1)
        top = a >= q[:, None]
        inter = (top & in_c[None]).sum(1)
        union = (top | in_c[None]).sum(1)
        iou[:, c] = inter / np.maximum(union, 1)
    return iou


def concept_selectivity(
    activity: xr.DataArray,
    labels: Any,
    *,
    n_permutations: int = 1000,
    rng: Any = 0,
) -> xr.Dataset:
    """Score concepts against categories: selectivity, p-values, purity, NMI/ARI, IoU.

    Parameters
    ----------
    activity : xarray.DataArray
        Concept activity (concept, sample) from :func:`concept_activity`.
    labels : array-like
        One category per sample.
    n_permutations : int, default=1000
        Label shuffles for the p-value of each concept's maximal selectivity.
    rng : int, Generator or None, default=0
        Randomness of the shuffles.

    Returns
    -------
    xarray.Dataset
        ``mean_activity`` and ``selectivity`` (concept, category): SI = (mu_c - mu_notc) /
        (mu_c + mu_notc); ``preferred`` (concept); ``p_value`` (concept) of max_c SI;
        ``purity`` and ``mass`` (concept); ``purity_global`` (mass-weighted); ``iou`` (concept,
        category), dissection-style with a class-fraction quantile; ``dominant`` (sample)
        argmax concept (-1 if no activity); ``nmi`` and ``ari`` of dominant vs labels.

    Examples
    --------
    >>> import xarray as xr
    >>> a = xr.DataArray([[1., 1, 0, 0], [0, 0, 1, 1]], dims=("concept", "sample"))
    >>> float(concept_selectivity(a, [0, 0, 1, 1], n_permutations=10, rng=0)["nmi"])
    1.0
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    func = "concept_selectivity"
    if not isinstance(activity, xr.DataArray) or "concept" not in activity.dims:
        raise TypeError(
            f"{func}(): `activity` must be the (concept, sample) DataArray of concept_activity()."
        )
    sample_dim = next(d for d in activity.dims if d != "concept")
    a = np.asarray(activity.transpose("concept", sample_dim).values, np.float64)
    y = check_labels(labels, a.shape[1], func=func)
    n_permutations = check_int(n_permutations, func=func, name="n_permutations", minimum=0)
    gen = as_rng(rng, func=func)
    cats, y_idx = np.unique(y, return_inverse=True)
    n_cls = cats.size
    mu, mu_not = _class_means(a, y_idx, n_cls)
    si = (mu - mu_not) / (mu + mu_not + 1e-12)
    obs = si.max(1) if n_cls else np.zeros(a.shape[0])
    p_value = _permutation_p(a, y_idx, n_cls, obs, n_permutations, gen)
    purity, mass, purity_global = _purity(a, y_idx, n_cls)
    dominant = np.where(a.sum(0) > 0, a.argmax(0) if a.size else -1, -1)
    ds = xr.Dataset(
        {
            "mean_activity": (("concept", "category"), mu),
            "selectivity": (("concept", "category"), si),
            "preferred": (("concept",), cats[mu.argmax(1)] if n_cls and a.shape[0] else cats[:0]),
            "p_value": (("concept",), p_value),
            "purity": (("concept",), purity),
            "mass": (("concept",), mass),
            "purity_global": ((), purity_global),
            "iou": (("concept", "category"), _iou(a, y_idx, n_cls)),
            "dominant": ((sample_dim,), dominant),
            "nmi": ((), float(normalized_mutual_info_score(y_idx, dominant))),
            "ari": ((), float(adjusted_rand_score(y_idx, dominant))),
        },
        coords={
            "concept": activity["concept"].values,
            "category": cats,
            sample_dim: activity[sample_dim].values,
        },
    )
    ds.attrs = {"n_permutations": n_permutations}
    return portable_strings(ds)


def _class_sets(
    x: sp.csr_matrix, y_idx: np.ndarray, n_cls: int, min_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    xb = (x > 0).astype(np.float64)
    frac = np.zeros((x.shape[0], n_cls))
    mean = np.zeros((x.shape[0], n_cls))
    for c in range(n_cls):
        idx = np.flatnonzero(y_idx == c)
        frac[:, c] = np.asarray(xb[:, idx].mean(1)).ravel()
        mean[:, c] = np.asarray(x[:, idx].mean(1)).ravel()
    return frac >= min_fraction, mean


def class_path_overlap(matrix: xr.Dataset, labels: Any, *, min_fraction: float = 0.1) -> xr.Dataset:
    """Compare the path sets of categories (binary and weighted Jaccard, Qiu-style similarity).

    Parameters
    ----------
    matrix : xarray.Dataset
        Output of :func:`path_matrix` or :func:`edge_matrix`.
    labels : array-like
        One category per sample.
    min_fraction : float, default=0.1
        A path belongs to class c's path set if it is active in at least this fraction of
        class-c samples.

    Returns
    -------
    xarray.Dataset
        ``jaccard`` and ``weighted_jaccard`` (category, category_); ``class_paths``
        (path, category) bool membership; ``class_similarity`` (sample, category) = share of a
        sample's flow on each class path set.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> m = xr.Dataset({"entry_path": ("entry", [0, 1, 1, 2]), "entry_sample": ("entry", [0, 0, 1, 1]),
    ...                 "entry_flow": ("entry", np.ones(4, np.float32))},
    ...                coords={"path": [0, 1, 2], "sample": [0, 1]})
    >>> class_path_overlap(m, [0, 1])["jaccard"].values[0, 1]
    np.float64(0.3333333333333333)
    """
    func = "class_path_overlap"
    m = check_matrix(matrix, func)
    x = as_sparse(m).astype(np.float64)
    y = check_labels(labels, m.sizes["sample"], func=func)
    min_fraction = check_positive_float(
        min_fraction, func=func, name="min_fraction", allow_zero=True
    )
    cats, y_idx = np.unique(y, return_inverse=True)
    n_cls = cats.size
    member, mean = _class_sets(x, y_idx, n_cls, min_fraction)
    inter = member.T.astype(float) @ member.astype(float)
    size = member.sum(0)
    union = size[:, None] + size[None, :] - inter
    jac = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    wj = np.zeros((n_cls, n_cls))
    for c in range(n_cls):
        mn = np.minimum(mean[:, c : c + 1], mean).sum(0)
        mx = np.maximum(mean[:, c : c + 1], mean).sum(0)
        wj[c] = np.where(mx > 0, mn / np.where(mx > 0, mx, 1), 0.0)
    tot = np.asarray(x.sum(0)).ravel()
    on = np.asarray(x.T @ member.astype(float))
    sim = np.where(tot[:, None] > 0, on / np.where(tot > 0, tot, 1)[:, None], 0.0)
    ds = xr.Dataset(
        {
            "jaccard": (("category", "category_"), jac),
            "weighted_jaccard": (("category", "category_"), wj),
            "class_paths": (("path", "category"), member),
            "class_similarity": (("sample", "category"), sim),
        },
        coords={"category": cats, "category_": cats, "path": m["path"].values,
                "sample": m["sample"].values},
        attrs={"min_fraction": min_fraction},
    )  # fmt: skip
    return portable_strings(ds)


def path_classifier_agreement(overlap: xr.Dataset, predictions: Any) -> float:
    """Give the fraction of samples whose most similar class path set is the prediction.

    Parameters
    ----------
    overlap : xarray.Dataset
        Output of :func:`class_path_overlap` (its ``class_similarity``).
    predictions : array-like
        The model's predicted category per sample.

    Returns
    -------
    float
        Mean over samples of ``argmax_c class_similarity == prediction``.

    Examples
    --------
    >>> import xarray as xr
    >>> o = xr.Dataset({"class_similarity": (("sample", "category"), [[.9, .1], [.2, .8]])},
    ...                coords={"category": [0, 1]})
    >>> path_classifier_agreement(o, [0, 0])
    0.5
    """
    func = "path_classifier_agreement"
    if not isinstance(overlap, xr.Dataset) or "class_similarity" not in overlap:
        raise TypeError(
            f"{func}(): `overlap` must be the Dataset returned by class_path_overlap(); "
            f"got {type(overlap).__name__}."
        )
    sim = overlap["class_similarity"].values
    pred = check_labels(predictions, sim.shape[0], func=func, name="predictions")
    best = overlap["category"].values[sim.argmax(1)]
    return float(np.mean(best == pred))
