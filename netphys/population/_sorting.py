"""Rastermap sorting of units (Stringer, Pachitariu et al. 2024/2025, Nature Neuroscience)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from netphys._validation import check_finite, check_int, check_population, check_positive_float
from netphys.errors import MissingDependencyError
from netphys.population._stream import top_eigh

__all__ = ["rastermap_sort"]


#: Default number of rastermap clusters (rastermap's own default is 100). Its sorting step, a
#: traveling-salesman search over the cluster centres, costs about n_clusters**4 whatever the
#: number of units: 100 clusters took 4-5x the CPU time of 64 at 10,000 units x 1,200 frames
#: for a sort of a planted sequence only 13 % coarser (median phase step between neighbours).
_DEFAULT_CLUSTERS = 64

#: From this many units (and more units than samples), the PCs rastermap sorts are computed
#: exactly from the samples x samples Gram matrix instead of rastermap's randomized SVD.
_GRAM_MIN_UNITS = 2000


def normalized_for_rastermap(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalise (unit, sample) data as rastermap does by default.

    Z-score each unit, then
    project out the population mean time course. Returns the data and the usable units.
    """
    xn = x.astype(np.float64)
    xn -= xn.mean(axis=1, keepdims=True)
    std = xn.std(axis=1)
    good = std > 0
    xn = xn[good] / std[good, None]
    xm = xn.mean(axis=0)
    xm /= np.sqrt((xm**2).sum()) if (xm**2).sum() > 0 else 1.0
    xn -= np.outer(xn @ xm, xm)
    return xn, good


def _gram_pcs(x: np.ndarray, n_pcs: int) -> np.ndarray:
    """Compute the exact top PCs (U·S, float32) of the normalised data.

    Constant units get NaN rows. Via
    the eigendecomposition of the samples x samples Gram matrix (units >> samples).
    """
    xn, good = normalized_for_rastermap(x)
    _, vecs = top_eigh(xn.T @ xn, n_pcs)
    usv = np.full((x.shape[0], n_pcs), np.nan, dtype=np.float32)
    usv[good] = xn @ vecs
    return usv


def rastermap_sort(
    activity: Any,
    *,
    n_clusters: int | None = None,
    n_pcs: int | None = None,
    locality: float = 0.0,
    time_lag_window: int = 0,
    verbose: bool = False,
    rng: int = 0,
) -> xr.Dataset:
    """Sort units so that units with similar activity lie next to each other (rastermap).

    Parameters
    ----------
    activity : numpy.ndarray or xarray.DataArray with dims (sample, 'unit')
        Population activity (loaded into memory; rastermap z-scores each unit).
    n_clusters : int or None, default=None
        Rastermap clusters; None means ``min(64, n_units // 2)``. Rastermap's own default is
        100: a slightly finer sort, but its sorting step takes about four times as long
        (it grows like ``n_clusters**4``, whatever the number of units); at most 199.
    n_pcs : int or None, default=None
        Principal components used; None means ``min(200, n_units - 1, n_samples - 1)``.
    locality : float, default=0.0
        Rastermap ``locality`` in [0, 1] (1 favours local, sequence-like structure).
    time_lag_window : int, default=0
        Rastermap ``time_lag_window`` (samples), for sequences.
    verbose : bool, default=False
        Let rastermap log and print; silenced otherwise.
    rng : int, default=0
        Seed passed as rastermap's ``random_state``.

    Returns
    -------
    xarray.Dataset
        ``order`` along ``position`` (the unit id shown at each position, top first),
        ``embedding`` (1-D rastermap coordinate, NaN for units rastermap skipped) and
        ``position_of_unit`` along ``unit``.

    Raises
    ------
    ValueError
        With fewer than 4 units or samples, or NaN/inf.
    MissingDependencyError
        If rastermap is not installed.

    References
    ----------
    Stringer, Zhong, Syeda, Du, Kesa, Pachitariu (2025) Rastermap: a discovery method for neural
    population recordings. Nature Neuroscience 28, 201-212. doi:10.1038/s41593-024-01783-4

    Notes
    -----
    With at least 2000 units and more units than samples, the data are first reduced to their
    top ``n_pcs`` principal components, computed exactly (to float rounding, tested) from the
    samples x samples Gram matrix of the normalised data, and rastermap sorts those; otherwise
    rastermap reduces the data itself with scikit-learn's randomized ``TruncatedSVD``. Both
    routes sort a planted sequence alike (rank correlation of unit positions above 0.95,
    tested). At 10,000 units x 1,200 samples the time goes to rastermap's clustering and its
    traveling-salesman sort of the cluster centres, not to the reduction; the default 64
    clusters (rastermap: 100) take about a quarter of the CPU time.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((200, 60))
    >>> res = rastermap_sort(x)
    >>> sorted(res["order"].values.tolist()) == list(range(60))
    True
    """
    func = "rastermap_sort"
    da = check_population(activity, func=func, min_samples=4, min_units=4)
    n_samples, n_units = da.shape
    locality = check_positive_float(locality, func=func, name="locality", allow_zero=True)
    time_lag_window = check_int(time_lag_window, func=func, name="time_lag_window", minimum=0)
    n_clusters = (
        min(_DEFAULT_CLUSTERS, n_units // 2)
        if n_clusters is None
        # rastermap refuses 200 clusters or more
        else check_int(
            n_clusters, func=func, name="n_clusters", minimum=2, maximum=min(199, n_units)
        )
    )
    max_pcs = min(n_units - 1, n_samples - 1)
    n_pcs = (
        min(200, max_pcs)
        if n_pcs is None
        else check_int(n_pcs, func=func, name="n_pcs", minimum=1, maximum=max_pcs)
    )
    try:
        from rastermap import Rastermap
    except ImportError as exc:  # pragma: no cover - rastermap is a dependency
        raise MissingDependencyError(
            f"{func}() needs the rastermap package: `pip install rastermap`."
        ) from exc
    x = np.ascontiguousarray(np.asarray(da.values, dtype=np.float32).T)
    check_finite(x, func=func, dims=("unit", "sample"))
    root = logging.getLogger()
    rm_logger = logging.getLogger("rastermap")
    saved = (list(root.handlers), root.level, rm_logger.level)
    sink = None if verbose else io.StringIO()
    try:
        if not verbose:
            rm_logger.setLevel(logging.ERROR)
        with (
            contextlib.redirect_stdout(sink) if sink is not None else contextlib.nullcontext(),
            warnings.catch_warnings(),
        ):
            if not verbose:
                warnings.simplefilter("ignore")
            model = Rastermap(
                n_clusters=n_clusters,
                n_PCs=n_pcs,
                locality=locality,
                time_lag_window=time_lag_window,
                verbose=verbose,
                random_state=rng,
            )
            gram = n_units >= _GRAM_MIN_UNITS and n_units > n_samples
            usv = _gram_pcs(x, n_pcs) if gram else None
            # with the PCs given, what is left (clustering: products of n_units x n_pcs by
            # n_clusters) runs best on one BLAS thread: extra threads spin on a busy machine
            # (5x the CPU time measured); the sort itself runs on numba's threads
            with threadpool_limits(1, user_api="blas") if gram else contextlib.nullcontext():
                model.fit(x, Usv=usv)
    finally:
        # rastermap's constructor calls logging.basicConfig; undo that side effect
        for handler in list(root.handlers):
            if handler not in saved[0]:
                root.removeHandler(handler)
        root.setLevel(saved[1])
        rm_logger.setLevel(saved[2])
    order = np.asarray(model.isort, dtype=np.int64)
    position = np.empty(n_units, dtype=np.int64)
    position[order] = np.arange(n_units)
    unit_ids = da["unit"].values if "unit" in da.coords else np.arange(n_units)
    coords: dict[str, Any] = {"position": np.arange(n_units)}
    for name, coord in da.coords.items():
        if coord.ndim == 1 and coord.dims[0] == "unit":
            coords[str(name)] = coord.variable
    return xr.Dataset(
        {
            "order": ("position", unit_ids[order]),
            "order_index": ("position", order),
            "embedding": ("unit", np.asarray(model.embedding, dtype=np.float64)[:, 0]),
            "position_of_unit": ("unit", position),
        },
        coords=coords,
        attrs={
            "method": "rastermap",
            "n_clusters": n_clusters,
            "n_pcs": n_pcs,
            "locality": locality,
            "time_lag_window": time_lag_window,
            "seed": int(rng),
        },
    )
