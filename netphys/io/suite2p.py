"""Read and write suite2p output folders (v0 ``ops.npy`` and v1 ``db.npy``/``settings.npy``).

Object arrays (``stat.npy``, ``ops.npy``, ...) are read with an allow-list unpickler
(:mod:`netphys.io._safe_pickle`): a file that asks for anything but numpy and builtin values is
refused with :class:`~netphys.errors.UnsafeFileError`, and no pickle is ever executed.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import check_positive_float
from netphys.errors import RecordingFormatError
from netphys.io._common import (
    build_dataset,
    check_file_rate,
    check_trace,
    choose_activity,
)
from netphys.io._guard import (
    DEFAULT_MAX_BYTES,
    ByteBudget,
    check_read_chunks,
    check_store_confined,
)
from netphys.io._safe_pickle import load_npy
from netphys.io._suite2p_write import write_suite2p

__all__ = ["is_suite2p_folder", "read_suite2p", "to_suite2p", "write_suite2p"]

_PREFERENCE = ("spks", "F", "neuropil")
_TRACE_FILES = {"F": "F.npy", "neuropil": "Fneu.npy", "spks": "spks.npy"}
_READ_FILES = (
    *_TRACE_FILES.values(),
    *("stat.npy", "ops.npy", "iscell.npy", "redcell.npy", "db.npy", "settings.npy"),
)


def _plane_folders(folder: Path) -> list[tuple[int, Path]]:
    """Return ``(plane index, folder)`` pairs of the suite2p plane folders under ``folder``."""
    if (folder / "F.npy").is_file():
        m = re.fullmatch(r"plane(\d+)", folder.name)
        return [(int(m.group(1)) if m else 0, folder)]
    planes = []
    for child in folder.iterdir() if folder.is_dir() else ():
        m = re.fullmatch(r"plane(\d+)", child.name)
        if m and (child / "F.npy").is_file():
            planes.append((int(m.group(1)), child))
    if planes:
        return sorted(planes)
    if (folder / "suite2p").is_dir():
        return _plane_folders(folder / "suite2p")
    return []


def is_suite2p_folder(folder: str | os.PathLike[str]) -> bool:
    """Return True when ``folder`` (or its ``suite2p``/``planeK`` children) holds ``F.npy``."""
    path = Path(folder)
    return path.is_dir() and bool(_plane_folders(path))


def _load(path: Path, budget: ByteBudget) -> Any:
    return load_npy(path, source=str(path), budget=budget)


class _NpyView:
    """A numeric ``.npy`` file read on demand: positioned reads, else a read-only memory map.

    The object is small to pickle, so dask can ship it to distributed workers. A block of a
    C-ordered 2-D file (rows = ROIs, a run of frames) is read row by row with ``os.preadv``
    into the result, so the process never maps the file: reading a few frames of every ROI
    costs the block's bytes of memory, not every page of the file it touches (which a memory
    map counts in the resident size that dask.distributed's memory limits watch).
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int = -1):
        self.path, self.shape, self.dtype, self.ndim = str(path), shape, dtype, len(shape)
        self.offset = offset  # of the data in the file; -1: read through a memory map

    def __getitem__(self, index: Any) -> np.ndarray:
        block = _plain_block(index, self.shape) if self.offset >= 0 else None
        if block is None:
            return np.array(np.load(self.path, mmap_mode="r", allow_pickle=False)[index])
        (r0, r1), (c0, c1) = block
        out = np.empty((r1 - r0, c1 - c0), self.dtype)
        if out.size:
            _pread_rows(self.path, self.offset + r0 * self.shape[1] * out.itemsize, out, c0,
                        self.shape[1])  # fmt: skip
        return out


def _plain_block(index: Any, shape: tuple[int, ...]) -> tuple[tuple[int, int], ...] | None:
    """``((r0, r1), (c0, c1))`` when ``index`` is two unit-step slices of a 2-D array."""
    if len(shape) != 2 or not isinstance(index, tuple) or len(index) != 2:
        return None
    out = []
    for sl, n in zip(index, shape, strict=True):
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            return None
        start, stop, _ = sl.indices(n)
        out.append((start, max(start, stop)))
    return out[0], out[1]


def _pread_rows(path: str, start: int, out: np.ndarray, c0: int, n_cols: int) -> None:
    """Fill ``out`` (rows, cols) from the C-ordered rows of ``n_cols`` items at byte ``start``."""
    row = n_cols * out.itemsize
    fd = os.open(path, os.O_RDONLY)
    try:
        if c0 == 0 and out.shape[1] == n_cols:  # whole rows: one contiguous read
            _pread_all(fd, out.reshape(-1).view(np.uint8), start, path)
            return
        for i in range(out.shape[0]):
            _pread_all(fd, out[i].view(np.uint8), start + i * row + c0 * out.itemsize, path)
    finally:
        os.close(fd)


def _pread_all(fd: int, buf: np.ndarray, offset: int, path: str) -> None:
    done = 0
    while done < buf.size:
        n = os.preadv(fd, [buf.data[done:]], offset + done)
        if n <= 0:
            raise RecordingFormatError(
                f"read_suite2p(): {path} ended at byte {offset + done} while reading it (it was "
                "truncated after it was opened). Open the folder again."
            )
        done += n


def _load_trace(path: Path, budget: ByteBudget, chunks: str | int | None = "auto") -> Any:
    """Open a numeric 2-D trace file as a dask array read on demand (``chunks`` frames each).

    Nothing is read until used, so nothing counts against ``budget``; any other file (object
    dtype, truncated, not 2-D), and every file when ``chunks`` is None, goes through the
    guarded loader, which reads it at once (or reports it).
    """
    if chunks is None:
        return _load(path, budget)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return _load(path, budget)
    if not isinstance(arr, np.ndarray) or arr.dtype.hasobject or arr.ndim != 2:
        return _load(path, budget)
    import dask.array as dsa

    offset = int(arr.offset) if isinstance(arr, np.memmap) and arr.flags.c_contiguous else -1
    view = _NpyView(path, arr.shape, arr.dtype, offset)
    auto = 2**24 // max(1, arr.shape[0])
    frames = max(1, min(arr.shape[1], auto if chunks == "auto" else int(chunks)))
    stamp = path.stat()
    name = f"suite2p-{path}-{stamp.st_mtime_ns}-{stamp.st_size}"
    return dsa.from_array(view, chunks=(arr.shape[0], frames), lock=False, name=name)


def _concat(parts: list[Any]) -> Any:
    """Concatenate planes along ROIs, lazily when the traces are dask arrays."""
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts, axis=0)
    import dask.array as dsa

    return dsa.concatenate([dsa.asarray(p) for p in parts], axis=0)


def _load_dict(path: Path, budget: ByteBudget) -> dict[str, Any]:
    arr = _load(path, budget)
    obj = (
        arr.item() if isinstance(arr, np.ndarray) and arr.dtype == object and arr.ndim == 0 else arr
    )
    if not isinstance(obj, dict):
        raise RecordingFormatError(
            f"read_suite2p(): {path} should hold a dict (np.save of a dict); "
            f"got {type(obj).__name__}."
        )
    return obj


def _find_key(meta: dict[str, Any], key: str) -> Any:
    """Look ``key`` up at the top level, then one level down (suite2p v1 nests settings)."""
    if key in meta:
        return meta[key]
    for value in meta.values():
        if isinstance(value, dict) and key in value:
            return value[key]
    return None


def _plane_metadata(plane: Path, budget: ByteBudget) -> tuple[dict[str, Any], str]:
    if (plane / "ops.npy").is_file():
        return _load_dict(plane / "ops.npy", budget), "v0"
    meta: dict[str, Any] = {}
    found = False
    for name in ("db.npy", "settings.npy"):
        if (plane / name).is_file():
            meta.update(_load_dict(plane / name, budget))
            found = True
    return meta, ("v1" if found else "none")


def read_suite2p(
    folder: str | os.PathLike[str],
    *,
    activity: str | None = None,
    frame_rate: float | None = None,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    chunks: str | int | None = "auto",
    trusted: bool = False,
) -> xr.Dataset:
    """Read a suite2p output folder into the (time, unit) reader schema.

    Parameters
    ----------
    folder : str or path-like
        A plane folder (holding ``F.npy``), a folder of ``plane0``, ``plane1``, ... folders,
        or a folder holding ``suite2p/``. Multi-plane folders are concatenated along ``unit``
        (``combined/`` is ignored: it repeats the planes).
    activity : str, optional
        Which trace becomes ``activity``: ``'spks'`` (default when ``spks.npy`` exists),
        ``'F'`` or ``'neuropil'``. All traces present are returned anyway.
    frame_rate : float, optional
        Frame rate (Hz) per plane; overrides ``fs`` from ``ops.npy`` / ``settings.npy`` and
        is required when neither file exists.
    max_bytes : int or None, default=4 GiB
        Most bytes the reader may allocate over all files (checked against each ``.npy``
        header, and the expanded size of pickles, before allocating). None: no limit. Lazy
        traces (see ``chunks``) are not counted: nothing of them is read at open.
    chunks : 'auto', int or None, default='auto'
        How ``F``, ``Fneu`` and ``spks`` come back. ``'auto'``: lazily, as dask arrays (every
        ROI in one chunk, about 2**24 values per chunk) read on demand by positioned reads of
        the ``.npy`` files, computable by dask.distributed workers; an int: that many frames
        per chunk; None: read into memory (NumPy) now, checked against ``max_bytes``.
    trusted : bool, default=False
        Read plane folders and files that are symlinks leading out of ``folder``. By default
        they are refused (a link would make the reader return another file's bytes); ``folder``
        itself may be a symlink.

    Returns
    -------
    xarray.Dataset
        Dims ``(time, unit)``: ``activity``, ``F``, ``neuropil`` (``Fneu.npy``), ``spks`` where
        present; coords ``frame_time`` (``arange(n_frames) / fs``, s), ``unit``, ``unit_id`` (ROI
        index in its plane), ``plane``, ``pos_x``, ``pos_y`` (``stat['med']`` is (y, x)),
        ``pos_z`` (plane index, or ``stat['iplane']``), ``is_cell``, ``cell_prob``
        (``iscell.npy``), ``red_cell_prob`` (``redcell.npy`` column 1, NaN without it); attrs ``frame_rate``, ``source``, ``format='suite2p'``,
        ``suite2p_generation`` (``'v0'`` ops.npy or ``'v1'`` db/settings), ``n_planes``, ``tau``.

    Raises
    ------
    RecordingFormatError
        If ``folder`` holds no suite2p output, or files disagree in shape or are unreadable.
    UnsafeFileError
        If an object ``.npy`` file asks the unpickler for anything outside the allow-list
        (or for arrays built from raw memory), or a file or plane folder is a symlink out of
        ``folder`` and ``trusted`` is False.
    ResourceLimitError
        If the files ask for more than ``max_bytes``.

    Notes
    -----
    Planes of a volume are imaged one after another, so plane ``k`` lags plane 0 by
    ``k / (fs * n_planes)``; ``frame_time`` is plane 0's. Planes with different frame counts are
    cut to the shortest. Units written by :func:`write_suite2p` carry their exact model positions
    and ids (``stat['netphys_pos']``, ``stat['netphys_unit_id']``), which are used when present.

    Examples
    --------
    >>> import numpy as np, tempfile, xarray as xr
    >>> act = xr.DataArray(np.random.default_rng(0).random((50, 4)), dims=("time", "unit"),
    ...                    coords={"pos_x": ("unit", [0., 1, 2, 3]), "pos_y": ("unit", [0., 0, 1, 1])},
    ...                    attrs={"frame_rate": 10.0})
    >>> folder = write_suite2p(act, tempfile.mkdtemp() + "/s2p")
    >>> ds = read_suite2p(folder)
    >>> ds.activity.shape, ds.attrs["frame_rate"]
    ((50, 4), 10.0)
    """
    func = "read_suite2p"
    path = Path(folder)
    if not path.exists():
        raise FileNotFoundError(f"{func}(): `folder` {str(path)!r} does not exist.")
    if frame_rate is not None:
        frame_rate = check_positive_float(frame_rate, func=func, name="frame_rate")
    chunks = check_read_chunks(chunks, func=func)
    planes = _plane_folders(path)
    if not planes:
        raise RecordingFormatError(
            f"{func}(): {path} is not a suite2p output folder: looked for F.npy in it, in "
            "plane0/, plane1/, ... and in suite2p/plane*/ and found none. Pass the folder that "
            "suite2p wrote (usually <data>/suite2p)."
        )
    if not trusted:
        check_store_confined(
            path,
            func=func,
            files=[p for _, plane in planes for p in (plane, *(plane / n for n in _READ_FILES))],
            what="suite2p folder",
            fix="if you trust every file it links to, pass `trusted=True`.",
        )
    budget = ByteBudget(max_bytes, func=func, source=str(path))
    read = [_read_plane(plane, iplane, budget, chunks) for iplane, plane in planes]
    per_trace: dict[str, list[np.ndarray]] = {}
    for plane_read in read:
        for name, arr in plane_read.traces.items():
            per_trace.setdefault(name, []).append(arr)
    names = [n for n in _TRACE_FILES if n in per_trace and len(per_trace[n]) == len(planes)]
    if "F" not in names:
        raise RecordingFormatError(f"{func}(): every plane of {path} needs F.npy.")
    n_frames = min(a.shape[1] for a in per_trace["F"])
    # the traces stay lazy, but frame times and xarray's index over them are built now
    budget.take(2 * 8 * n_frames, f"the frame times of {n_frames} frames")
    merged = {n: _concat([a[:, :n_frames] for a in per_trace[n]]).T for n in names}
    fs_values = [r.meta["fs"] for r in read if r.meta.get("fs") is not None]
    where = next((r.where for r in read if r.meta.get("fs") is not None), path)
    if frame_rate is None:
        if not fs_values:
            raise RecordingFormatError(
                f"{func}(): no frame rate in {path}: looked for 'fs' in ops.npy (suite2p v0) and "
                "settings.npy/db.npy (v1). Pass `frame_rate=` (Hz)."
            )
        frame_rate = check_file_rate(fs_values[0], func=func, source=str(where), what="fs")
    chosen = choose_activity(
        list(merged), activity, preference=_PREFERENCE, func=func, source=str(path)
    )
    taus = [r.meta["tau"] for r in read if r.meta.get("tau") is not None]
    version = next((r.meta["version"] for r in read if r.meta.get("version") is not None), None)
    return build_dataset(
        merged,
        activity=chosen,
        frame_time=np.arange(n_frames) / float(frame_rate),
        unit_coords={k: np.concatenate([r.coords[k] for r in read]) for k in _COORDS},
        attrs={
            "frame_rate": float(frame_rate),
            "source": str(path),
            "format": "suite2p",
            "suite2p_generation": read[0].generation,
            "suite2p_version": None if version is None else str(version),
            "n_planes": len(planes),
            "tau": taus[0] if taus else None,
        },
    )


_COORDS = (
    "unit_id",
    "plane",
    "pos_x",
    "pos_y",
    "pos_z",
    "is_cell",
    "cell_prob",
    "red_cell_prob",
)


@dataclass
class _Plane:
    """What one plane folder holds: traces (roi, frame), per-ROI coords and metadata."""

    traces: dict[str, np.ndarray]
    coords: dict[str, np.ndarray]
    meta: dict[str, Any]
    generation: str
    where: Path


def _read_plane(
    plane: Path, iplane: int, budget: ByteBudget, chunks: str | int | None = "auto"
) -> _Plane:
    func = "read_suite2p"
    meta, generation = _plane_metadata(plane, budget)
    traces = {}
    for name, fname in _TRACE_FILES.items():
        if (plane / fname).is_file():
            arr = _load_trace(plane / fname, budget, chunks)
            if arr.ndim != 2:
                raise RecordingFormatError(
                    f"{func}(): {plane / fname} should be 2-D (n_rois, n_frames); "
                    f"got shape {arr.shape}."
                )
            traces[name] = check_trace(arr, func=func, source=str(plane), what=fname)
    shapes = {k: v.shape for k, v in traces.items()}
    if len(set(shapes.values())) != 1:
        raise RecordingFormatError(
            f"{func}(): traces in {plane} disagree in shape: {shapes}. All of F.npy, "
            "Fneu.npy and spks.npy must be (n_rois, n_frames)."
        )
    if "F" not in traces:
        raise RecordingFormatError(f"{func}(): every plane needs F.npy; {plane} has none.")
    n_rois = traces["F"].shape[0]
    pos, uid = _roi_positions(plane, n_rois, iplane, budget)
    is_cell, prob = np.ones(n_rois, bool), np.full(n_rois, np.nan)
    if (plane / "iscell.npy").is_file():
        iscell = _per_roi(plane / "iscell.npy", n_rois, budget)
        is_cell = iscell[:, 0] > 0.5
        prob = iscell[:, 1] if iscell.shape[1] > 1 else iscell[:, 0]
    red = np.full(n_rois, np.nan)
    if (plane / "redcell.npy").is_file():
        rc = _per_roi(plane / "redcell.npy", n_rois, budget)
        red = rc[:, 1] if rc.shape[1] > 1 else rc[:, 0]
    coords = {
        "unit_id": uid,
        "plane": np.full(n_rois, iplane, dtype=np.int64),
        "pos_x": pos[:, 0],
        "pos_y": pos[:, 1],
        "pos_z": pos[:, 2],
        "is_cell": is_cell,
        "cell_prob": prob,
        "red_cell_prob": red,
    }
    fs = _find_key(meta, "fs")
    tau = _find_key(meta, "tau")
    summary = {
        "fs": fs,
        "tau": None if tau is None else float(tau),
        "version": _find_key(meta, "suite2p_version"),
    }
    return _Plane(traces, coords, summary, generation, plane)


def _per_roi(path: Path, n_rois: int, budget: ByteBudget) -> np.ndarray:
    arr = np.asarray(_load(path, budget))
    check_trace(arr, func="read_suite2p", source=str(path.parent), what=path.name)
    cols = arr.size // n_rois if n_rois else 1
    if cols == 0 or arr.size != n_rois * cols:
        raise RecordingFormatError(
            f"read_suite2p(): {path} has shape {arr.shape}, which does not give one row per "
            f"ROI for the {n_rois} ROIs of F.npy."
        )
    return arr.astype(np.float64).reshape(n_rois, -1)


def _roi_positions(
    plane: Path, n_rois: int, iplane: int, budget: ByteBudget
) -> tuple[np.ndarray, np.ndarray]:
    """(n_rois, 3) positions and unit ids from ``stat.npy`` (NaN / row index without it)."""
    func = "read_suite2p"
    pos = np.full((n_rois, 3), np.nan)
    uid = np.arange(n_rois, dtype=np.int64)
    pos[:, 2] = iplane
    if not (plane / "stat.npy").is_file():
        return pos, uid
    stat = _load(plane / "stat.npy", budget)
    if len(stat) != n_rois:
        raise RecordingFormatError(
            f"{func}(): {plane / 'stat.npy'} has {len(stat)} ROIs but F.npy has {n_rois}."
        )
    for i, roi in enumerate(stat):
        if not isinstance(roi, dict):
            raise RecordingFormatError(
                f"{func}(): {plane / 'stat.npy'} entry {i} is a {type(roi).__name__}, not a dict."
            )
        try:
            _roi_position(roi, pos[i], uid, i)
        except (TypeError, ValueError, IndexError) as exc:
            raise RecordingFormatError(
                f"{func}(): {plane / 'stat.npy'} entry {i} has unusable position fields "
                f"({type(exc).__name__}: {exc})."
            ) from exc
    return pos, uid


def _roi_position(roi: dict[str, Any], pos: np.ndarray, uid: np.ndarray, i: int) -> None:
    if "netphys_pos" in roi:
        pos[:] = np.asarray(roi["netphys_pos"], dtype=np.float64).reshape(3)
    elif "med" in roi:
        med = np.asarray(roi["med"], dtype=np.float64).reshape(-1)
        pos[1], pos[0] = med[0], med[1]  # suite2p med is (y, x)
    elif "ypix" in roi and len(roi["ypix"]):
        ypix = np.asarray(roi["ypix"], dtype=np.float64)
        xpix = np.asarray(roi["xpix"], dtype=np.float64)
        pos[1], pos[0] = np.median(ypix), np.median(xpix)
    if "netphys_pos" not in roi and "iplane" in roi:
        pos[2] = float(roi["iplane"])
    if "netphys_unit_id" in roi:
        uid[i] = int(roi["netphys_unit_id"])


def to_suite2p(recording: Any, folder: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write a suite2p folder: deprecated alias of :func:`write_suite2p` (removed next release).

    Examples
    --------
    >>> import numpy as np, tempfile, warnings, xarray as xr
    >>> act = xr.DataArray(np.ones((4, 2)), dims=("time", "unit"), attrs={"frame_rate": 5.0})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = to_suite2p(act, tempfile.mkdtemp())
    >>> caught[0].category.__name__
    'DeprecationWarning'
    """
    warnings.warn(
        "netphys.io.to_suite2p() is renamed write_suite2p() (read_*/write_* pairs); the old "
        "name will be removed in the next release.",
        DeprecationWarning,
        stacklevel=2,
    )
    return write_suite2p(recording, folder, **kwargs)
