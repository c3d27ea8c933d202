"""Persistence of path concepts between two sessions (checkpoints)."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import (
    check_positive_float,
)
from netphys.population._drift import _zscore_rows

__all__ = ["concept_persistence"]


# ---------------------------------------------------------------------------- concepts ----
def _concept_parts(
    obj: Any, activity: Any, func: str, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Path ids, concept label per path and optional (concept, sample) activity."""
    act = activity
    if isinstance(obj, xr.DataTree):
        if "concepts" not in obj.children:
            raise ValueError(
                f"{func}(): `{name}` is a DataTree without a 'concepts' node; pass the result of "
                "netphys.experiments.concepts.concept_analysis()."
            )
        ds = obj["concepts"].to_dataset()
        if act is None and "activity" in obj.children:
            act = obj["activity"].to_dataset()["concept_activity"]
    elif isinstance(obj, xr.Dataset):
        ds = obj
        if act is None and "concept_activity" in ds:
            act = ds["concept_activity"]
    else:
        raise TypeError(
            f"{func}(): `{name}` must be a concept_analysis() DataTree or a path_concepts() "
            f"Dataset; got {type(obj).__name__}."
        )
    if "concept" not in ds or "path" not in ds["concept"].dims:
        raise ValueError(
            f"{func}(): `{name}` needs a 'concept' variable along 'path' (path_concepts() "
            f"output); got variables {sorted(map(str, ds.data_vars))}."
        )
    paths = np.asarray(ds["path"].values)
    labels = np.asarray(ds["concept"].values)
    if act is not None:
        act = np.asarray(act.values if isinstance(act, xr.DataArray) else act, dtype=np.float64)
        n_con = int(labels.max() + 1) if labels.size and labels.max() >= 0 else 0
        if act.ndim != 2 or act.shape[0] != n_con:
            raise ValueError(
                f"{func}(): activity of `{name}` must be (concept, sample) with {n_con} "
                f"concepts; got shape {act.shape}."
            )
    return paths, labels, act


def concept_persistence(
    concepts_a: Any,
    concepts_b: Any,
    *,
    activity_a: Any = None,
    activity_b: Any = None,
    kept_jaccard: float = 0.5,
    changed_jaccard: float = 0.1,
    changed_correlation: float = 0.5,
) -> xr.Dataset:
    """Match each concept of session A to the best concept of session B and classify it.

    A concept is a set of computational paths (path ids are the same across sessions because
    unit ids are). Concepts are compared by the Jaccard index of their path sets and, when
    concept activity on the same inputs is given, by the Pearson correlation of their activity
    across those inputs. The best match of concept ``a`` is the B concept with the highest
    Jaccard index (ties and all-zero rows broken by the activity correlation). Then:

    - **kept**: best Jaccard >= ``kept_jaccard``;
    - **changed**: not kept, but best Jaccard >= ``changed_jaccard``, or the activity of some
      B concept correlates >= ``changed_correlation`` with it (the same function carried by
      other paths);
    - **lost**: neither.

    Parameters
    ----------
    concepts_a, concepts_b : xarray.DataTree or xarray.Dataset
        Results of :func:`netphys.experiments.concepts.concept_analysis` (its ``concepts``
        and ``activity`` nodes are used) or of :func:`netphys.population.path_concepts`.
    activity_a, activity_b : xarray.DataArray (concept, sample), optional
        Concept activity (:func:`netphys.population.concept_activity`) on the same inputs for
        both; taken from the trees when omitted.
    kept_jaccard : float, default=0.5
        Jaccard index from which a concept counts as kept.
    changed_jaccard : float, default=0.1
        Jaccard index from which a concept that is not kept counts as changed.
    changed_correlation : float, default=0.5
        Activity correlation from which a concept that is not kept counts as changed.

    Returns
    -------
    xarray.Dataset
        ``jaccard`` and ``correlation`` (concept_a, concept_b) (correlation NaN without
        activity); along concept_a: ``match`` (best B concept, -1 when B has none),
        ``match_jaccard``, ``match_correlation``, ``best_correlation``, ``status`` ("kept",
        "changed", "lost"), ``size_a``; along concept_b: ``size_b``; 0-d ``fraction_kept``,
        ``fraction_changed``, ``fraction_lost``.

    Raises
    ------
    ValueError
        On inputs without concepts, thresholds outside [0, 1], or activity of A and B on a
        different number of samples.

    Examples
    --------
    >>> import xarray as xr
    >>> a = xr.Dataset({"concept": ("path", [0, 0, 1, 1])}, coords={"path": [1, 2, 3, 4]})
    >>> b = xr.Dataset({"concept": ("path", [0, 0, 1])}, coords={"path": [1, 2, 9]})
    >>> concept_persistence(a, b)["status"].values.tolist()
    ['kept', 'lost']
    """
    func = "concept_persistence"
    for nm, val in (("kept_jaccard", kept_jaccard), ("changed_jaccard", changed_jaccard)):
        check_positive_float(val, func=func, name=nm, allow_zero=True)
        if val > 1:
            raise ValueError(f"{func}(): `{nm}` must be in [0, 1]; got {val}.")
    if changed_jaccard > kept_jaccard:
        raise ValueError(
            f"{func}(): `changed_jaccard`={changed_jaccard} must not exceed `kept_jaccard`="
            f"{kept_jaccard}."
        )
    pa, la, act_a = _concept_parts(concepts_a, activity_a, func, "concepts_a")
    pb, lb, act_b = _concept_parts(concepts_b, activity_b, func, "concepts_b")
    na = int(la.max() + 1) if la.size and la.max() >= 0 else 0
    nb = int(lb.max() + 1) if lb.size and lb.max() >= 0 else 0
    sets_a = [set(pa[la == c].tolist()) for c in range(na)]
    sets_b = [set(pb[lb == c].tolist()) for c in range(nb)]
    jac = np.zeros((na, nb))
    for i, sa in enumerate(sets_a):
        for j, sb in enumerate(sets_b):
            union = len(sa | sb)
            jac[i, j] = len(sa & sb) / union if union else 0.0
    corr = np.full((na, nb), np.nan)
    if act_a is not None and act_b is not None and na and nb:
        if act_a.shape[1] != act_b.shape[1]:
            raise ValueError(
                f"{func}(): concept activity of A has {act_a.shape[1]} samples and of B "
                f"{act_b.shape[1]}; compute both on the same inputs (the same probe set)."
            )
        za, zb = _zscore_rows(act_a, axis=1), _zscore_rows(act_b, axis=1)
        corr = np.clip(za @ zb.T, -1, 1)
    match = np.full(na, -1)
    mj, mc, bc = np.zeros(na), np.full(na, np.nan), np.full(na, np.nan)
    status = np.full(na, "lost", dtype=object)
    for i in range(na):
        if nb == 0:
            continue
        c = np.nan_to_num(corr[i], nan=-2.0)
        order = np.lexsort((-c, -jac[i]))
        j = int(order[0]) if jac[i].max() > 0 or np.isnan(corr[i]).all() else int(np.argmax(c))
        match[i], mj[i], mc[i] = j, jac[i, j], corr[i, j]
        bc[i] = np.nanmax(corr[i]) if np.isfinite(corr[i]).any() else np.nan
        if mj[i] >= kept_jaccard:
            status[i] = "kept"
        elif mj[i] >= changed_jaccard or (np.isfinite(bc[i]) and bc[i] >= changed_correlation):
            status[i] = "changed"
    frac = {s: float(np.mean(status == s)) if na else np.nan for s in ("kept", "changed", "lost")}
    return xr.Dataset(
        {
            "jaccard": (("concept_a", "concept_b"), jac),
            "correlation": (("concept_a", "concept_b"), corr),
            "match": (("concept_a",), match),
            "match_jaccard": (("concept_a",), mj),
            "match_correlation": (("concept_a",), mc),
            "best_correlation": (("concept_a",), bc),
            "status": (("concept_a",), status.astype(str)),
            "size_a": (("concept_a",), np.asarray([len(s) for s in sets_a], dtype=int)),
            "size_b": (("concept_b",), np.asarray([len(s) for s in sets_b], dtype=int)),
            "fraction_kept": ((), frac["kept"]),
            "fraction_changed": ((), frac["changed"]),
            "fraction_lost": ((), frac["lost"]),
        },
        coords={"concept_a": np.arange(na), "concept_b": np.arange(nb)},
        attrs={"method": func, "kept_jaccard": float(kept_jaccard),
               "changed_jaccard": float(changed_jaccard),
               "changed_correlation": float(changed_correlation)},
    )  # fmt: skip
