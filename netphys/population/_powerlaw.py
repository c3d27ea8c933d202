"""Power-law fit of an eigenspectrum (Stringer, Pachitariu et al. 2019, Nature)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import xarray as xr

from netphys.errors import FitRangeWarning
from netphys.population._conventions import check_convention, paper_fit_range

__all__ = ["fit_power_law"]

_FUNC = "fit_power_law"


def _check_fit_range(fit_range: Any, *, func: str) -> tuple[int, int]:
    try:
        start, stop = (int(v) for v in fit_range)
        ok = all(float(v) == int(v) for v in fit_range)
    except (TypeError, ValueError):
        ok = False
    if not ok or start < 1 or stop < start:
        raise ValueError(
            f"{func}(): `fit_range` must be a pair of 1-based component numbers (start, stop) "
            f"with 1 <= start <= stop; got {fit_range!r}. Use e.g. `fit_range=(11, 500)`."
        )
    return start, stop


MIN_FIT_POINTS = 3  # fewer points make no fit: two always give r2 = 1


def _power_law_kernel(
    ss: np.ndarray, start: int, stop: int, *, absolute: bool = False
) -> dict[str, Any]:
    """Weighted log-log fit of ``ss`` over 1-based components ``start..stop`` (clipped).

    Returns NaN alpha when fewer than ``MIN_FIT_POINTS`` (3) positive points remain: a line
    through two points always has ``r2 = 1`` and says nothing. Never modifies ``ss``.
    ``absolute=True`` fits ``log|ss|`` over the whole range, as ``get_powerlaw.m`` does
    (non-positive values are counted in ``n_nonpositive`` but do not stop the fit).
    """
    n_total = ss.shape[0]
    stop_c = min(stop, n_total)
    out: dict[str, Any] = {
        "alpha": np.nan,
        "intercept": np.nan,
        "r2": np.nan,
        "fit_start": start,
        "fit_stop": stop_c,
        "n_nonpositive": 0,
        "fitted": np.full(n_total, np.nan),
    }
    if start > stop_c:
        out["fit_stop"] = start - 1
        return out
    seg = ss[start - 1 : stop_c]
    nonpos = ~(seg > 0)  # NaN counts as non-positive
    out["n_nonpositive"] = int(nonpos.sum())
    if absolute:
        ss = np.abs(ss)
        if not np.all(ss[start - 1 : stop_c] > 0):
            return out  # log 0 (or NaN) inside the range: no fit
    elif nonpos.any():
        stop_c = start - 1 + int(np.argmax(nonpos))  # stop before the first non-positive value
    out["fit_stop"] = stop_c
    if stop_c - start + 1 < MIN_FIT_POINTS:
        return out
    n = np.arange(start, stop_c + 1, dtype=np.float64)
    y = np.log(ss[start - 1 : stop_c])
    w = 1.0 / n
    design = np.stack([-np.log(n), np.ones_like(n)], axis=1)
    lhs = design.T @ (w[:, None] * design)
    rhs = design.T @ (w * y)
    alpha, intercept = np.linalg.solve(lhs, rhs)
    # r2 as in get_powerlaw.m: squared correlation of log n and log ss at 100 log-spaced
    # points of the range, rounded to integers; repeated points are kept (counted twice)
    idx = np.round(np.geomspace(start, stop_c, 100)).astype(int)
    ln, ly = np.log(idx.astype(float)), np.log(ss[idx - 1])
    r2 = float(np.corrcoef(ln, ly)[0, 1] ** 2) if len(np.unique(idx)) > 2 else 1.0
    out.update(
        alpha=float(alpha),
        intercept=float(intercept),
        r2=r2,
        fitted=np.exp(intercept - alpha * np.log(np.arange(1, n_total + 1))),
    )
    return out


def _positive_run(vals: np.ndarray, end: int, start: int) -> tuple[int, int] | None:
    """Return a 1-based range ``(a, end)`` of positive values with enough points, or None.

    ``a`` is ``start`` when that range is long enough, else the first of the positive run.
    """
    if end < MIN_FIT_POINTS:
        return None
    bad = np.flatnonzero(~(vals[:end] > 0))
    first = int(bad[-1]) + 2 if len(bad) else 1
    if first <= start and end - start + 1 >= MIN_FIT_POINTS:
        return start, end
    return (first, end) if end - first + 1 >= MIN_FIT_POINTS else None


def short_fit_message(
    ss: np.ndarray,
    fit: dict[str, Any],
    fit_range: tuple[int, int],
    *,
    func: str,
    what: str,
    absolute: bool = False,
) -> str | None:
    """Explain a fit over fewer components than ``fit_range`` (clipped to ``ss``), else None.

    ``fit`` is the kernel's result for ``ss`` and ``fit_range``; the message names the range
    asked for, the range used, where the non-positive (``absolute``: zero or NaN) values are,
    and a ``fit_range`` that would fit (the longest positive run before the first of them).
    """
    start, stop = fit_range
    n_total = len(ss)
    stop_c = min(stop, n_total)
    nan_alpha = not np.isfinite(fit["alpha"])
    if fit["fit_stop"] >= stop_c and not nan_alpha:
        return None
    vals = np.abs(ss) if absolute else ss
    bad_word = "zero or NaN" if absolute else "non-positive"
    asked = f"components {start}..{stop}"
    if start <= n_total < stop:
        asked += f" (of the {n_total} computed: {start}..{stop_c})"
    if start > stop_c:
        bad = np.flatnonzero(~(vals > 0))
        reason = f"the range starts after the last of the {n_total} components, so alpha is NaN"
        fix_more = "compute more components (`n_components`)"
        end = int(bad[0]) if len(bad) else n_total
    else:
        bad = start + np.flatnonzero(~(vals[start - 1 : stop_c] > 0))
        n_used = fit["fit_stop"] - start + 1 if not (absolute and len(bad)) else 0
        used = f"{start}..{fit['fit_stop']}" if n_used > 0 else "none of them"
        reason = f"the fit used {used} ({n_used} component{'s' if n_used != 1 else ''}"
        if nan_alpha:
            reason += f", fewer than the {MIN_FIT_POINTS} a fit needs, so alpha is NaN"
        reason += ")"
        if len(bad):
            reason += (
                f": the {what} is {bad_word} at {len(bad)} of components {start}..{stop_c}, "
                f"from component {int(bad[0])} on"
            )
        fix_more = "record more frames or repeats so fewer components fall into the noise"
        end = int(bad[0]) - 1 if len(bad) else stop_c
    suggest = _positive_run(vals, end, start)
    fix = f"pass `fit_range={suggest}` to fit the positive part on purpose, or " if suggest else ""
    return f"{func}(): the power-law fit asked for {asked} but {reason}. To fix, {fix}{fix_more}."


def warn_short_fit(msg: str | None, *, stacklevel: int = 3) -> bool:
    """Warn (:class:`~netphys.errors.FitRangeWarning`) with ``msg`` from :func:`short_fit_message`.

    Returns whether it warned (``msg`` is None when the fit used the whole range).
    """
    if msg is not None:
        warnings.warn(msg, FitRangeWarning, stacklevel=stacklevel)
    return msg is not None


@contextlib.contextmanager
def short_fits_caught(notes: list[str] | None = None, *, prefix: str = "") -> Iterator[list[str]]:
    """Collect the :class:`FitRangeWarning` messages raised inside into ``notes``.

    For callers that report cut-short fits their own way (one summary warning, a caveat) or
    do not use the exponent at all; every other warning is passed on unchanged.
    """
    notes = [] if notes is None else notes
    records: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always", FitRangeWarning)
            yield notes
    finally:
        for rec in records:
            if issubclass(rec.category, FitRangeWarning):
                notes.append(prefix + str(rec.message))
            else:
                warnings.warn_explicit(rec.message, rec.category, rec.filename, rec.lineno)


def power_law_variables(fit: dict[str, Any], *, dim: str = "component") -> dict[str, Any]:
    """Turn a kernel result into labelled Dataset variables (shared by the analyses)."""
    return {
        "alpha": xr.DataArray(fit["alpha"], attrs={"long_name": "power-law exponent"}),
        "intercept": xr.DataArray(fit["intercept"], attrs={"long_name": "log-space intercept"}),
        "r2": xr.DataArray(fit["r2"], attrs={"long_name": "r² of log n vs log spectrum"}),
        "fit_start": xr.DataArray(fit["fit_start"]),
        "fit_stop": xr.DataArray(fit["fit_stop"]),
        "n_nonpositive": xr.DataArray(fit["n_nonpositive"]),
        "fitted": xr.DataArray(
            fit["fitted"], dims=(dim,), attrs={"long_name": "power-law fit exp(b) n^-alpha"}
        ),
    }


def fit_power_law(
    spectrum: Any, *, fit_range: tuple[int, int] | None = None, convention: str = "netphys"
) -> xr.Dataset:
    """Fit a power law ``s_n ∝ n^-alpha`` to a spectrum by 1/n-weighted log-log least squares.

    Parameters
    ----------
    spectrum : array-like or xarray.DataArray, 1-D
        Variance per component, component 1 first. Negative or zero values are allowed; the fit
        stops before the first non-positive value inside the range.
    fit_range : tuple of int, optional
        First and last 1-based component numbers included (like MATLAB ``11:500``), clipped to
        the length of ``spectrum``. Default: ``(11, 500)``; with ``convention="paper"``
        ``(11, min(500, n - 2))``.
    convention : {"netphys", "paper"}, default="netphys"
        "paper" fits ``log|s_n|`` over the whole range like ``get_powerlaw.m`` (non-positive
        values are folded in by the absolute value instead of ending the fit).

    Returns
    -------
    xarray.Dataset
        0-d variables ``alpha``, ``intercept`` (log space), ``r2``, ``fit_start``, ``fit_stop``
        (the range actually used), ``n_nonpositive`` (non-positive values inside the requested
        range); along ``component`` (1-based): ``spectrum`` and ``fitted``.

    Raises
    ------
    ValueError
        If ``spectrum`` is not 1-D or fewer than three positive values fall in the range
        (the fit stops before the first non-positive value).

    Warns
    -----
    FitRangeWarning
        (a ``NetphysWarning``) once per call when the fit stopped before the end of
        ``fit_range`` (clipped to the spectrum) at a non-positive value; the message gives the
        range asked for, the range used, how many values were non-positive and from which
        component, and a ``fit_range`` that fits.

    Notes
    -----
    With ``y_n = log s_n``, design ``X = [-log n, 1]`` and weights ``w_n = 1/n`` (equal weight per
    log-decade), ``(alpha, b) = argmin Σ w_n (y_n - X_n·(alpha, b))²``. ``r2`` is the squared
    correlation of ``log n`` and ``log s_n`` at 100 log-spaced points of the range rounded to
    integers, repeated points kept, as in the reference ``get_powerlaw.m``. The input is never
    modified.

    Differences from the papers
    ---------------------------
    - netphys stops the fit before the first non-positive value of the range (reported in
      ``fit_stop`` and ``n_nonpositive``); ``get_powerlaw.m`` takes ``log|s_n|`` and so folds
      negative noise-tail values into the fit. ``convention="paper"`` does the same.
    - The default range is ``(11, 500)`` clipped to the spectrum; the reference stops at
      ``min(500, n - 2)`` (``statsShuffledPCA.m``) and the Python notebook fits 12..500.

    References
    ----------
    Stringer, Pachitariu et al. (2019) High-dimensional geometry of population responses in
    visual cortex. Nature 571, 361-365. doi:10.1038/s41586-019-1346-5

    Examples
    --------
    >>> import numpy as np
    >>> fit = fit_power_law(np.arange(1, 1001) ** -1.0)
    >>> round(float(fit["alpha"]), 6)
    1.0
    """
    paper = check_convention(convention, func=_FUNC) == "paper"
    start, stop = _check_fit_range((11, 500) if fit_range is None else fit_range, func=_FUNC)
    dim = "component"
    if isinstance(spectrum, xr.DataArray):
        if spectrum.ndim != 1:
            raise ValueError(
                f"{_FUNC}(): `spectrum` must be 1-D; got dims {spectrum.dims}. "
                "Select one spectrum, e.g. `.isel(session=0)`."
            )
        dim = str(spectrum.dims[0])
    ss = np.array(spectrum, dtype=np.float64)  # a copy: the input is never modified
    if ss.ndim != 1:
        raise ValueError(f"{_FUNC}(): `spectrum` must be 1-D; got shape {ss.shape}.")
    if paper and fit_range is None:
        start, stop = paper_fit_range(len(ss))
    fit = _power_law_kernel(ss, start, stop, absolute=paper)
    if np.isfinite(fit["alpha"]):
        warn_short_fit(
            short_fit_message(ss, fit, (start, stop), func=_FUNC, what="spectrum", absolute=paper)
        )
    else:
        raise ValueError(
            f"{_FUNC}(): fewer than three positive values of `spectrum` in components "
            f"{start}..{min(stop, len(ss))} (length {len(ss)}, "
            f"{fit['n_nonpositive']} non-positive). Use a lower `fit_range`, e.g. (2, {max(3, len(ss))})."
        )
    variables = power_law_variables(fit, dim=dim)
    variables["spectrum"] = xr.DataArray(ss, dims=(dim,))
    coords = {dim: np.arange(1, len(ss) + 1)}
    if isinstance(spectrum, xr.DataArray) and dim in spectrum.coords:
        coords = {dim: spectrum[dim].values}
    attrs = {"method": "fit_power_law", "weights": "1/n", "convention": convention}
    return xr.Dataset(variables, coords=coords, attrs=attrs)
