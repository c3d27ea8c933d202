"""Chunked iteration over (sample, unit) populations held in numpy, xarray or dask.

The streaming analyses (SVCA, cvPCA, spectra, correlations) read their input through these
helpers, so the same kernel runs on an in-memory array and on a dask array backed by a Zarr
store: memory is bounded by one chunk plus the accumulated covariance, never the recording.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.linalg
import xarray as xr
from threadpoolctl import threadpool_limits
from tqdm import tqdm

__all__ = [
    "default_chunk_rows",
    "is_lazy",
    "iter_sample_chunks",
    "iter_unit_chunks",
    "progress_bar",
    "top_eigh",
]

#: Below this size, symmetric eigensolvers run single-threaded: the tridiagonal reduction is
#: memory-bound, and on a busy machine extra BLAS threads only spin (10x slower measured).
_SMALL_EIGH = 2048

#: Target number of float64 elements in one chunk handed to a kernel (64 MiB).
_CHUNK_ELEMENTS = 2**23


def is_lazy(da: xr.DataArray) -> bool:
    """Return True when ``da`` is backed by a chunked (dask) array."""
    return da.chunks is not None


def default_chunk_rows(n_cols: int) -> int:
    """Rows per chunk so that one float64 chunk holds about 64 MiB."""
    return max(1, _CHUNK_ELEMENTS // max(1, n_cols))


def _sample_bounds(da: xr.DataArray, chunk_size: int | None) -> list[tuple[int, int]]:
    n = da.shape[0]
    if chunk_size is None and is_lazy(da):
        edges = np.concatenate([[0], np.cumsum(da.data.chunks[0])])
        # merge small dask chunks up to the default size so per-chunk overhead stays small
        target = default_chunk_rows(da.shape[1])
        bounds: list[tuple[int, int]] = []
        start = 0
        for stop in edges[1:]:
            if stop - start >= target or stop == n:
                bounds.append((int(start), int(stop)))
                start = stop
        return bounds
    step = chunk_size if chunk_size is not None else default_chunk_rows(da.shape[1])
    return [(i, min(n, i + step)) for i in range(0, n, step)]


def progress_bar(total: int, *, progress: bool | None, desc: str, work: float) -> Any:
    """A tqdm bar over ``total`` steps, shown when ``progress`` is True, or when it is None
    and the job is large (``work`` elements above 2e8 and at least 8 steps)."""
    show = bool(progress) if progress is not None else (work > 2e8 and total >= 8)
    return tqdm(total=total, desc=desc, disable=not show, leave=False)


def iter_sample_chunks(
    da: xr.DataArray,
    *,
    chunk_size: int | None = None,
    columns: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    progress: bool | None = None,
    desc: str = "chunks",
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, block)`` over consecutive sample ranges of a (sample, unit) array.

    ``block`` is a fresh float64 numpy array of shape (stop - start, n_columns), a copy that the
    caller may modify. ``columns`` selects units; ``rows`` (bool mask over samples) skips chunks
    that contain no selected sample, without changing the row count of the others.
    """
    bounds = _sample_bounds(da, chunk_size)
    if rows is not None:
        bounds = [(a, b) for a, b in bounds if rows[a:b].any()]
    dim = da.dims[0]
    if columns is not None:
        da = da.isel(unit=columns)
    n_cols = da.shape[1]
    with progress_bar(
        len(bounds), progress=progress, desc=desc, work=float(da.shape[0]) * n_cols
    ) as bar:
        for start, stop in bounds:
            # slicing the DataArray reads only this range from dask or a lazy backend
            block = da.isel({dim: slice(start, stop)}).values
            yield start, stop, np.array(block, dtype=np.float64)
            bar.update(1)


def iter_unit_chunks(
    data: Any,
    *,
    unit_axis: int,
    chunk_size: int | None = None,
    progress: bool | None = None,
    desc: str = "unit chunks",
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, block)`` over consecutive unit ranges of an array.

    ``data`` is a numpy or dask array, or a DataArray (read range by range).

    ``block`` is a float64 numpy copy of ``data`` restricted to those units along ``unit_axis``.
    """
    n_units = data.shape[unit_axis]
    other = int(np.prod([s for i, s in enumerate(data.shape) if i != unit_axis]))
    chunks = data.chunks if isinstance(data, xr.DataArray) else getattr(data, "chunks", None)
    if chunk_size is None and chunks is not None and not isinstance(data, np.ndarray):
        edges = np.concatenate([[0], np.cumsum(chunks[unit_axis])])
        bounds = list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))
    else:
        step = chunk_size if chunk_size is not None else default_chunk_rows(other)
        bounds = [(i, min(n_units, i + step)) for i in range(0, n_units, step)]
    index: list[Any] = [slice(None)] * data.ndim
    with progress_bar(
        len(bounds), progress=progress, desc=desc, work=float(other) * n_units
    ) as bar:
        for start, stop in bounds:
            index[unit_axis] = slice(start, stop)
            block = data[tuple(index)]
            if isinstance(block, xr.DataArray):
                block = block.values
            yield start, stop, np.array(block, dtype=np.float64)
            bar.update(1)


def top_eigh(mat: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest ``k`` eigenvalues (descending) and eigenvectors of a symmetric matrix."""
    m = mat.shape[0]
    if m <= _SMALL_EIGH:
        with threadpool_limits(1, user_api="blas"):
            evals, evecs = scipy.linalg.eigh(mat, subset_by_index=[m - k, m - 1])
    else:
        evals, evecs = scipy.linalg.eigh(mat, subset_by_index=[m - k, m - 1])
    return evals[::-1].copy(), evecs[:, ::-1].copy()
