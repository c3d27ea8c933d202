"""Sparseness of population codes: lifetime and population sparseness, fraction active, kurtosis.

Definitions (responses ``r >= 0`` of one unit over ``n`` frames, or of ``n`` units in one frame):

- Treves-Rolls activity ratio ``A = (sum(r) / n) ** 2 / (sum(r ** 2) / n)``; ``A = 1/n`` when a
  single response is non-zero, ``A = 1`` when all are equal.
- Vinje-Gallant sparseness ``S = (1 - A) / (1 - 1/n)`` in [0, 1]: 0 dense, 1 maximally sparse.
- Fraction active: share of responses above ``threshold`` (default: strictly above 0).
- Excess kurtosis (Fisher, biased moments): 0 for a Gaussian, large for sparse, heavy-tailed
  responses (Willmore & Tolhurst 2001).

*Lifetime* measures are per unit across frames; *population* measures per frame across units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import check_magnitude, check_population, check_positive_float
from netphys.population._stream import iter_sample_chunks

__all__ = ["sparseness", "sparseness_summary"]

_FUNC = "sparseness"


def _check_threshold(threshold: Any, func: str) -> float:
    return check_positive_float(threshold, func=func, name="threshold", allow_zero=True)


def _vinje_gallant(mean: np.ndarray, mean_sq: np.ndarray, n: int) -> np.ndarray:
    """Vinje-Gallant sparseness from the mean and mean square; NaN where undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(mean_sq > 0, mean**2 / np.where(mean_sq > 0, mean_sq, 1.0), np.nan)
        if n < 2:
            return np.full_like(ratio, np.nan)
        return (1.0 - ratio) / (1.0 - 1.0 / n)


def _kurtosis_rows(block: np.ndarray) -> np.ndarray:
    """Excess kurtosis of every row (biased moments); NaN for constant rows."""
    centred = block - block.mean(axis=1, keepdims=True)
    m2 = (centred**2).mean(axis=1)
    m4 = (centred**4).mean(axis=1)
    scale = np.maximum(np.abs(block).max(axis=1), 1e-300) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m2 > 1e-24 * scale, m4 / m2**2 - 3.0, np.nan)


def _sparseness_kernel(
    da: xr.DataArray, threshold: float, chunk_size: int | None
) -> dict[str, np.ndarray]:
    """One pass over sample chunks: per-frame measures and per-unit moment sums."""
    n_t, n_u = da.shape
    out = {
        "population_sparseness": np.empty(n_t),
        "fraction_active": np.empty(n_t),
        "population_kurtosis": np.empty(n_t),
    }
    s1 = np.zeros(n_u)
    s2 = np.zeros(n_u)
    active = np.zeros(n_u)
    shift: np.ndarray | None = None
    d = np.zeros((4, n_u))  # sums of (x - shift) ** p, p = 1..4 (shift limits cancellation)
    minimum = np.inf
    for start, stop, block in iter_sample_chunks(da, chunk_size=chunk_size, desc=_FUNC):
        if not np.isfinite(block).all():
            bad = start + int(np.argmax(~np.isfinite(block).all(axis=1)))
            raise ValueError(
                f"{_FUNC}(): `activity` holds NaN or inf (first at sample {bad}). Drop or fill "
                "those frames first, e.g. `activity.fillna(0)` or `.dropna('time')`."
            )
        check_magnitude(block, func=_FUNC)
        minimum = min(minimum, float(block.min()))
        mean = block.mean(axis=1)
        mean_sq = (block**2).mean(axis=1)
        out["population_sparseness"][start:stop] = _vinje_gallant(mean, mean_sq, n_u)
        out["fraction_active"][start:stop] = (block > threshold).mean(axis=1)
        out["population_kurtosis"][start:stop] = _kurtosis_rows(block)
        s1 += block.sum(axis=0)
        s2 += (block**2).sum(axis=0)
        active += (block > threshold).sum(axis=0)
        if shift is None:
            shift = block.mean(axis=0)
        y = block - shift
        y2 = y * y
        d += np.stack([y.sum(0), y2.sum(0), (y2 * y).sum(0), (y2 * y2).sum(0)])
    if minimum < 0:
        raise ValueError(
            f"{_FUNC}(): `activity` must be non-negative (rates, deconvolved events, spike "
            f"counts or rectified activations); got a minimum of {minimum:g}. Rectify first, "
            "e.g. `activity.clip(min=0)`, or pass suite2p `spks` instead of `F`."
        )
    mu = d[0] / n_t
    m2 = d[1] / n_t - mu**2
    m4 = d[3] / n_t - 4 * mu * d[2] / n_t + 6 * mu**2 * d[1] / n_t - 3 * mu**4
    scale = np.maximum(s2 / n_t, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        kurt = np.where(m2 > 1e-12 * scale, m4 / m2**2 - 3.0, np.nan)
    out.update(
        lifetime_sparseness=_vinje_gallant(s1 / n_t, s2 / n_t, n_t),
        fraction_frames_active=active / n_t,
        lifetime_kurtosis=kurt,
        mean_response=s1 / n_t,
    )
    return out


_ATTRS = {
    "lifetime_sparseness": "Vinje-Gallant sparseness of each unit across frames",
    "fraction_frames_active": "share of frames in which the unit is above threshold",
    "lifetime_kurtosis": "excess kurtosis of each unit's responses across frames",
    "mean_response": "mean response of each unit",
    "population_sparseness": "Vinje-Gallant sparseness of each frame across units",
    "fraction_active": "share of units above threshold in each frame",
    "population_kurtosis": "excess kurtosis of each frame's responses across units",
}


def sparseness(
    activity: Any, *, threshold: float = 0.0, chunk_size: int | None = None
) -> xr.Dataset:
    """Lifetime and population sparseness, fraction active and kurtosis of a population.

    Parameters
    ----------
    activity : array-like or xarray.DataArray, (sample, 'unit')
        Non-negative responses: rectified activations, deconvolved events (suite2p ``spks``),
        spike counts or rates. numpy- or dask-backed; streamed over sample chunks.
    threshold : float, default=0.0
        A response counts as *active* when strictly above ``threshold``. The default suits
        ReLU activations, spike counts and deconvolved events (any event is activity); for
        noisy continuous signals pick a noise-level threshold.
    chunk_size : int, optional
        Samples per chunk (default: the dask chunks, or about 64 MiB).

    Returns
    -------
    xarray.Dataset
        Along ``unit`` (unit coords such as ``layer`` kept): ``lifetime_sparseness``,
        ``fraction_frames_active``, ``lifetime_kurtosis``, ``mean_response``. Along the sample
        dim (its coords such as ``session``, ``condition``, ``label`` kept):
        ``population_sparseness``, ``fraction_active``, ``population_kurtosis``.
        Sparseness is NaN for an all-zero unit or frame; kurtosis is NaN for a constant one.

    Raises
    ------
    ValueError
        If ``activity`` is not 2-D, has fewer than 2 samples or units, holds NaN/inf or
        negative values, or ``threshold`` is negative.

    Notes
    -----
    With ``A = mean(r) ** 2 / mean(r ** 2)`` (Treves & Rolls 1991), the sparseness is
    ``S = (1 - A) / (1 - 1/n)`` (Vinje & Gallant 2000), ``n`` the number of frames (lifetime)
    or units (population). Kurtosis is Fisher's excess kurtosis with biased moments
    (``scipy.stats.kurtosis`` defaults). A population in which a fraction ``p`` of the units
    respond with equal amplitude has ``A = p`` and ``S = (1 - p) / (1 - 1/n)``.

    References
    ----------
    Treves & Rolls (1991) Network 2, 371-397. Vinje & Gallant (2000) Science 287, 1273-1276.
    Willmore & Tolhurst (2001) Network 12, 255-270.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((4, 10))
    >>> x[np.arange(4), np.arange(4)] = 1.0  # one unit of ten responds per frame
    >>> ds = sparseness(x)
    >>> float(ds["fraction_active"][0]), round(float(ds["population_sparseness"][0]), 6)
    (0.1, 1.0)
    """
    thr = _check_threshold(threshold, _FUNC)
    da = check_population(activity, func=_FUNC, min_samples=2, min_units=2)
    res = _sparseness_kernel(da, thr, chunk_size)
    sample_dim = da.dims[0]
    sample_coords = {k: v.variable for k, v in da.coords.items() if v.dims == (sample_dim,)}
    unit_coords = {k: v.variable for k, v in da.coords.items() if v.dims == ("unit",)}
    variables = {}
    for name, values in res.items():
        dim = "unit" if name in _UNIT_VARS else sample_dim
        variables[name] = xr.DataArray(values, dims=(dim,), attrs={"long_name": _ATTRS[name]})
    ds = xr.Dataset(variables, coords={**sample_coords, **unit_coords})
    ds.attrs = {"method": "sparseness", "threshold": thr, "definition": "Vinje-Gallant"}
    return ds


_UNIT_VARS = ("lifetime_sparseness", "fraction_frames_active", "lifetime_kurtosis", "mean_response")


def _nanmedian(values: np.ndarray) -> float:
    return float(np.nanmedian(values)) if np.isfinite(values).any() else float("nan")


def _groups(da: xr.DataArray, name: str, dim: str, func: str) -> list[Any]:
    if name not in da.coords or da[name].dims != (dim,):
        have = [k for k, v in da.coords.items() if v.dims == (dim,)]
        raise ValueError(
            f"{func}(): `by` entry {name!r} must be a coord along {dim!r}; coords along it: "
            f"{have}. Add one with `.assign_coords({name}=({dim!r}, values))`."
        )
    return list(dict.fromkeys(np.asarray(da[name].values).tolist()))


def sparseness_summary(
    activity: Any,
    *,
    by: Sequence[str] = ("session", "layer"),
    threshold: float = 0.0,
    condition: str | None = None,
) -> xr.Dataset:
    """Mean sparseness numbers per group of frames and group of units (e.g. session x layer).

    Parameters
    ----------
    activity : xarray.DataArray, (sample, 'unit')
        Non-negative responses with the coords named in ``by``.
    by : sequence of str, default=("session", "layer")
        At most one coord along the sample dim and one along ``unit``; each becomes a dim of
        the result. Sparseness is computed within every (frame group, unit group) block.
    threshold : float, default=0.0
        Activity threshold (see :func:`sparseness`).
    condition : str, optional
        Keep only frames whose ``condition`` coord equals this (e.g. ``"stimulus"``).

    Returns
    -------
    xarray.Dataset
        Dims from ``by``; variables ``lifetime_sparseness`` (median over units with a defined
        value), ``population_sparseness`` (mean over frames with a defined value),
        ``fraction_active`` (mean over frames), ``lifetime_kurtosis`` (median over units),
        ``n_silent_units`` (units never above threshold), ``n_frames``, ``n_units``.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> x = xr.DataArray(np.eye(6)[np.r_[0:6, 0:6]], dims=("time", "unit"),
    ...                  coords={"session": ("time", [0] * 6 + [1] * 6)})
    >>> float(sparseness_summary(x, by=["session"])["fraction_active"].sel(session=1))
    0.16666666666666666
    """
    func = "sparseness_summary"
    da = check_population(activity, func=func, min_samples=2, min_units=2)
    if condition is not None:
        _groups(da, "condition", str(da.dims[0]), func)
        da = da.isel({da.dims[0]: np.asarray(da["condition"].values).astype(str) == condition})
    by = [by] if isinstance(by, str) else list(by)
    for name in by:
        if name not in da.coords or da[name].ndim != 1:
            have = [k for k, v in da.coords.items() if v.ndim == 1]
            raise ValueError(
                f"{func}(): `by` entry {name!r} must be a coord along {da.dims[0]!r} or 'unit'; "
                f"coords: {have}. Add one with `.assign_coords({name}=({da.dims[0]!r}, values))`."
            )
    sample_by = [b for b in by if b in da.coords and da[b].dims == (da.dims[0],)]
    unit_by = [b for b in by if b not in sample_by]
    if len(sample_by) > 1 or len(unit_by) > 1:
        raise ValueError(
            f"{func}(): `by` takes at most one frame coord and one unit coord; got {by}."
        )
    frame_groups = _groups(da, sample_by[0], str(da.dims[0]), func) if sample_by else [None]
    unit_groups = _groups(da, unit_by[0], "unit", func) if unit_by else [None]
    names = ("lifetime_sparseness", "population_sparseness", "fraction_active",
             "lifetime_kurtosis", "n_silent_units", "n_frames", "n_units")  # fmt: skip
    table = {n: np.full((len(frame_groups), len(unit_groups)), np.nan) for n in names}
    for i, fg in enumerate(frame_groups):
        rows = da if fg is None else da.isel({da.dims[0]: da[sample_by[0]].values == fg})
        for j, ug in enumerate(unit_groups):
            block = rows if ug is None else rows.isel(unit=rows[unit_by[0]].values == ug)
            table["n_frames"][i, j], table["n_units"][i, j] = block.shape
            if min(block.shape) < 2:
                continue
            ds = sparseness(block.drop_vars(list(block.coords)), threshold=threshold)
            life = ds["lifetime_sparseness"].values
            kurt = ds["lifetime_kurtosis"].values
            table["lifetime_sparseness"][i, j] = _nanmedian(life)
            table["population_sparseness"][i, j] = float(ds["population_sparseness"].mean())
            table["fraction_active"][i, j] = float(ds["fraction_active"].mean())
            table["lifetime_kurtosis"][i, j] = _nanmedian(kurt)
            table["n_silent_units"][i, j] = int((ds["fraction_frames_active"] == 0).sum())
    dims = sample_by + unit_by
    coords = {}
    if sample_by:
        coords[sample_by[0]] = frame_groups
    if unit_by:
        coords[unit_by[0]] = unit_groups
    shape = tuple(len(coords[d]) for d in dims)
    out = xr.Dataset(
        {n: (dims, v.reshape(shape)) for n, v in table.items()},
        coords=coords,
        attrs={"method": "sparseness_summary", "threshold": float(threshold),
               "condition": "all" if condition is None else condition},
    )  # fmt: skip
    for n in ("n_silent_units", "n_frames", "n_units"):
        out[n] = out[n].astype(np.int64)
    return out
