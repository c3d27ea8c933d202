"""Reduced-rank regression from sufficient statistics summed blockwise over sample chunks.

A ridge RRR fit on a set of samples needs only their count and the sums ``Σx``, ``Σy``,
``Σxxᵀ``, ``Σxyᵀ``; its squared error on another set needs that set's sums plus ``Σy²`` per
target. :func:`sample_moments` accumulates these for several sample groups in one pass over
sample chunks (:func:`reduce_sample_chunks`: chunk by chunk locally, or on the workers with
a tree reduction when a ``dask.distributed`` client is current and an input is dask-backed),
so the cross-validated RRR never holds more than a chunk of the data. Sums are of the data
minus its first row, so that centring them later loses no precision.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import SAMPLE_DIMS, check_finite
from netphys.population._rrr_estimator import _rrr_from_cov
from netphys.population._splits import split_time_blocks
from netphys.population._stream import iter_sample_chunks, reduce_sample_chunks

__all__ = [
    "as_lazy_matrix",
    "choose_lambdas",
    "fit_moments",
    "fold_groups",
    "residual_products",
    "sample_moments",
    "scale_source",
    "subset",
    "targets",
    "train_scale",
]

Moments = dict[str, np.ndarray]


def as_lazy_matrix(data: Any, *, func: str, name: str) -> tuple[Any, xr.DataArray | None]:
    """Return ``data`` as a 2-D (sample, feature) numpy or dask array, not loaded."""
    import dask.array as dsa

    da = None
    if isinstance(data, xr.DataArray):
        if data.ndim == 1:
            data = data.expand_dims("feature", axis=1)
        if data.ndim == 2 and data.dims[1] in SAMPLE_DIMS and data.dims[0] not in SAMPLE_DIMS:
            data = data.T
        da, data = data, data.data
    arr = data if isinstance(data, dsa.Array) else np.array(data, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{func}(): `{name}` must be 2-D (sample, feature); got {arr.shape}.")
    return arr, da


def _combined(source: Any, target: Any) -> xr.DataArray:
    """Source and target side by side as one (sample, unit) array, lazy when either is."""
    import dask.array as dsa

    if isinstance(source, dsa.Array) or isinstance(target, dsa.Array):
        lazy = source if isinstance(source, dsa.Array) else target
        rows = lazy.chunks[0]
        parts = [
            a if isinstance(a, dsa.Array) else dsa.from_array(np.asarray(a), chunks=(rows, -1))
            for a in (source, target)
        ]
        data: Any = dsa.concatenate([p.rechunk({0: rows}) for p in parts], axis=1)
    else:
        data = np.hstack([np.asarray(source, np.float64), np.asarray(target, np.float64)])
    return xr.DataArray(data, dims=("sample", "unit"))


def _moments_kernel(
    start: int,
    stop: int,
    block: np.ndarray,
    *,
    n_x: int,
    groups: np.ndarray,
    ref: np.ndarray,
    names: tuple[str, str],
    func: str,
    paired: bool,
) -> dict[str, Any]:
    """Per-group sums of one chunk (rows ``start:stop``) of the shifted data."""
    for part, name in ((block[:, :n_x], names[0]), (block[:, n_x:], names[1])):
        check_finite(part, func=func, name=name, offset=(start, 0))
    d = block - ref
    x, y = d[:, :n_x], d[:, n_x:]
    masks = groups[:, start:stop]
    out: dict[str, Any] = {
        "n": masks.sum(axis=1).astype(np.float64),
        "sx": masks @ x,
        "sy": masks @ y,
        "yy": masks @ (y * y),
        "xx": np.stack([x[m].T @ x[m] for m in masks]),
        "xy": np.stack([x[m].T @ y[m] for m in masks]),
    }
    if paired:
        half = y.shape[1] // 2
        out["y12"] = masks @ (y[:, :half] * y[:, half:])
    return out


def sample_moments(
    source: Any,
    target: Any,
    groups: np.ndarray,
    *,
    func: str,
    names: tuple[str, str] = ("source", "target"),
    paired: bool = False,
    chunk_size: int | None = None,
    progress: bool | None = None,
) -> tuple[list[Moments], np.ndarray]:
    """Return the sums over each sample group (rows of the bool matrix ``groups``), in one pass.

    ``source`` and ``target`` are numpy or dask arrays (sample first). ``paired`` (target made
    of two halves ``[y1 | y2]``) adds ``y12 = Σ y1∘y2``. NaN/inf raise an error naming
    ``func`` and the argument. The sums are of the data minus its first row, which is
    returned too (source then target values).
    """
    da = _combined(source, target)
    first = next(iter_sample_chunks(da, chunk_size=1))[2][0]
    ref = np.where(np.isfinite(first), first, 0.0)  # NaN is reported by the kernel
    part = reduce_sample_chunks(
        da, _moments_kernel, chunk_size=chunk_size, progress=progress, desc=func, n_x=np.shape(source)[1],
        groups=np.asarray(groups, dtype=bool), ref=ref, names=names, func=func, paired=paired,
    )
    moments = [{key: np.asarray(val)[g] for key, val in part.items()} for g in range(len(groups))]
    return moments, ref


def subset(a: Moments, b: Moments | None = None, sign: float = 1.0) -> Moments:
    """Return ``a + sign * b`` (sums over a union or difference of sample sets)."""
    if b is None:
        return dict(a)
    return {key: a[key] + sign * b[key] for key in a}


def targets(m: Moments, cols: slice) -> Moments:
    """Return the moments restricted to some target columns."""
    out = dict(m)
    for key in ("sy", "yy"):
        out[key] = m[key][cols]
    out["xy"] = m["xy"][:, cols]
    out.pop("y12", None)
    return out


def scale_source(m: Moments, scale: np.ndarray) -> Moments:
    """Moments of the source divided by ``scale`` per feature (standardised predictors)."""
    s = 1.0 / scale
    out = dict(m)
    out["sx"] = m["sx"] * s
    out["xx"] = m["xx"] * s[:, None] * s[None, :]
    out["xy"] = m["xy"] * s[:, None]
    return out


def train_scale(m: Moments) -> np.ndarray:
    """Return the standard deviation (ddof 0) of each feature over a sample set; 1 where it is 0."""
    n = m["n"]
    mean = m["sx"] / n
    var = np.clip(np.diag(m["xx"]) / n - mean**2, 0.0, None)
    std = np.sqrt(var)
    return np.where(std > 0, std, 1.0)


def fit_moments(m: Moments, lam: float) -> dict[str, np.ndarray]:
    """Ridge RRR of all ranks fitted on a sample set given by its moments (with intercept)."""
    n = m["n"]
    x_mean, y_mean = m["sx"] / n, m["sy"] / n
    denom = max(float(n) - 1.0, 1.0)
    cxx = (m["xx"] - n * np.outer(x_mean, x_mean)) / denom
    cyx = (m["xy"] - n * np.outer(x_mean, y_mean)).T / denom
    return _rrr_from_cov(cxx, cyx, lam, x_mean, y_mean)


def residual_products(
    m: Moments, fits: tuple[dict[str, np.ndarray], ...], rank: int
) -> np.ndarray:
    """Per target, ``Σ_t r_a r_b`` over a sample set of the rank-``rank`` residuals.

    With one fit, ``r_a = r_b = y - ŷ`` (the squared error); with two (``m`` from
    :func:`sample_moments` with ``paired``, each fit for one half), the product of the
    halves' residuals. ``rank=0`` gives the residuals of the mean alone.
    """
    n = m["n"]
    half = m["sy"].shape[0] // len(fits)
    sx = m["sx"]
    sy = [m["sy"][s * half : (s + 1) * half] for s in range(len(fits))]
    xy = [m["xy"][:, s * half : (s + 1) * half] for s in range(len(fits))]

    def centred_xy(x_mean: np.ndarray, s: int) -> np.ndarray:
        """``Σ (x - x_mean)(y_s - ȳ_s)ᵀ`` with ȳ_s the mean of fit ``s``."""
        y_mean = fits[s]["y_mean"]
        return (
            xy[s] - np.outer(x_mean, sy[s]) - np.outer(sx, y_mean) + n * np.outer(x_mean, y_mean)
        )

    a, b = 0, len(fits) - 1
    xa, xb = fits[a]["x_mean"], fits[b]["x_mean"]
    ya, yb = fits[a]["y_mean"], fits[b]["y_mean"]
    wa = fits[a]["b"][:, :rank] @ fits[a]["a"][:, :rank].T
    wb = fits[b]["b"][:, :rank] @ fits[b]["a"][:, :rank].T
    gxx = m["xx"] - np.outer(xa, sx) - np.outer(sx, xb) + n * np.outer(xa, xb)
    yy = m["yy"] if len(fits) == 1 else m["y12"]
    gyy = yy - ya * sy[b] - yb * sy[a] + n * ya * yb
    out: np.ndarray = (
        gyy
        - (wb * centred_xy(xb, a)).sum(axis=0)
        - (wa * centred_xy(xa, b)).sum(axis=0)
        + (wa * (gxx @ wb)).sum(axis=0)
    )
    return out


def choose_lambdas(
    inner: Moments, valid: Moments, ranks: list[int], lams: list[float]
) -> list[float]:
    """For each rank, the lambda with the least validation error on an inner split."""
    err = np.empty((len(lams), len(ranks)))
    for i, lam in enumerate(lams):
        fit = fit_moments(inner, lam)
        for j, r in enumerate(ranks):
            err[i, j] = residual_products(valid, (fit,), r).sum()
    return [lams[i] for i in np.argmin(err, axis=0)]


def fold_groups(
    n: int, n_splits: int, block_length: int, gen: np.random.Generator, func: str
) -> np.ndarray:
    """Return the sample groups of the cross-validation, one bool row each.

    The ``n_splits`` contiguous test folds, then each fold's inner validation samples (drawn
    in blocks among its training samples).
    """
    groups = np.zeros((2 * n_splits, n), dtype=bool)
    for f, test in enumerate(np.array_split(np.arange(n), n_splits)):
        groups[f, test] = True
        train = np.flatnonzero(~groups[f])
        inner = split_time_blocks(
            len(train),
            block_length=min(block_length, max(1, len(train) // 4)),
            train_fraction=0.75,
            rng=gen,
            func=func,
        )
        groups[n_splits + f, train[~inner]] = True
    return groups
