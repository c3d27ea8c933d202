"""Representational drift across sessions: tuning and population-vector correlations."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from netphys.population._session_common import (
    _nonfinite_error,
    _session_coords,
    _session_population,
    _unit_coords,
)
from netphys.population._stream import reduce_sample_chunks

__all__ = ["tuning_drift"]


# ------------------------------------------------------------------------------ drift ----
def tuning_drift(
    activity: Any,
    *,
    category: str = "label",
    categories: Sequence[Any] | None = None,
    condition: str | None = "stimulus",
    sessions: Sequence[Any] | None = None,
    stable_threshold: float = 0.5,
    chunk_size: int | None = None,
    progress: bool | None = None,
) -> xr.Dataset:
    """Measure representational drift: tuning and population-vector correlation between sessions.

    A unit's *tuning* in a session is its mean response to each category. Between two sessions,
    the per-unit tuning correlation is the Pearson correlation of the two tuning curves (across
    categories); the population-vector correlation of a category is the Pearson correlation,
    across units, of the two mean response vectors.

    Parameters
    ----------
    activity : xarray.DataArray with dims (sample, 'unit'), or dict {session: DataArray}
        Population with a ``session`` coordinate and a ``category`` coordinate along the sample
        dim (numpy- or dask-backed; read in sample chunks). Frames whose category is negative
        (``label = -1``: no category, e.g. spontaneous frames) are ignored.
    category : str, default="label"
        Name of the per-frame category coordinate.
    categories : sequence or None, default=None
        Categories to use; None means every non-negative category present.
    condition : str or None, default="stimulus"
        Keep only frames whose ``condition`` coord equals this (ignored when there is no such
        coord); None keeps every frame.
    sessions : sequence or None, default=None
        Session ids to compare, in this order; None means all, sorted.
    stable_threshold : float, default=0.5
        A unit counts as stable between two sessions when its tuning correlation is at least
        this value (``fraction_stable``).
    chunk_size : int or None, default=None
        Samples per chunk; None uses dask chunks or about 64 MiB.
    progress : bool or None, default=None
        Show a progress bar; None shows it only for large inputs.

    Returns
    -------
    xarray.Dataset
        ``tuning`` (session, category, unit) mean responses; ``n_frames`` (session, category);
        ``unit_tuning_correlation`` (session_a, session_b, unit), NaN for units without tuning
        variance in either session; ``tuning_correlation`` (session_a, session_b) its median
        over units; ``fraction_stable`` (session_a, session_b) share of units with correlation
        >= ``stable_threshold``; ``population_correlation`` (session_a, session_b, category) and
        its mean over categories ``population_correlation_mean`` (session_a, session_b).

    Raises
    ------
    ValueError
        Without a ``session`` or category coordinate, with fewer than two sessions, with
        units not matched across sessions (NaN, or different unit ids in a dict), or when a
        category has no frame in some session.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> rng = np.random.default_rng(0)
    >>> tuning = rng.normal(size=(4, 30))
    >>> label = np.tile(np.arange(4), 50)
    >>> x = np.concatenate([tuning[label], tuning[label]]) + 0.1 * rng.normal(size=(400, 30))
    >>> act = xr.DataArray(x, dims=("time", "unit"), coords={
    ...     "session": ("time", np.repeat([0, 1], 200)), "label": ("time", np.tile(label, 2))})
    >>> res = tuning_drift(act)
    >>> bool(res["tuning_correlation"].sel(session_a=0, session_b=1) > 0.9)
    True
    """
    func = "tuning_drift"
    thr = float(stable_threshold)
    if not -1.0 <= thr <= 1.0:
        raise ValueError(f"{func}(): `stable_threshold` must be in [-1, 1]; got {thr}.")
    da, ids, rows = _session_population(
        activity, func=func, sessions=sessions, condition=condition, min_sessions=2
    )
    dim = da.dims[0]
    if category not in da.coords or da[category].dims != (dim,):
        raise ValueError(
            f"{func}(): `activity` has no per-frame category coordinate {category!r}; coords: "
            f"{sorted(map(str, da.coords))}. Pass `category=` naming one, or add it with "
            f"`.assign_coords({category}=('{dim}', labels))`."
        )
    cat = np.asarray(da[category].values)
    valid = cat >= 0 if np.issubdtype(cat.dtype, np.number) else np.ones(cat.shape, bool)
    cats = np.unique(cat[valid]) if categories is None else np.asarray(list(categories))
    if cats.size < 2:
        raise ValueError(
            f"{func}(): needs at least 2 categories in {category!r}; got {cats.tolist()}."
        )
    n_s, n_c, n_u = len(ids), len(cats), da.sizes["unit"]
    sess_idx = np.full(da.sizes[dim], -1)
    for i, r in enumerate(rows):
        sess_idx[r] = i
    cat_idx = np.full(da.sizes[dim], -1)
    for j, c in enumerate(cats):
        cat_idx[(cat == c) & valid] = j
    code = np.where(cat_idx >= 0, sess_idx * n_c + cat_idx, -1)
    counts = np.bincount(code[code >= 0], minlength=n_s * n_c).reshape(n_s, n_c)
    if (counts == 0).any():
        si, ci = np.argwhere(counts == 0)[0]
        raise ValueError(
            f"{func}(): category {cats.tolist()[ci]!r} has no frame in session "
            f"{ids.tolist()[si]!r}; every session must show every category. Pass `categories=` (the ones shown in every "
            "session) or `sessions=`."
        )
    sums = reduce_sample_chunks(
        da, _tuning_kernel, chunk_size=chunk_size, rows=code >= 0, progress=progress,
        desc=func, code=code, n_groups=n_s * n_c, n_c=n_c, ids=ids.tolist(), func=func,
    )["sums"]
    tuning = (sums / counts.reshape(-1, 1)).reshape(n_s, n_c, n_u)
    unit_corr, pop_corr = _drift_kernel(tuning)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pairs give NaN, as documented
        median = np.nanmedian(unit_corr, axis=2)
        n_valid = np.isfinite(unit_corr).sum(axis=2)
        stable = np.where(
            n_valid > 0, (unit_corr >= thr).sum(axis=2) / np.maximum(n_valid, 1), np.nan
        )
    scoords = _session_coords(da, ids, rows)
    coords: dict[str, Any] = {
        "session": ids, "session_a": ids, "session_b": ids, "category": cats,
        **_unit_coords(da),
    }  # fmt: skip
    for name, vals in scoords.items():
        coords[name] = ("session", vals)
    ds = xr.Dataset(
        {
            "tuning": (("session", "category", "unit"), tuning, {"long_name": "mean response"}),
            "n_frames": (("session", "category"), counts),
            "unit_tuning_correlation": (("session_a", "session_b", "unit"), unit_corr),
            "tuning_correlation": (
                ("session_a", "session_b"), median,
                {"long_name": "median per-unit tuning correlation"},
            ),
            "fraction_stable": (("session_a", "session_b"), stable),
            "population_correlation": (("session_a", "session_b", "category"), pop_corr),
            "population_correlation_mean": (
                ("session_a", "session_b"), pop_corr.mean(axis=2),
                {"long_name": "population-vector correlation, mean over categories"},
            ),
        },
        coords=coords,
        attrs={"method": func, "category": category, "stable_threshold": thr,
               "condition": "all" if condition is None else str(condition)},
    )  # fmt: skip
    return ds


def _tuning_kernel(
    start: int, stop: int, block: np.ndarray, *, code: np.ndarray, n_groups: int, n_c: int,
    ids: list[Any], func: str,
) -> dict[str, Any]:
    """Per (session, category) sums of one chunk's frames."""
    c = code[start:stop]
    sel = c >= 0
    bad = ~np.isfinite(block[sel]).all(axis=1)
    if bad.any():
        u = int(c[sel][np.argmax(bad)])
        raise _nonfinite_error(func, ids[u // n_c], block[sel][c[sel] == u])
    sums = np.zeros((n_groups, block.shape[1]))
    np.add.at(sums, c[sel], block[sel])
    return {"sums": sums}


def _zscore_rows(x: np.ndarray, axis: int) -> np.ndarray:
    """Centre and unit-normalise along ``axis``; NaN where the norm is zero."""
    xc = x - x.mean(axis=axis, keepdims=True)
    nrm = np.linalg.norm(xc, axis=axis, keepdims=True)
    scale = np.max(np.abs(x), axis=axis, keepdims=True)
    ok = nrm > 1e-12 * np.maximum(scale, 1e-300) * np.sqrt(x.shape[axis])
    return np.where(ok, xc / np.where(ok, nrm, 1.0), np.nan)


def _drift_kernel(tuning: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit tuning correlation (S, S, N) and population-vector correlation (S, S, C)."""
    zu = _zscore_rows(tuning, axis=1)  # over categories
    unit_corr = np.einsum("acn,bcn->abn", zu, zu)
    zp = _zscore_rows(tuning, axis=2)  # over units
    pop_corr = np.einsum("acn,bcn->abc", np.nan_to_num(zp), np.nan_to_num(zp))
    const = np.isnan(zp).all(axis=2)  # (S, C): constant population vector
    pop_corr[const[:, None, :] | const[None, :, :]] = np.nan
    return np.clip(unit_corr, -1, 1), np.clip(pop_corr, -1, 1)


