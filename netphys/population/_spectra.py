"""PCA eigenspectra, correlation matrices and category structure of a population."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import check_finite, check_int, check_population
from netphys.errors import NetphysWarning
from netphys.population._powerlaw import (
    _check_fit_range,
    _power_law_kernel,
    power_law_variables,
    short_fit_message,
    warn_short_fit,
)
from netphys.population._stream import (
    iter_sample_chunks,
    reduce_sample_chunks,
    reduce_unit_chunks,
    top_eigh,
)

__all__ = ["category_autocorrelation", "correlation_matrix", "eigenspectrum"]


def _cov_kernel(start: int, stop: int, block: np.ndarray, *, shift: np.ndarray, func: str) -> dict:
    check_finite(block, func=func, offset=(start, 0))
    block -= shift
    return {"cross": block.T @ block, "sum": block.sum(axis=0)}


def _covariance(
    da: xr.DataArray, chunk_size: int | None, progress: bool | None, func: str
) -> tuple[np.ndarray, np.ndarray]:
    """Compute the unit covariance (float64, 1/(T-1)) and unit means over sample chunks.

    On the
    workers when a dask.distributed client is current).
    """
    n_samples = da.shape[0]
    shift = next(iter_sample_chunks(da, chunk_size=1))[2][0]
    shift = np.where(np.isfinite(shift), shift, 0.0)  # NaN is reported below
    part = reduce_sample_chunks(
        da, _cov_kernel, chunk_size=chunk_size, progress=progress, desc=func, shift=shift,
        func=func,
    )
    mean = part["sum"] / n_samples
    acc = part["cross"] - n_samples * np.outer(mean, mean)
    return acc / max(n_samples - 1, 1), mean + shift


def _gram_kernel(start: int, stop: int, block: np.ndarray, *, func: str) -> dict:
    check_finite(block, func=func, offset=(0, start))
    block -= block.mean(axis=0)
    return {"gram": block @ block.T}


def _gram(da: xr.DataArray, chunk_size: int | None, progress: bool | None, func: str) -> np.ndarray:
    """Sample Gram matrix of the unit-centred data (float64, 1/(T-1)), streamed over units."""
    n_samples = da.shape[0]
    part = reduce_unit_chunks(
        da, _gram_kernel, unit_axis=1, chunk_size=chunk_size, progress=progress, desc=func,
        func=func,
    )
    return np.asarray(part["gram"]) / max(n_samples - 1, 1)


def _top_eigh(mat: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    return top_eigh(mat, k)


def _pca(
    da: xr.DataArray,
    k: int,
    chunk_size: int | None,
    progress: bool | None,
    func: str,
    projections: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Compute the top-k PCA variances and (optionally) the sample projections.

    Via the smaller of the
    unit covariance and the sample Gram matrix.
    """
    n_samples, n_units = da.shape
    if n_units <= n_samples:
        cov, mean = _covariance(da, chunk_size, progress, func)
        evals, vecs = _top_eigh(cov, k)
        if not projections:
            return evals, None
        proj = np.empty((n_samples, k))
        for start, stop, block in iter_sample_chunks(da, chunk_size=chunk_size):
            proj[start:stop] = (block - mean) @ vecs
        return evals, proj
    evals, vecs = _top_eigh(_gram(da, chunk_size, progress, func), k)
    if not projections:
        return evals, None
    scale = np.sqrt(np.clip(evals, 0, None) * max(n_samples - 1, 1))
    return evals, np.asarray(vecs * scale)


def eigenspectrum(
    activity: Any,
    *,
    n_components: int | None = None,
    fit_range: tuple[int, int] = (11, 500),
    chunk_size: int | None = None,
    progress: bool | None = None,
) -> xr.Dataset:
    """Compute the PCA eigenspectrum of a population and fit a power law to it.

    Not cross-validated: noise adds a floor to every eigenvalue (use :func:`cvpca` or
    :func:`svca` for the signal spectrum).

    Parameters
    ----------
    activity : numpy.ndarray or xarray.DataArray with dims (sample, 'unit')
        Population activity (numpy or dask; streamed over sample chunks when there are fewer
        units than samples, over unit chunks otherwise).
    n_components : int or None, default=None
        Number of eigenvalues; None means ``min(1024, n_units, n_samples - 1)``.
    fit_range : tuple of int, default=(11, 500)
        1-based components of the power-law fit.
    chunk_size : int or None, default=None
        Samples (or units) per chunk; None uses dask chunks or about 64 MiB.
    progress : bool or None, default=None
        Show tqdm progress bars; None shows them only for large inputs.

    Returns
    -------
    xarray.Dataset
        Along ``component``: ``variance`` (eigenvalues of the covariance, 1/(T-1)),
        ``explained_variance_ratio`` (of the total variance), ``fitted``; 0-d ``alpha``,
        ``intercept``, ``r2``, ``fit_start``, ``fit_stop``, ``n_nonpositive``,
        ``total_variance``.

    Raises
    ------
    ValueError
        On NaN/inf or more components than ``min(n_units, n_samples - 1)``.

    Warns
    -----
    FitRangeWarning
        (a ``NetphysWarning``) once per call when the power-law fit used fewer components than
        ``fit_range`` (clipped to the components computed) asks for, because the eigenvalue
        turns non-positive inside it (a rank-deficient population), or when fewer than three
        points remain and ``alpha`` is NaN. The message gives the range asked for, the range
        used, how many components were non-positive and from which one, and a ``fit_range`` that
        fits; ``fit_stop`` and ``n_nonpositive`` hold the same numbers.

    Examples
    --------
    >>> from netphys.population import simulate_population
    >>> sim = simulate_population(100, 400, alpha=1.0, snr=100.0, rng=0)
    >>> res = eigenspectrum(sim["activity"], fit_range=(2, 30))
    >>> bool(abs(float(res["alpha"]) - 1.0) < 0.2)
    True
    """
    func = "eigenspectrum"
    da = check_population(activity, func=func, min_samples=3, min_units=1)
    fit_start, fit_stop = _check_fit_range(fit_range, func=func)
    n_samples, n_units = da.shape
    limit = min(n_units, n_samples - 1)
    if n_components is None:
        k = min(1024, limit)
    else:
        k = check_int(n_components, func=func, name="n_components", minimum=1)
        if k > limit:
            raise ValueError(
                f"{func}(): `n_components`={k} exceeds min(units={n_units}, samples - 1="
                f"{n_samples - 1}) = {limit}. Ask for at most {limit}."
            )
    if n_units <= n_samples:
        cov, _ = _covariance(da, chunk_size, progress, func)
        total = float(np.trace(cov))
        evals, _ = _top_eigh(cov, k)
    else:
        gram = _gram(da, chunk_size, progress, func)
        total = float(np.trace(gram))
        evals, _ = _top_eigh(gram, k)
    fit = _power_law_kernel(evals, fit_start, fit_stop)
    warn_short_fit(
        short_fit_message(evals, fit, (fit_start, fit_stop), func=func, what="eigenvalue")
    )
    variables: dict[str, Any] = {
        "variance": ("component", evals, {"long_name": "PCA eigenvalue"}),
        "explained_variance_ratio": ("component", evals / total if total > 0 else evals * np.nan),
        "total_variance": ((), total),
    }
    variables.update(power_law_variables(fit))
    return xr.Dataset(
        variables, coords={"component": np.arange(1, k + 1)}, attrs={"method": "eigenspectrum"}
    )


def correlation_matrix(
    activity: Any,
    *,
    max_units: int = 10_000,
    chunk_size: int | None = None,
    progress: bool | None = None,
) -> xr.Dataset:
    """Compute the Pearson correlation between every pair of units.

    Parameters
    ----------
    activity : numpy.ndarray or xarray.DataArray with dims (sample, 'unit')
        Population activity (numpy or dask; streamed over sample chunks).
    max_units : int, default=10000
        Refuse larger populations (the matrix is ``n_units²`` float64); subset units first.
    chunk_size : int or None, default=None
        Samples per chunk; None uses dask chunks or about 64 MiB.
    progress : bool or None, default=None
        Show tqdm progress bars; None shows them only for large inputs.

    Returns
    -------
    xarray.Dataset
        ``correlation`` with dims ('unit', 'unit_b') over the non-constant units (unit coords
        kept on 'unit'); ``is_constant`` is not included: ``n_dropped`` counts dropped units.

    Raises
    ------
    ValueError
        On NaN/inf or more than ``max_units`` units.

    Warns
    -----
    NetphysWarning
        When constant units are dropped.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((100, 3))
    >>> res = correlation_matrix(x)
    >>> np.allclose(res["correlation"].values, np.corrcoef(x.T))
    True
    """
    func = "correlation_matrix"
    da = check_population(activity, func=func, min_samples=2, min_units=1)
    max_units = check_int(max_units, func=func, name="max_units", minimum=1)
    if da.shape[1] > max_units:
        raise ValueError(
            f"{func}(): {da.shape[1]} units exceed `max_units`={max_units} (the matrix would "
            f"take {da.shape[1] ** 2 * 8 / 2**30:.1f} GiB). Subset units, e.g. "
            "`activity.isel(unit=slice(0, 2000))`, or raise `max_units`."
        )
    cov, _ = _covariance(da, chunk_size, progress, func)
    var = np.diag(cov).copy()
    constant = var <= 0
    if constant.any():
        warnings.warn(
            f"{func}(): dropped {int(constant.sum())} constant unit(s) (correlation undefined).",
            NetphysWarning,
            stacklevel=2,
        )
    keep = ~constant
    sd = np.sqrt(var[keep])
    corr = cov[np.ix_(keep, keep)] / np.outer(sd, sd)
    np.fill_diagonal(corr, 1.0)
    unit_ids = da["unit"].values[keep] if "unit" in da.coords else np.flatnonzero(keep)
    coords: dict[str, Any] = {"unit": unit_ids, "unit_b": unit_ids}
    for name, coord in da.coords.items():
        if coord.ndim == 1 and coord.dims[0] == "unit" and name != "unit":
            coords[str(name)] = ("unit", np.asarray(coord.values)[keep])
    return xr.Dataset(
        {"correlation": (("unit", "unit_b"), corr), "n_dropped": ((), int(constant.sum()))},
        coords=coords,
        attrs={"method": "correlation_matrix"},
    )


def category_autocorrelation(
    activity: Any,
    labels: Any = "label",
    *,
    n_components: int = 32,
    chunk_size: int | None = None,
    progress: bool | None = None,
) -> xr.Dataset:
    """Measure how much more samples of one category resemble each other than other samples.

    Each sample is represented by its projection on the top ``n_components`` PCs of the
    population; two samples' similarity is the cosine similarity (uncentred correlation) of
    these projection vectors, which does not depend on the arbitrary sign of each PC.
    The result averages that similarity over all pairs of samples (self-pairs excluded) within
    each pair of categories.

    Parameters
    ----------
    activity : numpy.ndarray or xarray.DataArray with dims (sample, 'unit')
        Population activity.
    labels : str or array-like, default="label"
        Category per sample, or the name of a sample coord of ``activity`` holding it.
        Samples labelled -1 are ignored.
    n_components : int, default=32
        Number of PCs (clipped to ``min(n_units, n_samples - 1)``).
    chunk_size : int or None, default=None
        Chunk size of the streamed PCA.
    progress : bool or None, default=None
        Show tqdm progress bars; None shows them only for large inputs.

    Returns
    -------
    xarray.Dataset
        ``category_correlation`` (category, category_b): mean projection correlation between
        samples of the two categories; ``n_samples`` (category); 0-d ``within`` (mean over
        within-category pairs), ``across`` (mean over across-category pairs) and ``index``
        (``within - across``).

    Raises
    ------
    ValueError
        If ``labels`` is missing, of the wrong length, or has fewer than two categories.

    Examples
    --------
    >>> from netphys.population import simulate_population
    >>> sim = simulate_population(100, 300, n_categories=3, category_strength=0.8, rng=0)
    >>> res = category_autocorrelation(sim["activity"], n_components=8)
    >>> bool(res["index"] > 0.3)
    True
    """
    func = "category_autocorrelation"
    da = check_population(activity, func=func, min_samples=3, min_units=1)
    if isinstance(labels, str):
        if labels not in da.coords:
            raise ValueError(
                f"{func}(): `labels`={labels!r} names no coord of `activity` (coords: "
                f"{list(da.coords)}). Pass the labels as an array, one per sample."
            )
        lab = np.asarray(da[labels].values)
    else:
        lab = np.asarray(labels)
    if lab.shape != (da.shape[0],):
        raise ValueError(
            f"{func}(): `labels` must hold one value per sample ({da.shape[0]}); got shape "
            f"{lab.shape}."
        )
    k = check_int(n_components, func=func, name="n_components", minimum=2)
    k = min(k, da.shape[1], da.shape[0] - 1)
    _, proj = _pca(da, k, chunk_size, progress, func, projections=True)
    assert proj is not None
    valid = lab != -1
    cats, inverse = np.unique(lab[valid], return_inverse=True)
    if len(cats) < 2:
        raise ValueError(f"{func}(): `labels` needs at least two categories; got {cats.tolist()}.")
    # cosine similarity (uncentred correlation) of projection vectors: invariant to PC signs
    z = proj[valid].copy()
    norms = np.linalg.norm(z, axis=1)
    z = z / np.where(norms > 0, norms, 1.0)[:, None]
    onehot = np.zeros((len(z), len(cats)))
    onehot[np.arange(len(z)), inverse] = 1.0
    sums = onehot.T @ z
    pair_sums = sums @ sums.T
    counts = onehot.sum(axis=0)
    self_terms = onehot.T @ (z**2).sum(axis=1)
    pair_sums[np.diag_indices(len(cats))] -= self_terms
    pairs = np.outer(counts, counts) - np.diag(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = pair_sums / pairs
    within = float(np.trace(pair_sums) / np.trace(pairs))
    off = ~np.eye(len(cats), dtype=bool)
    across = float(pair_sums[off].sum() / pairs[off].sum())
    return xr.Dataset(
        {
            "category_correlation": (("category", "category_b"), mean),
            "n_samples": ("category", counts.astype(int)),
            "within": ((), within),
            "across": ((), across),
            "index": ((), within - across),
        },
        coords={"category": cats, "category_b": cats},
        attrs={"method": "category_autocorrelation", "n_components": k},
    )
