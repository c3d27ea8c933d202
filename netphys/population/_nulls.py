"""Circular-shift null of pairwise correlations (Stringer, Pachitariu et al. 2019, Science).

The correlations are dask graphs over the recording: one pass for each unit's mean and
spread (blockwise sums, tree-reduced), then the z-scored data in blocks of whole time courses
of a few units, each unit rotated within its block, and the real and null Gram products
``zᵀ z`` and ``zᵀ z_shifted`` as blockwise matrix products. Nothing is ever gathered whole:
with a ``dask.distributed`` client and a dask-backed recording the graph runs on the workers
and only the unit x unit products come back; locally the threaded scheduler runs it.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import as_rng, check_int, check_population, check_positive_float
from netphys.errors import NetphysWarning
from netphys.population._conventions import bin_frames, check_convention, paper_null_bins
from netphys.population._stream import compute_graph, default_chunk_rows, use_distributed

__all__ = ["shuffle_null"]

_PERCENTILES = (2.5, 5.0, 50.0, 95.0, 97.5)

#: Units per block of the Gram products (blocks of (time chunk, units) of about 64 MiB).
_GRAM_BLOCK_UNITS = 1024


def shuffle_null(
    activity: Any,
    *,
    min_shift: int = 1000,
    max_units: int | None = 2000,
    bins: Any = None,
    significance: float = 0.05,
    rng: Any = 0,
    convention: str = "netphys",
    progress: bool | None = None,
) -> xr.Dataset:
    """Compare pairwise correlations with a null from independently circularly shifted units.

    Each unit's time course is rotated by its own random shift drawn uniformly from
    ``[min_shift, T - min_shift]``, which keeps each unit's autocorrelation but destroys the
    alignment between units. Real correlations (unit i with unit j) are compared with null ones
    (unit i with shifted unit j), over pairs i < j.

    Parameters
    ----------
    activity : numpy.ndarray or xarray.DataArray with dims (time, 'unit')
        Continuous activity; numpy-, or dask-backed (then computed blockwise, never loaded
        whole; on the workers when a ``dask.distributed`` client is current).
    min_shift : int, default=1000
        Minimum shift in samples either way; choose it above the autocorrelation time.
    max_units : int or None, default=2000
        With more units, a random subset of this many is used (all pairs among it); None uses
        every unit.
    bins : array-like or None, default=None
        Histogram bin edges; None means ``-1 .. 1`` in steps of 0.005.
    significance : float, default=0.05
        Two-sided level: ``fraction_significant`` is the share of real correlations outside the
        null's central ``1 - significance`` interval (about ``significance`` for independent
        units).
    rng : int, numpy.random.Generator or None, default=0
        Randomness of the shifts and of the unit subset.
    convention : {"netphys", "paper"}, default="netphys"
        "paper" reproduces ``pcAnalysis.m``: frames averaged into 1.2 s bins (when the frame
        rate is known), shifts uniform in ``[min_shift, T - min_shift - 1]``, every unit, and
        (unless ``bins`` is given) the histogram edges ``-0.3 : 0.001 : 0.75``.
    progress : bool or None, default=None
        Show a progress bar over the tasks (local scheduler); None shows it on large inputs.

    Returns
    -------
    xarray.Dataset
        Along ``bin`` (bin centres; ``bin_edge`` along ``edge``): ``real_count``,
        ``null_count``; along ``percentile``: ``real_percentiles``, ``null_percentiles``;
        0-d: ``real_mean``, ``null_mean``, ``real_mean_abs``, ``null_mean_abs``,
        ``spread_ratio`` (5-95 % width of real over null), ``fraction_significant``,
        ``n_pairs``, ``n_dropped``; along ``unit`` (used units): ``shift``.

    Raises
    ------
    ValueError
        If the recording is shorter than ``2 * min_shift`` samples, on NaN/inf, or with fewer
        than two non-constant units.

    Warns
    -----
    NetphysWarning
        When constant units are dropped.

    Differences from the papers
    ---------------------------
    - Binning: netphys uses the samples it is given; the reference bins to 1.2 s first.
    - Units: netphys samples at most ``max_units`` units (all pairs among them, so the cost
      stays bounded); the reference uses every neuron.
    - Shifts: netphys draws from ``[min_shift, T - min_shift]`` (symmetric); the reference's
      ``randi(T - 2000) + 999`` gives ``[1000, T - 1001]``.
    - Histogram: netphys bins ``-1 .. 1`` by 0.005 (covers every correlation); the reference
      ``-0.3 : 0.001 : 0.75``.

    References
    ----------
    Stringer, Pachitariu et al. (2019) Spontaneous behaviors drive multidimensional, brainwide
    activity. Science 364, eaav7893. doi:10.1126/science.aav7893

    Examples
    --------
    >>> import numpy as np
    >>> res = shuffle_null(np.random.default_rng(0).standard_normal((400, 30)), min_shift=50, rng=0)
    >>> int(res["n_pairs"])
    435
    """
    func = "shuffle_null"
    paper = check_convention(convention, func=func) == "paper"
    da, min_shift, max_units, edges, significance, bin_k = _check_arguments(
        activity, min_shift, max_units, bins, significance, paper, func
    )
    gen = as_rng(rng, func=func)
    n_time, n_units = da.shape
    units = np.arange(n_units)
    if max_units is not None and n_units > max_units:
        units = np.sort(gen.choice(n_units, size=max_units, replace=False))
    x = _used_units(da, units)
    distributed = use_distributed(da)
    mean, scale, constant = _unit_stats(x, distributed, progress, func)
    if constant.any():
        warnings.warn(
            f"{func}(): dropped {int(constant.sum())} constant unit(s) (correlation undefined).",
            NetphysWarning,
            stacklevel=2,
        )
    keep = ~constant
    if keep.sum() < 2:
        raise ValueError(f"{func}(): fewer than two non-constant units remain.")
    top = n_time - min_shift + (0 if paper else 1)  # exclusive upper bound of the shifts
    shifts = np.asarray(gen.integers(min_shift, top, size=int(keep.sum())))
    real, null = _pair_correlations(
        x[:, keep] if constant.any() else x, mean[keep], scale[keep], shifts,
        distributed=distributed, progress=progress,
    )
    used = da["unit"].values[units[keep]] if "unit" in da.coords else units[keep]
    out = _null_dataset(real, null, edges, significance, used, shifts, int(constant.sum()))
    out.attrs.update(
        {
            "method": "shuffle_null",
            "min_shift": min_shift,
            "significance": significance,
            "convention": convention,
            "bin_frames": bin_k,
        }
    )
    return out


def _check_arguments(
    activity: Any, min_shift: Any, max_units: Any, bins: Any, significance: Any,
    paper: bool, func: str,
) -> tuple[xr.DataArray, int, int | None, np.ndarray, float, int]:
    """Check the options; return the (binned) activity, options, histogram edges, bin factor."""
    da = check_population(activity, func=func, min_samples=2, min_units=2)
    min_shift = check_int(min_shift, func=func, name="min_shift", minimum=1)
    if max_units is not None:
        max_units = check_int(max_units, func=func, name="max_units", minimum=2)
    bin_k = 1
    if paper:
        da, bin_k = bin_frames(da)
        max_units = None
        if bins is None:
            bins = paper_null_bins()
    significance = check_positive_float(significance, func=func, name="significance")
    if significance >= 1:
        raise ValueError(f"{func}(): `significance` must be in (0, 1); got {significance}.")
    n_time = da.shape[0]
    if n_time < 2 * min_shift + int(paper):
        raise ValueError(
            f"{func}(): `activity` has {n_time} samples along '{da.dims[0]}', too short for "
            f"`min_shift`={min_shift} (needs at least 2 * min_shift = {2 * min_shift}). Lower "
            f"`min_shift` (e.g. min_shift={max(1, n_time // 4)}) or use a longer recording."
        )
    edges = np.arange(-1.0, 1.0 + 1e-9, 0.005) if bins is None else np.asarray(bins, float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(
            f"{func}(): `bins` must be increasing bin edges (1-D, at least 2); got {bins!r}."
        )
    return da, min_shift, max_units, edges, significance, bin_k


def _used_units(da: xr.DataArray, units: np.ndarray) -> Any:
    """Return the used units as a float64 dask array (numpy input is wrapped, not copied)."""
    import dask.array as dsa

    arr = da.data
    if not isinstance(arr, dsa.Array):
        arr = dsa.from_array(np.asarray(arr), chunks=(default_chunk_rows(arr.shape[1]), -1))
    if len(units) < da.shape[1]:
        arr = arr[:, units]
    return arr.astype(np.float64)


def _unit_stats(
    x: Any, distributed: bool, progress: bool | None, func: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One blockwise pass: finite check, each unit's mean, RMS deviation and constancy."""
    import dask.array as dsa

    n_time = x.shape[0]
    first = x[0]
    dev = x - first  # shifted sums: no cancellation for units far from zero
    finite, lo, hi, ref, s1, s2 = compute_graph(
        dsa.isfinite(x).all(), x.min(axis=0), x.max(axis=0), first,
        dev.sum(axis=0), (dev**2).sum(axis=0),
        distributed=distributed, progress=progress, desc=f"{func} stats",
        work=float(x.size),
    )
    if not finite:
        raise ValueError(
            f"{func}(): `activity` contains NaN or inf. Fill or drop them first, e.g. "
            "`activity.fillna(0)`."
        )
    mean = s1 / n_time
    scale = np.sqrt(np.clip(s2 / n_time - mean**2, 0.0, None))
    return ref + mean, scale, hi == lo


def _roll_columns(
    block: np.ndarray, shifts: np.ndarray, block_info: dict | None = None
) -> np.ndarray:
    """Rotate each column of a block holding whole time courses by its unit's shift."""
    assert block_info is not None
    lo, hi = block_info[0]["array-location"][1]
    n_time = block.shape[0]
    rows = (np.arange(n_time)[:, None] - shifts[None, lo:hi]) % n_time
    return np.take_along_axis(block, rows, axis=0)


def _pair_correlations(
    x: Any, mean: np.ndarray, scale: np.ndarray, shifts: np.ndarray, *,
    distributed: bool, progress: bool | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Real and null correlations over pairs i < j, from blockwise Gram products."""
    n_time, n = x.shape
    z = (x - mean) / scale
    # whole time courses of a few units per block, rotated in place, then back to (time, unit)
    # blocks for the products; neither step holds more than a block
    width = max(1, min(n, default_chunk_rows(n_time)))
    z_shifted = z.rechunk({0: -1, 1: width}).map_blocks(_roll_columns, shifts, dtype=float)
    unit_block = min(n, _GRAM_BLOCK_UNITS)
    blocks = {0: default_chunk_rows(unit_block), 1: unit_block}
    z, z_shifted = z.rechunk(blocks), z_shifted.rechunk(blocks)
    real, null = compute_graph(
        z.T @ z / n_time, z.T @ z_shifted / n_time,
        distributed=distributed, progress=progress, desc="shuffle_null",
        work=float(n_time) * n * n,
    )
    iu = np.triu_indices(n, k=1)
    return np.asarray(real)[iu], np.asarray(null)[iu]


def _null_dataset(
    real: np.ndarray, null: np.ndarray, edges: np.ndarray, significance: float,
    used: np.ndarray, shifts: np.ndarray, n_dropped: int,
) -> xr.Dataset:
    """Histograms, percentiles and summaries of the real and null correlations, labelled."""
    lo, hi = np.quantile(null, [significance / 2, 1 - significance / 2])
    real_p = np.percentile(real, _PERCENTILES)
    null_p = np.percentile(null, _PERCENTILES)
    centres = (edges[:-1] + edges[1:]) / 2
    return xr.Dataset(
        {
            "real_count": ("bin", np.histogram(real, edges)[0]),
            "null_count": ("bin", np.histogram(null, edges)[0]),
            "real_percentiles": ("percentile", real_p),
            "null_percentiles": ("percentile", null_p),
            "real_mean": ((), float(real.mean())),
            "null_mean": ((), float(null.mean())),
            "real_mean_abs": ((), float(np.abs(real).mean())),
            "null_mean_abs": ((), float(np.abs(null).mean())),
            "spread_ratio": ((), float((real_p[3] - real_p[1]) / (null_p[3] - null_p[1]))),
            "fraction_significant": ((), float(np.mean((real < lo) | (real > hi)))),
            "n_pairs": ((), len(real)),
            "n_dropped": ((), n_dropped),
            "shift": ("unit", shifts),
            "bin_edge": ("edge", edges),
        },
        coords={"bin": centres, "percentile": list(_PERCENTILES), "unit": used},
    )
