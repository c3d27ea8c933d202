"""Cross-session analyses: representational drift, subspace alignment, spectra, concept persistence.

A *session* is one checkpoint of a model (or one day of imaging). Every function here takes a
(sample, unit) population with a ``session`` coordinate along the sample dim (or a mapping
``{session: population}`` whose units are matched), streams over sample chunks the way the other
population analyses do, and returns session x session results. Unit ids of a model are identical
across sessions, so the comparisons are exact; for real data, pass only tracked cells.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.linalg
import xarray as xr

from netphys._validation import (
    as_rng,
    check_choice,
    check_int,
    check_population,
    check_positive_float,
)
from netphys.population._powerlaw import _check_fit_range
from netphys.population._spectra import _covariance, _gram, eigenspectrum
from netphys.population._stream import iter_sample_chunks, iter_unit_chunks
from netphys.population._svca import _top_svd_dense, split_time_blocks, split_units, svca

__all__ = ["concept_persistence", "spectrum_over_sessions", "subspace_alignment", "tuning_drift"]


# ------------------------------------------------------------------------------ input ----
def _from_mapping(activity: Any, func: str) -> xr.DataArray:
    """Concatenate ``{session: population}`` (or a list) along the sample dim, units matched."""
    items = list(activity.items()) if isinstance(activity, Mapping) else list(enumerate(activity))
    if not items:
        raise ValueError(f"{func}(): `activity` is empty; pass at least two sessions.")
    parts, ref_units = [], None
    for sid, data in items:
        da = check_population(data, func=func, name=f"activity[{sid!r}]")
        if "unit" not in da.coords:
            da = da.assign_coords(unit=np.arange(da.sizes["unit"]))
        da = da.rename({da.dims[0]: "time"}) if da.dims[0] != "time" else da
        units = np.asarray(da["unit"].values)
        if ref_units is None:
            ref_units = units
        elif set(units.tolist()) != set(ref_units.tolist()):
            missing = sorted(set(ref_units.tolist()) - set(units.tolist()))[:5]
            extra = sorted(set(units.tolist()) - set(ref_units.tolist()))[:5]
            raise ValueError(
                f"{func}(): units are not matched across sessions: session {sid!r} lacks units "
                f"{missing} and has extra units {extra} compared with the first session. Keep "
                "only units tracked in every session, e.g. `a.sel(unit=common)` for each."
            )
        else:
            da = da.sel(unit=ref_units)
        parts.append(da.assign_coords(session=("time", np.full(da.sizes["time"], sid))))
    return xr.concat(parts, dim="time", coords="minimal", compat="override", join="override")


def _session_population(
    activity: Any,
    *,
    func: str,
    sessions: Sequence[Any] | None,
    condition: str | None,
    min_sessions: int,
) -> tuple[xr.DataArray, np.ndarray, list[np.ndarray]]:
    """Validate; return the filtered population, its session ids and each session's rows."""
    if isinstance(activity, (Mapping, list, tuple)):
        da = _from_mapping(activity, func)
    else:
        da = check_population(activity, func=func)
    dim = str(da.dims[0])
    if "session" not in da.coords or da["session"].dims != (dim,):
        raise ValueError(
            f"{func}(): `activity` needs a 'session' coordinate along '{dim}'; got coords "
            f"{sorted(map(str, da.coords))}. Add one with `.assign_coords(session=('{dim}', "
            "ids))`, or pass a dict {session: activity}."
        )
    keep = np.ones(da.sizes[dim], dtype=bool)
    if condition is not None and "condition" in da.coords:
        cond = np.asarray(da["condition"].values).astype(str)
        keep &= cond == str(condition)
        if not keep.any():
            raise ValueError(
                f"{func}(): no frame has condition {condition!r}; conditions present: "
                f"{sorted(set(cond.tolist()))}. Pass one of them, or `condition=None` for all."
            )
    sess = np.asarray(da["session"].values)
    present = np.unique(sess[keep])
    if sessions is None:
        ids = present
    else:
        ids = np.asarray(list(sessions))
        absent = [s for s in ids.tolist() if s not in set(present.tolist())]
        if absent:
            raise ValueError(
                f"{func}(): `sessions` {absent} not found in the data; sessions present: "
                f"{present.tolist()}."
            )
    if len(ids) < min_sessions:
        raise ValueError(
            f"{func}(): needs at least {min_sessions} sessions to compare; got {len(ids)} "
            f"(session ids {np.asarray(ids).tolist()}). Record more checkpoints, or pass a "
            "population whose 'session' coordinate has several values."
        )
    keep &= np.isin(sess, ids)
    da = da.isel({dim: np.flatnonzero(keep)})
    sess = sess[keep]
    rows = [np.flatnonzero(sess == s) for s in ids]
    return da, np.asarray(ids), rows


def _session_coords(da: xr.DataArray, ids: np.ndarray, rows: list[np.ndarray]) -> dict[str, Any]:
    """Per-session coords (``epoch``, ``task`` ...) taken from each session's first frame."""
    out: dict[str, Any] = {}
    dim = da.dims[0]
    for name in ("epoch", "step"):
        if name in da.coords and da[name].dims == (dim,):
            vals = np.asarray(da[name].values)
            out[name] = np.asarray([vals[r[0]] for r in rows])
    return out


def _unit_coords(da: xr.DataArray) -> dict[str, Any]:
    return {str(k): v.variable for k, v in da.coords.items() if v.dims == ("unit",)}


def _nonfinite_error(func: str, session: Any, block: np.ndarray) -> ValueError:
    bad = np.flatnonzero(~np.isfinite(block).all(axis=0))[:5].tolist()
    return ValueError(
        f"{func}(): `activity` has NaN or inf in session {session!r} (unit positions {bad}...). "
        "Units that are not matched in every session (e.g. cells not tracked on that day) must "
        "be dropped first, e.g. `activity.dropna('unit')`."
    )


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
    sums = np.zeros((n_s * n_c, n_u))
    for start, stop, block in iter_sample_chunks(
        da, chunk_size=chunk_size, rows=code >= 0, progress=progress, desc=func
    ):
        c = code[start:stop]
        for u in np.unique(c[c >= 0]):
            sel = block[c == u]
            if not np.isfinite(sel).all():
                raise _nonfinite_error(func, ids.tolist()[u // n_c], sel)
            sums[u] += sel.sum(axis=0)
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


# -------------------------------------------------------------------------- alignment ----
def _pca_basis(
    sub: xr.DataArray,
    k: int,
    chunk_size: int | None,
    progress: bool | None,
    func: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Top-k PCA eigenvalues, unit-space basis (N, k), unit means and total variance, via the
    smaller of the unit covariance (streamed over frames) and the frame Gram matrix (streamed
    over units)."""
    n, n_u = sub.shape
    if n_u <= n:
        cov, mean = _covariance(sub, chunk_size, progress, func)
        m = cov.shape[0]
        evals, vecs = scipy.linalg.eigh(cov, subset_by_index=[m - k, m - 1])
        return evals[::-1], vecs[:, ::-1], mean, float(np.trace(cov))
    gram = _gram(sub, chunk_size, progress, func)
    evals, u = scipy.linalg.eigh(gram, subset_by_index=[n - k, n - 1])
    evals, u = evals[::-1], u[:, ::-1]
    scale = np.sqrt(np.clip(evals, 1e-300, None) * max(n - 1, 1))
    basis, mean = np.zeros((n_u, k)), np.zeros(n_u)
    for start, stop, block in iter_unit_chunks(sub, unit_axis=1, chunk_size=chunk_size):
        mean[start:stop] = block.mean(axis=0)
        basis[start:stop] = (block - mean[start:stop]).T @ u / scale
    return evals, basis, mean, float(np.trace(gram))


def _angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles (degrees, ascending) between the column spaces of a and b."""
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    cos = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)
    return np.degrees(np.arccos(np.sort(cos)[::-1]))


def subspace_alignment(
    activity: Any,
    *,
    n_components: int = 10,
    method: str = "pca",
    condition: str | None = "stimulus",
    sessions: Sequence[Any] | None = None,
    split: str = "auto",
    block_length: int = 1,
    train_fraction: float = 0.5,
    chunk_size: int | None = None,
    progress: bool | None = None,
    rng: Any = 1,
) -> xr.Dataset:
    """Compare the top PCA or SVCA subspaces of every pair of sessions.

    For each session, the top ``n_components`` principal components (PCA), or the top shared
    variance components of two fixed unit sets (SVCA, fitted on the session's train frames),
    span a subspace of unit space. Between sessions this returns the principal angles of the
    subspaces and how much of session A's variance (reliable variance on A's test frames, for
    SVCA) session B's components capture, relative to what A's own components capture.

    Parameters
    ----------
    activity : xarray.DataArray with dims (sample, 'unit'), or dict {session: DataArray}
        Population with a ``session`` coordinate along the sample dim (numpy or dask).
    n_components : int, default=10
        Dimension of each session's subspace.
    method : {"pca", "svca"}, default="pca"
        Subspace of each session.
    condition : str or None, default="stimulus"
        Keep only frames with this ``condition`` (ignored without that coord); None keeps all.
    sessions : sequence or None, default=None
        Session ids (two, or more for all pairs); None means all, sorted.
    split : {"auto", "checkerboard", "strips", "random"}, default="auto"
        SVCA unit split (the same for all sessions), see :func:`netphys.population.split_units`.
    block_length : int, default=1
        SVCA train/test blocks of consecutive frames (1 for i.i.d. stimuli).
    train_fraction : float, default=0.5
        SVCA fraction of each session's blocks used to fit the components.
    chunk_size : int or None, default=None
        Samples per chunk; None uses dask chunks or about 64 MiB.
    progress : bool or None, default=None
        Show progress bars; None shows them only for large inputs.
    rng : int, numpy.random.Generator or None, default=1
        Randomness of the SVCA unit and time splits.

    Returns
    -------
    xarray.Dataset
        ``principal_angle`` (session_a, session_b, angle) in degrees, ascending (for SVCA the
        mean of the angles of the two unit sets); ``mean_cos2`` (session_a, session_b) mean
        squared cosine of the angles (1: same subspace, 0: orthogonal);
        ``component_variance`` (session_a, session_b, component) variance of session A's frames
        along session B's components (reliable variance for SVCA); ``captured_variance``
        (session_a, session_b) their sum over the sum along A's own components (for SVCA it
        can exceed 1: A's own components are fitted on half of A's frames, and another
        session's may generalise better to A's test frames); for PCA,
        ``explained_variance`` (session_a, session_b) the same sum over A's total variance and
        ``total_variance`` (session).

    Raises
    ------
    ValueError
        Without a ``session`` coordinate, with fewer than two sessions, with unmatched units,
        or with more components than a session's frames (or SVCA train frames) allow.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> rng = np.random.default_rng(0)
    >>> q = np.linalg.qr(rng.normal(size=(40, 4)))[0]
    >>> x = np.concatenate([rng.normal(size=(200, 2)) * 5 @ q[:, :2].T,
    ...                     rng.normal(size=(200, 2)) * 5 @ q[:, 2:].T])
    >>> act = xr.DataArray(x + 0.1 * rng.normal(size=x.shape), dims=("time", "unit"),
    ...                    coords={"session": ("time", np.repeat([0, 1], 200))})
    >>> res = subspace_alignment(act, n_components=2)
    >>> res["principal_angle"].sel(session_a=0, session_b=1).values.round(-1)
    array([90., 90.])
    """
    func = "subspace_alignment"
    method = check_choice(method, ("pca", "svca"), func=func, name="method")
    k = check_int(n_components, func=func, name="n_components", minimum=1)
    da, ids, rows = _session_population(
        activity, func=func, sessions=sessions, condition=condition, min_sessions=2
    )
    dim = da.dims[0]
    n_s, n_u = len(ids), da.sizes["unit"]
    subs = [da.isel({dim: r}) for r in rows]
    for sid, sub in zip(ids.tolist(), subs, strict=True):
        limit = min(n_u, sub.shape[0] - 1)
        if method == "pca" and k > limit:
            raise ValueError(
                f"{func}(): `n_components`={k} exceeds min(units={n_u}, frames - 1="
                f"{sub.shape[0] - 1}) = {limit} in session {sid!r}. Ask for at most {limit}."
            )
    variables: dict[str, Any] = {}
    if method == "pca":
        bases, own, totals, means = [], [], [], []
        for sid, sub in zip(ids.tolist(), subs, strict=True):
            _check_session_finite(sub, func, sid, chunk_size)
            ev, basis, mean, total = _pca_basis(sub, k, chunk_size, progress, func)
            bases.append(basis)
            own.append(ev)
            totals.append(total)
            means.append(mean)
        allb = np.concatenate(bases, axis=1)
        comp = np.zeros((n_s, n_s, k))
        for a, sub in enumerate(subs):
            acc = np.zeros(allb.shape[1])
            for _, _, block in iter_sample_chunks(sub, chunk_size=chunk_size):
                acc += (((block - means[a]) @ allb) ** 2).sum(axis=0)
            comp[a] = (acc / max(sub.shape[0] - 1, 1)).reshape(n_s, k)
        angles = np.stack([np.stack([_angles(ba, bb) for bb in bases]) for ba in bases])
        tot = np.asarray(totals)
        with np.errstate(divide="ignore", invalid="ignore"):
            variables["explained_variance"] = (
                ("session_a", "session_b"), comp.sum(-1) / tot[:, None],
                {"long_name": "variance of A along B's components / A's total variance"},
            )  # fmt: skip
        variables["total_variance"] = (("session",), tot)
    else:
        comp, angles = _svca_alignment(
            da, subs, ids, k, split, block_length, train_fraction, chunk_size, progress, func, rng
        )
    own_sum = np.einsum("aak->a", comp)
    with np.errstate(divide="ignore", invalid="ignore"):
        captured = comp.sum(-1) / own_sum[:, None]
    cos2 = np.mean(np.cos(np.radians(angles)) ** 2, axis=-1)
    coords: dict[str, Any] = {
        "session": ids, "session_a": ids, "session_b": ids,
        "component": np.arange(1, k + 1), "angle": np.arange(1, k + 1),
    }  # fmt: skip
    for name, vals in _session_coords(da, ids, rows).items():
        coords[name] = ("session", vals)
    variables.update(
        {
            "principal_angle": (
                ("session_a", "session_b", "angle"), angles, {"units": "degree"}
            ),
            "mean_cos2": (("session_a", "session_b"), cos2),
            "component_variance": (("session_a", "session_b", "component"), comp),
            "captured_variance": (
                ("session_a", "session_b"), captured,
                {"long_name": "variance of A along B's components / along A's own"},
            ),
        }
    )  # fmt: skip
    attrs = {"method": method, "n_components": k,
             "condition": "all" if condition is None else str(condition)}  # fmt: skip
    if method == "svca":
        attrs.update(block_length=int(block_length), train_fraction=float(train_fraction))
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _check_session_finite(sub: xr.DataArray, func: str, sid: Any, chunk_size: int | None) -> None:
    for _, _, block in iter_sample_chunks(sub, chunk_size=chunk_size):
        if not np.isfinite(block).all():
            raise _nonfinite_error(func, sid, block)


def _svca_alignment(
    da: xr.DataArray,
    subs: list[xr.DataArray],
    ids: np.ndarray,
    k: int,
    split: str,
    block_length: int,
    train_fraction: float,
    chunk_size: int | None,
    progress: bool | None,
    func: str,
    rng: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-session SVCA bases on shared unit sets; reliable variance of A along B's SVCs."""
    gen = as_rng(rng, func=func)
    unit_set, _ = split_units(da, split=split, rng=gen, func=func)
    i1, i2 = np.flatnonzero(unit_set == 1), np.flatnonzero(unit_set == 2)
    us, vs, means, tests = [], [], [], []
    for sid, sub in zip(ids.tolist(), subs, strict=True):
        n = sub.shape[0]
        is_train = split_time_blocks(
            n, block_length=block_length, train_fraction=train_fraction, rng=gen, func=func
        )
        n_tr = int(is_train.sum())
        limit = min(len(i1), len(i2), n_tr - 1)
        if k > limit:
            raise ValueError(
                f"{func}(): `n_components`={k} exceeds min(set 1 units={len(i1)}, set 2 units="
                f"{len(i2)}, train frames - 1={n_tr - 1}) = {limit} in session {sid!r}. Ask for "
                f"at most {limit}, or use `method='pca'`."
            )
        if n_tr * (len(i1) + len(i2)) <= len(i1) * len(i2):
            # few train frames: keep them (smaller than the cross-covariance) and take the SVD
            # of C = A'B / n through thin QRs of A' and B' (exact, rank <= n_train)
            train = np.concatenate([
                block[is_train[start:stop]]
                for start, stop, block in iter_sample_chunks(sub, chunk_size=chunk_size,
                                                             rows=is_train)
            ])  # fmt: skip
            if not np.isfinite(train).all():
                raise _nonfinite_error(func, sid, train)
            xa, xb = train[:, i1], train[:, i2]
            m1, m2 = xa.mean(0), xb.mean(0)
            qa, ra = np.linalg.qr((xa - m1).T)
            qb, rb = np.linalg.qr((xb - m2).T)
            um, _, vmt = np.linalg.svd(ra @ rb.T / n_tr)
            u, v = qa @ um[:, :k], qb @ vmt[:k].T
        else:
            s1, s2 = np.zeros(len(i1)), np.zeros(len(i2))
            cross = np.zeros((len(i1), len(i2)))
            for start, stop, block in iter_sample_chunks(
                sub, chunk_size=chunk_size, rows=is_train, progress=progress, desc=func
            ):
                if not np.isfinite(block).all():
                    raise _nonfinite_error(func, sid, block)
                bl = block[is_train[start:stop]]
                s1 += bl[:, i1].sum(0)
                s2 += bl[:, i2].sum(0)
                cross += bl[:, i1].T @ bl[:, i2]
            m1, m2 = s1 / n_tr, s2 / n_tr
            cross = cross / n_tr - np.outer(m1, m2)
            u, _, v = _top_svd_dense(cross, k)
        us.append(u)
        vs.append(v)
        means.append((m1, m2))
        tests.append(~is_train)
    allu, allv = np.concatenate(us, axis=1), np.concatenate(vs, axis=1)
    n_s = len(ids)
    comp = np.zeros((n_s, n_s, k))
    for a, sub in enumerate(subs):
        acc, n_te = np.zeros(allu.shape[1]), int(tests[a].sum())
        for start, stop, block in iter_sample_chunks(sub, chunk_size=chunk_size, rows=tests[a]):
            b = block[tests[a][start:stop]]
            acc += (((b[:, i1] - means[a][0]) @ allu) * ((b[:, i2] - means[a][1]) @ allv)).sum(0)
        comp[a] = (acc / max(n_te, 1)).reshape(n_s, k)
    angles = np.stack([
        np.stack([(_angles(us[a], us[b]) + _angles(vs[a], vs[b])) / 2 for b in range(n_s)])
        for a in range(n_s)
    ])  # fmt: skip
    return comp, angles


# ----------------------------------------------------------------------------- spectra ----
def spectrum_over_sessions(
    activity: Any,
    *,
    n_components: int = 64,
    fit_range: tuple[int, int] = (2, 50),
    condition: str | None = "stimulus",
    sessions: Sequence[Any] | None = None,
    reliable: bool = True,
    block_length: int = 1,
    min_svca_frames: int = 40,
    chunk_size: int | None = None,
    progress: bool | None = None,
    rng: Any = 1,
) -> xr.Dataset:
    """Fit PCA (and SVCA) power-law spectra in every session.

    Units constant within a session (dead ReLUs) are left out of that session's spectra.

    Parameters
    ----------
    activity : xarray.DataArray with dims (sample, 'unit'), or dict {session: DataArray}
        Population with a ``session`` coordinate along the sample dim (numpy or dask).
    n_components : int, default=64
        Components per spectrum (fewer where a session's frames or units do not allow them;
        the rest are NaN).
    fit_range : tuple of int, default=(2, 50)
        1-based components of the power-law fits.
    condition : str or None, default="stimulus"
        Keep only frames with this ``condition`` (ignored without that coord); None keeps all.
    sessions : sequence or None, default=None
        Session ids; None means all, sorted. One session is allowed.
    reliable : bool, default=True
        Also run :func:`netphys.population._svca` in sessions with at least
        ``min_svca_frames`` frames (NaN elsewhere).
    block_length : int, default=1
        SVCA train/test block length (1 for i.i.d. stimuli).
    min_svca_frames : int, default=40
        Fewest frames a session needs for SVCA.
    chunk_size : int or None, default=None
        Samples per chunk; None uses dask chunks or about 64 MiB.
    progress : bool or None, default=None
        Show progress bars; None shows them only for large inputs.
    rng : int, numpy.random.Generator or None, default=1
        Seed of the SVCA splits (the same seed for every session).

    Returns
    -------
    xarray.Dataset
        Along (session, component): ``pca_variance``, ``pca_explained_variance_ratio``,
        ``svca_reliable_variance``, ``svca_reliable_fraction``. Along session: ``pca_alpha``,
        ``pca_r2``, ``svca_alpha``, ``svca_r2``, ``reliable_fraction`` (reliable over total
        variance, summed over the SVCs), ``n_frames``, ``n_active_units``.

    Raises
    ------
    ValueError
        Without a ``session`` coordinate, or with unmatched (NaN) units.

    Examples
    --------
    >>> import xarray as xr
    >>> from netphys.population import simulate_population
    >>> a = simulate_population(80, 200, alpha=1.0, snr=10.0, rng=0)["activity"]
    >>> b = simulate_population(80, 200, alpha=2.0, snr=10.0, rng=1)["activity"]
    >>> res = spectrum_over_sessions({0: a, 1: b}, n_components=30, fit_range=(2, 20))
    >>> res["pca_alpha"].values.round(0)
    array([1., 2.])
    """
    func = "spectrum_over_sessions"
    k_req = check_int(n_components, func=func, name="n_components", minimum=1)
    fit = _check_fit_range(fit_range, func=func)
    min_svca_frames = check_int(min_svca_frames, func=func, name="min_svca_frames", minimum=4)
    block_length = check_int(block_length, func=func, name="block_length", minimum=1)
    da, ids, rows = _session_population(
        activity, func=func, sessions=sessions, condition=condition, min_sessions=1
    )
    dim = da.dims[0]
    n_s = len(ids)
    pvar = np.full((n_s, k_req), np.nan)
    pratio = np.full((n_s, k_req), np.nan)
    rvar = np.full((n_s, k_req), np.nan)
    rfrac = np.full((n_s, k_req), np.nan)
    scalars = {name: np.full(n_s, np.nan) for name in
               ("pca_alpha", "pca_r2", "svca_alpha", "svca_r2", "reliable_fraction")}  # fmt: skip
    n_frames, n_active = np.zeros(n_s, int), np.zeros(n_s, int)
    for i, (sid, r) in enumerate(zip(ids.tolist(), rows, strict=True)):
        sub = da.isel({dim: r})
        _check_session_finite(sub, func, sid, chunk_size)
        sd = np.asarray(sub.std(str(dim)).values)
        sub = sub.isel(unit=np.flatnonzero(sd > 0))
        n_frames[i], n_active[i] = sub.shape
        if n_active[i] < 2 or n_frames[i] < 3:
            continue
        k = min(k_req, n_active[i], n_frames[i] - 1)
        spec = eigenspectrum(sub, n_components=k, fit_range=fit, chunk_size=chunk_size,
                             progress=progress)  # fmt: skip
        pvar[i, :k] = spec["variance"].values
        pratio[i, :k] = spec["explained_variance_ratio"].values
        scalars["pca_alpha"][i] = float(spec["alpha"])
        scalars["pca_r2"][i] = float(spec["r2"])
        if not reliable or n_frames[i] < min_svca_frames:
            continue
        n_blocks = -(-int(n_frames[i]) // block_length)
        n_train = min(int(np.ceil(n_blocks * 0.5)) * block_length, int(n_frames[i]))
        sets, _ = split_units(sub, rng=np.random.default_rng(0), func=func)
        ks = min(k_req, int((sets == 1).sum()), int((sets == 2).sum()), n_train - 2)
        if ks < 1:
            continue
        res = svca(sub, n_components=ks, block_length=block_length, fit_range=fit,
                   chunk_size=chunk_size, progress=progress, rng=rng)  # fmt: skip
        ks = res.sizes["component"]
        rvar[i, :ks] = res["reliable_variance"].values
        rfrac[i, :ks] = res["reliable_fraction"].values
        scalars["svca_alpha"][i] = float(res["alpha"])
        scalars["svca_r2"][i] = float(res["r2"])
        scalars["reliable_fraction"][i] = float(
            res["reliable_variance"].sum() / res["total_variance"].sum()
        )
    coords: dict[str, Any] = {"session": ids, "component": np.arange(1, k_req + 1)}
    for name, vals in _session_coords(da, ids, rows).items():
        coords[name] = ("session", vals)
    variables: dict[str, Any] = {
        "pca_variance": (("session", "component"), pvar),
        "pca_explained_variance_ratio": (("session", "component"), pratio),
        "svca_reliable_variance": (("session", "component"), rvar),
        "svca_reliable_fraction": (("session", "component"), rfrac),
        "n_frames": (("session",), n_frames),
        "n_active_units": (("session",), n_active),
    }
    variables.update({name: (("session",), v) for name, v in scalars.items()})
    return xr.Dataset(
        variables, coords=coords,
        attrs={"method": func, "fit_start": fit[0], "fit_stop": fit[1],
               "condition": "all" if condition is None else str(condition)},
    )  # fmt: skip


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
