"""Chunked iteration over (sample, unit) populations held in numpy, xarray or dask.

The streaming analyses (SVCA, cvPCA, spectra, correlations) read their input through these
helpers, so the same kernel runs on an in-memory array and on a dask array backed by a Zarr
store: memory is bounded by one chunk plus the accumulated covariance, never the recording.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import scipy.linalg
import xarray as xr
from threadpoolctl import threadpool_limits
from tqdm import tqdm

__all__ = [
    "assemble_rows",
    "combine_parts",
    "compute_graph",
    "default_chunk_rows",
    "distributed_client",
    "fits_on_workers",
    "is_lazy",
    "iter_sample_chunks",
    "iter_unit_chunks",
    "progress_bar",
    "reduce_sample_chunks",
    "reduce_unit_chunks",
    "top_eigh",
    "use_distributed",
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
    """Return a tqdm bar over ``total`` steps.

    Shown when ``progress`` is True, or when it is None
    and the job is large (``work`` elements above 2e8 and at least 8 steps).
    """
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


# ------------------------------------------------------------------ reductions over chunks ----
def distributed_client() -> Any | None:
    """Return the current ``dask.distributed`` client, or None when there is none.

    Never imports :mod:`distributed` itself: a user who never imported it has no client.
    """
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def use_distributed(data: Any) -> bool:
    """Tell whether ``data`` is dask-backed and a distributed client is current."""
    chunks = data.chunks if isinstance(data, xr.DataArray) else None
    if chunks is None and not isinstance(data, xr.DataArray):
        chunks = None if isinstance(data, np.ndarray) else getattr(data, "chunks", None)
    return chunks is not None and distributed_client() is not None


def fits_on_workers(nbytes: float, data: Any, *, copies: int = 3) -> bool:
    """Tell whether ``copies`` arrays of ``nbytes`` fit in each worker's memory limit.

    True without a distributed client (or for numpy ``data``), or when the workers have no
    limit. A chunk kernel's partial result, the partial it is combined with and their sum
    live on a worker at once, hence ``copies=3`` for the partial sums of a reduction.
    """
    if not use_distributed(data):
        return True
    client = distributed_client()
    workers = client.scheduler_info(n_workers=-1).get("workers", {}) if client else {}
    limits = [w.get("memory_limit") or 0 for w in workers.values()]
    limits = [lim for lim in limits if lim > 0]
    return not limits or copies * nbytes <= min(limits)


def combine_parts(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """Merge two partial results of a chunk kernel.

    Keys starting with ``min``/``max`` combine elementwise by minimum/maximum, keys starting
    with ``rows`` are lists of ``(start, array)`` pieces that are concatenated, and every other
    key is summed.
    """
    if a is None:
        return b
    if b is None:
        return a
    out: dict[str, Any] = {}
    for key, value in a.items():
        other = b[key]
        if key.startswith("min"):
            out[key] = np.minimum(value, other)
        elif key.startswith("max"):
            out[key] = np.maximum(value, other)
        elif key.startswith("rows"):
            out[key] = [*value, *other]
        else:
            out[key] = value + other
    return out


def _run_kernel(
    kernel: Callable[..., dict[str, Any]], start: int, stop: int, block: Any, consts: dict
) -> dict[str, Any]:
    return kernel(start, stop, np.array(block, dtype=np.float64), **consts)


def _tree_sum(parts: list[Any]) -> Any:
    """Pairwise (tree) reduction of delayed partial results with :func:`combine_parts`."""
    import dask

    combine = dask.delayed(combine_parts, pure=True)
    while len(parts) > 1:
        paired = [combine(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        parts = paired + ([parts[-1]] if len(parts) % 2 else [])
    return parts[0]


def _distributed_reduce(
    data: Any,
    kernel: Callable[..., dict[str, Any]],
    axis: int,
    bounds_ok: Callable[[int, int], bool],
    consts: dict[str, Any],
) -> dict[str, Any] | None:
    """Map ``kernel`` over the dask chunks of ``data`` along ``axis`` on the cluster.

    Then tree-reduce the partial results; one ``compute``.
    """
    import dask

    arr = data.data if isinstance(data, xr.DataArray) else data
    arr = arr.rechunk({i: -1 for i in range(arr.ndim) if i != axis})
    edges = np.concatenate([[0], np.cumsum(arr.chunks[axis])]).astype(int)
    blocks = arr.to_delayed()
    blocks = np.moveaxis(blocks, axis, 0).reshape(len(edges) - 1)
    shared = {k: dask.delayed(v, pure=True) for k, v in consts.items()}
    run = dask.delayed(_run_kernel, pure=True)
    parts = [
        run(kernel, int(a), int(b), blk, shared)
        for a, b, blk in zip(edges[:-1], edges[1:], blocks, strict=True)
        if bounds_ok(int(a), int(b))
    ]
    if not parts:
        return None
    (result,) = dask.compute(_tree_sum(parts))
    return dict(result) if result is not None else None


def reduce_sample_chunks(
    da: xr.DataArray,
    kernel: Callable[..., dict[str, Any]],
    *,
    rows: np.ndarray | None = None,
    chunk_size: int | None = None,
    progress: bool | None = None,
    desc: str = "chunks",
    **consts: Any,
) -> dict[str, Any]:
    """Sum ``kernel(start, stop, block, **consts)`` over the sample chunks of ``da``.

    ``block`` is a float64 copy of rows ``start:stop`` (all units). Partial results are dicts
    of arrays merged by :func:`combine_parts`. In memory (numpy, or dask without a distributed
    client) the chunks are read one by one (bounded memory, a progress bar on long work). With
    a dask-backed ``da`` and a current ``dask.distributed`` client, the kernel runs on the
    workers, one task per dask chunk, and the parts are tree-reduced in the same graph.
    ``rows`` (bool mask) skips chunks that hold no selected sample.
    """

    def ok(a: int, b: int) -> bool:
        return rows is None or bool(rows[a:b].any())

    if use_distributed(da):
        out = _distributed_reduce(da, kernel, 0, ok, consts)
    else:
        out = None
        for start, stop, block in iter_sample_chunks(
            da, chunk_size=chunk_size, rows=rows, progress=progress, desc=desc
        ):
            out = combine_parts(out, kernel(start, stop, block, **consts))
    if out is None:
        raise ValueError("reduce_sample_chunks(): no chunk holds a selected sample.")
    return out


def reduce_unit_chunks(
    data: Any,
    kernel: Callable[..., dict[str, Any]],
    *,
    unit_axis: int,
    chunk_size: int | None = None,
    progress: bool | None = None,
    desc: str = "unit chunks",
    **consts: Any,
) -> dict[str, Any]:
    """Sum ``kernel(start, stop, block, **consts)`` over unit chunks.

    Works as
    :func:`reduce_sample_chunks` does over sample chunks (on the cluster when a distributed
    client is current and ``data`` is dask-backed).
    """
    if use_distributed(data):
        out = _distributed_reduce(data, kernel, unit_axis, lambda a, b: True, consts)
    else:
        out = None
        for start, stop, block in iter_unit_chunks(
            data, unit_axis=unit_axis, chunk_size=chunk_size, progress=progress, desc=desc
        ):
            out = combine_parts(out, kernel(start, stop, block, **consts))
    assert out is not None
    return out


def assemble_rows(pieces: list[tuple[int, np.ndarray]], n_rows: int) -> np.ndarray:
    """Put ``(start, array)`` pieces from a ``rows*`` key back into one array."""
    width = pieces[0][1].shape[1]
    out = np.zeros((n_rows, width))
    for start, arr in pieces:
        out[start : start + len(arr)] = arr
    return out


# ---------------------------------------------------------------------- dask graphs ----
def _tqdm_callback(bar: Any) -> Any:
    """Return a dask local-scheduler callback that advances ``bar`` once per finished task."""
    from dask.callbacks import Callback

    class _Bar(Callback):
        def _start_state(self, dsk: Any, state: Any) -> None:
            bar.total = len(state["ready"]) + len(state["waiting"]) + len(state["finished"])
            bar.refresh()

        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
            bar.update(1)

    return _Bar()


def compute_graph(
    *collections: Any,
    distributed: bool,
    progress: bool | None,
    desc: str,
    work: float,
) -> tuple[Any, ...]:
    """Compute dask ``collections`` on the cluster, or locally with a tqdm bar on long work.

    With ``distributed`` the current :mod:`dask.distributed` client runs the graph on its
    workers (the tasks are blockwise; only the results come back). Otherwise the local
    threaded scheduler runs it (bounded memory: dask frees each chunk once its dependents
    ran), with a bar over the tasks shown when ``progress`` is True, or when it is None and
    ``work`` (elements) exceeds 2e8.
    """
    import dask

    if distributed:
        return tuple(dask.compute(*collections))
    show = bool(progress) if progress is not None else work > 2e8
    with tqdm(desc=desc, disable=not show, leave=False) as bar, _tqdm_callback(bar):
        return tuple(dask.compute(*collections, scheduler="threads"))
