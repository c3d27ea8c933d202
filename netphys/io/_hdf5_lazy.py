"""Lazy HDF5 datasets for the NWB and MATLAB v7.3 readers: dask arrays over the file's chunks.

:func:`lazy_dataset` checks one dataset when the file is opened and returns a dask array whose
chunks read it on demand. The array holds an :class:`HDF5ArrayView`: a small picklable object
(file path, dataset name, the file's identity and the reader's limits) that reopens the file
read-only in whichever process computes a chunk (through xarray's ``CachingFileManager``, which
keeps one handle per file and process), so the array can be computed by dask.distributed
workers. Reads in one process are serialised by a lock (HDF5 is not thread-safe).

Checks at open, so a hostile file fails before anything is computed:

* what an eager read checks (:func:`~netphys.io._guard.check_hdf5_written`): a dataset declared
  but never written is refused; the whole file was already walked by
  :func:`~netphys.io._guard.check_hdf5_confined` (external links and storage, virtual
  datasets, link cycles);
* every stored chunk (or the contiguous block) lies inside the file: a truncated file is
  refused at open, not at the first compute;
* a dataset compressed more than :data:`MAX_COMPRESSION`-fold (a compression bomb) has its
  whole declared size taken from the byte budget, as an eager read would; honestly stored data
  are not counted (they are read chunk by chunk later);
* one HDF5 chunk (which a read decompresses whole) and one dask chunk fit in ``max_bytes``.

Each chunk read checks again that the file is the one checked at open (device, inode, size,
modification time), that the dataset is still plain (not external or virtual unless trusted)
and that the block fits ``max_bytes``; otherwise it raises the same clear errors.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from netphys.errors import RecordingFormatError, UnsafeFileError
from netphys.io._guard import ByteBudget, check_hdf5_written, declared_nbytes

__all__ = ["MAX_COMPRESSION", "HDF5ArrayView", "LazySpec", "dask_chunks", "lazy_dataset"]

#: Datasets compressed more than this many times count their whole declared size against
#: ``max_bytes`` even when opened lazily (real traces compress a few times; bombs 1000-fold).
MAX_COMPRESSION = 100

_LOCK = threading.Lock()  # one per process: HDF5 reads are serialised


@dataclass(frozen=True)
class LazySpec:
    """How a reader opens its big arrays lazily: ``chunks`` ('auto' or frames) and trust."""

    chunks: str | int
    trusted: bool = False


def _stamp(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class HDF5ArrayView:
    """A read-only view of one HDF5 dataset that reopens its file in every process.

    Parameters
    ----------
    path : str
        The HDF5 file.
    name : str
        Absolute name of the dataset in the file.
    shape, dtype
        The dataset's shape and dtype (checked again on every read).
    trusted : bool
        Allow external storage and virtual datasets.
    max_bytes : int or None
        Most bytes one read may return.
    func : str
        Public function name, for error messages.

    Examples
    --------
    >>> import h5py, numpy as np, pickle, tempfile
    >>> path = tempfile.mkdtemp() + "/x.h5"
    >>> with h5py.File(path, "w") as f:
    ...     _ = f.create_dataset("x", data=np.arange(6.0).reshape(3, 2))
    >>> view = HDF5ArrayView(path, "/x", (3, 2), np.float64, trusted=False, max_bytes=None,
    ...                      func="read_x")
    >>> pickle.loads(pickle.dumps(view))[1:, 0]
    array([2., 4.])
    """

    def __init__(
        self,
        path: str,
        name: str,
        shape: tuple[int, ...],
        dtype: Any,
        *,
        trusted: bool,
        max_bytes: int | None,
        func: str,
    ) -> None:
        self.path, self.name = path, name
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)
        self.trusted, self.max_bytes, self.func = trusted, max_bytes, func
        self.stamp = _stamp(path)
        self._manager: Any = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_manager"], state["_pid"] = None, -1  # file handles never travel
        return state

    def _file(self) -> h5py.File:
        from xarray.backends import CachingFileManager

        pid = os.getpid()
        if self._manager is None or self._pid != pid:  # a forked child opens its own handle
            key: Hashable = ("netphys-hdf5", self.path, self.stamp, pid)
            self._manager = CachingFileManager(h5py.File, self.path, mode="r", manager_id=key)
            self._pid = pid
        return self._manager.acquire()

    def _fail(self, problem: str, fix: str) -> RecordingFormatError:
        return RecordingFormatError(f"{self.func}(): {self.path}: {problem}. {fix}")

    def __getitem__(self, index: Any) -> np.ndarray:
        """Read ``index`` (basic slicing) of the dataset after checking the file again."""
        with _LOCK:
            try:
                same = _stamp(self.path) == self.stamp
            except OSError:
                same = False
            if not same:
                raise self._fail(
                    "the file changed (or went) since it was opened lazily",
                    "Open it again with the reader, or pass `chunks=None` to read it at once.",
                )
            try:
                dset = self._file()[self.name]
                self._check(dset, index)
                return np.asarray(dset[index])
            except (RecordingFormatError, UnsafeFileError):
                raise
            except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
                raise self._fail(
                    f"could not read {self.name} ({type(exc).__name__}: {exc})",
                    "The file may be truncated or corrupted.",
                ) from exc

    def _check(self, dset: Any, index: Any) -> None:
        if not isinstance(dset, h5py.Dataset) or dset.shape != self.shape:
            raise self._fail(f"{self.name} is no longer the dataset it was", "Open it again.")
        if not self.trusted and (dset.external or dset.is_virtual):
            raise UnsafeFileError(
                f"{self.func}(): {self.path}: dataset {self.name} reads other files (external "
                "storage or virtual). Pass `trusted=True` if you trust every file it points to."
            )
        shape = np.broadcast_to(np.False_, self.shape)[index].shape  # no allocation
        ByteBudget(self.max_bytes, func=self.func, source=self.path).check(
            declared_nbytes(shape, self.dtype.itemsize), f"a read of {self.name} {shape}"
        )


def dask_chunks(
    shape: tuple[int, ...],
    itemsize: int,
    stored: tuple[int, ...] | None,
    chunks: str | int,
    *,
    time_axis: int,
    target: int,
    cap: int | None = None,
) -> tuple[int, ...]:
    """Return dask chunk sizes: every unit per chunk, frames a multiple of the stored chunks.

    ``chunks='auto'`` takes as many frames as fit in ``target`` (and ``cap``) bytes with every
    unit; an int
    is a number of frames. Frames are rounded to whole HDF5 chunks (up for an int, down for
    'auto', never below one stored chunk). Only when that passes ``cap`` bytes (the reader's
    ``max_bytes``) are the other axes split too, along whole HDF5 chunks.

    Examples
    --------
    >>> dask_chunks((100_000, 50_000), 4, (1000, 500), "auto", time_axis=0, target=2**27)
    (1000, 50000)
    >>> dask_chunks((100_000, 50_000), 4, None, "auto", time_axis=0, target=2**27)
    (671, 50000)
    >>> dask_chunks((100_000, 50_000), 4, (1000, 500), 1500, time_axis=0, target=2**27)
    (2000, 50000)
    >>> dask_chunks((100_000, 50_000), 4, (1000, 500), "auto", time_axis=0, target=2**27,
    ...             cap=2**26)
    (1000, 16500)
    """
    stored = stored or (1,) * len(shape)
    step = stored[time_axis]
    row = declared_nbytes([s for i, s in enumerate(shape) if i != time_axis], itemsize)
    if chunks == "auto":
        fill = target if cap is None else min(target, cap)
        frames = max(step, (max(1, fill // max(row, 1)) // step) * step)
    else:
        frames = math.ceil(int(chunks) / step) * step
    out = [max(1, s) for s in shape]
    out[time_axis] = max(1, min(frames, shape[time_axis]))
    for axis in range(len(shape)):
        if axis == time_axis or cap is None or declared_nbytes(out, itemsize) <= cap:
            continue
        rest = declared_nbytes([c for i, c in enumerate(out) if i != axis], itemsize)
        fit = max(stored[axis], (max(1, cap // max(rest, 1)) // stored[axis]) * stored[axis])
        out[axis] = max(1, min(fit, shape[axis]))
    return tuple(out)


def _check_storage(dset: h5py.Dataset, budget: ByteBudget, what: str) -> None:
    """Refuse data stored past the end of the file; budget compression bombs and big chunks.

    External and virtual datasets (allowed only with ``trusted=True``) keep their data in
    other files and are not measured here.
    """
    if dset.external or dset.is_virtual:
        return
    size = os.path.getsize(dset.file.filename)
    extents: list[tuple[int, int]] = []
    if dset.chunks is None:
        offset = dset.id.get_offset()
        if offset is not None:
            extents.append((int(offset), int(dset.id.get_storage_size())))
    else:
        dset.id.chunk_iter(lambda info: extents.append((int(info.byte_offset), int(info.size))))
    end = max((o + n for o, n in extents), default=0)
    if end > size:
        raise RecordingFormatError(
            f"{budget.func}(): {budget.source}: {what} ({dset.name}) is stored up to byte {end} "
            f"but the file has {size} bytes. The file is truncated; copy it again from its source."
        )
    declared = declared_nbytes(dset.shape, dset.dtype.itemsize)
    stored = sum(n for _, n in extents)
    label = f"{what} ({dset.name}, shape {dset.shape}, {dset.dtype})"
    if declared > MAX_COMPRESSION * max(stored, 1):
        ratio = declared / max(stored, 1)
        budget.take(declared, f"{label}, compressed {ratio:.0f}-fold,")
    if dset.chunks is not None:
        chunk = declared_nbytes(dset.chunks, dset.dtype.itemsize)
        budget.check(chunk, f"each stored chunk of {label} (chunks {dset.chunks})")


def lazy_dataset(
    dset: Any, budget: ByteBudget, what: str, *, spec: LazySpec, time_axis: int = 0
) -> Any:
    """Check ``dset`` (see the module docstring) and return it as a dask array.

    Examples
    --------
    >>> import h5py, numpy as np, tempfile
    >>> path = tempfile.mkdtemp() + "/x.h5"
    >>> with h5py.File(path, "w") as f:
    ...     _ = f.create_dataset("x", data=np.ones((50, 4)), chunks=(10, 4))
    >>> with h5py.File(path, "r") as f:
    ...     arr = lazy_dataset(f["x"], ByteBudget(None, func="f", source=path), "x",
    ...                        spec=LazySpec(chunks=15))
    >>> arr.chunks, float(arr.sum().compute())
    (((20, 20, 10), (4,)), 200.0)
    """
    import dask
    import dask.array as dsa
    from dask.utils import parse_bytes

    if not isinstance(dset, h5py.Dataset):
        raise RecordingFormatError(
            f"{budget.func}(): {budget.source}: {what} ({getattr(dset, 'name', dset)}) should "
            f"be a dataset; got {type(dset).__name__}."
        )
    check_hdf5_written(dset, budget)
    _check_storage(dset, budget, what)
    target = int(parse_bytes(dask.config.get("array.chunk-size")))
    shape = tuple(int(s) for s in dset.shape)
    itemsize = dset.dtype.itemsize
    chunks = dask_chunks(
        shape,
        itemsize,
        dset.chunks,
        spec.chunks,
        time_axis=time_axis,
        target=target,
        cap=budget.max_bytes,
    )
    budget.check(declared_nbytes(chunks, itemsize), f"one chunk {chunks} of {what}")
    view = HDF5ArrayView(
        os.path.abspath(dset.file.filename),
        dset.name,
        shape,
        dset.dtype,
        trusted=spec.trusted,
        max_bytes=budget.max_bytes,
        func=budget.func,
    )
    name = "hdf5-" + dask.base.tokenize(view.path, view.name, view.stamp, chunks, view.trusted)
    meta = np.empty((0,) * len(shape), dtype=dset.dtype)
    return dsa.from_array(view, chunks=chunks, name=name, lock=False, meta=meta)
