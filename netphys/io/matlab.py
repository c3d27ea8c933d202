"""Read Stringer-lab and similar MATLAB ``.mat`` recordings (v5 with scipy, v7.3 with h5py)."""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from netphys._validation import check_positive_float
from netphys.errors import NetphysWarning, RecordingFormatError, ResourceLimitError
from netphys.io._common import build_dataset, check_file_rate, choose_activity
from netphys.io._guard import (
    DEFAULT_MAX_BYTES,
    ByteBudget,
    check_hdf5_confined,
    check_hdf5_dataset,
    check_read_chunks,
    declared_nbytes,
)
from netphys.io._hdf5_lazy import LazySpec, lazy_dataset

__all__ = ["read_stringer_mat"]

# neurons x time keys, in order of preference, and what they hold
_NEURONS_BY_TIME = {
    "Fsp": "spks",
    "spks": "spks",
    "sp": "spks",
    "S": "spks",
    "NEURAL": "spks",
    "F": "F",
    "Fneu": "neuropil",
}
_RATE_KEYS = ("VIDEOfs", "fs", "frame_rate", "framerate", "Fs")


# top-level variables the reader looks at; nothing else is read
_WANTED = (*_NEURONS_BY_TIME, *_RATE_KEYS, "stim", "db", "med", "stat", "beh", "SONG", "SONGfs")
_MI_COMPRESSED, _MI_MATRIX = 15, 14


# activity matrices opened as dask arrays (``chunks`` not None): HDF5 name -> frame axis as
# stored (MATLAB writes column-major, so h5py sees neurons x time variables as time x neurons)
_LAZY_VARIABLES = {**{f"/{k}": 0 for k in _NEURONS_BY_TIME}, "/stim/spont": 1}


class _LazyGroup(Mapping[str, Any]):
    """A v7.3 (HDF5) .mat group read on access: datasets in MATLAB order, groups as mappings.

    Only the datasets the reader asks for are read (each checked against the budget first),
    so a file full of unused variables costs nothing. With ``lazy``, the numeric activity
    matrices (:data:`_LAZY_VARIABLES`) come back as dask arrays over their HDF5 chunks.
    """

    def __init__(self, group: h5py.Group, budget: ByteBudget, lazy: LazySpec | None) -> None:
        self._group = group
        self._budget = budget
        self._lazy = lazy
        self._cache: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self._cache:
            return self._cache[key]
        if key.startswith("#") or key not in self._group:
            raise KeyError(key)
        obj = self._group[key]
        if isinstance(obj, h5py.Group):
            value: Any = _LazyGroup(obj, self._budget, self._lazy)
        elif (
            self._lazy is not None
            and obj.name in _LAZY_VARIABLES
            and obj.ndim == 2
            and obj.size > 1
            and obj.dtype.kind in "biuf"
        ):
            what = f"variable {key!r}"
            axis = _LAZY_VARIABLES[obj.name]
            value = lazy_dataset(obj, self._budget, what, spec=self._lazy, time_axis=axis).T
        else:
            check_hdf5_dataset(obj, self._budget, f"variable {key!r}")
            value = obj[()]
            if isinstance(value, np.ndarray) and value.ndim >= 2:
                value = value.T
            if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "biuf":
                value = value.reshape(()).item()
        self._cache[key] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return (k for k in self._group if not k.startswith("#"))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def close(self) -> None:
        """Close the file (a no-op for sub-groups' parents already closed)."""
        if isinstance(self._group, h5py.File):
            self._group.close()


def _v5_declared_sizes(path: str) -> dict[str, int]:
    """Bytes each top-level variable of a v5 .mat declares, read from element headers only.

    A compressed variable (``miCOMPRESSED``) is inflated just far enough to read its inner
    ``miMATRIX`` tag, dims and name, so a zip bomb is measured without being expanded.
    """
    out: dict[str, int] = {}
    with open(path, "rb") as fp:
        endian = "<" if fp.read(128)[126:128] == b"IM" else ">"
        while True:
            tag = fp.read(8)
            if len(tag) < 8:
                return out
            mdtype, nbytes = struct.unpack(endian + "II", tag)
            start = fp.tell()
            if mdtype == _MI_COMPRESSED:
                head = zlib.decompressobj().decompress(fp.read(min(nbytes, 65536)), 512)
            else:
                head = tag + fp.read(min(nbytes, 512))
            name, declared = _v5_matrix_header(head, endian)
            if mdtype != _MI_COMPRESSED:
                declared = max(declared, nbytes + 8)
            if name is not None:
                out[name] = out.get(name, 0) + declared
            fp.seek(start + nbytes)


def _v5_subelement(head: bytes, pos: int, endian: str) -> tuple[bytes, int]:
    """Return the data of the subelement at ``pos`` (small or normal) and the next position."""
    first = struct.unpack(endian + "I", head[pos : pos + 4])[0]
    if first >> 16:  # small data element: size in the upper 16 bits, data in 4 bytes
        n = first >> 16
        return head[pos + 4 : pos + 4 + n], pos + 8
    n = struct.unpack(endian + "I", head[pos + 4 : pos + 8])[0]
    return head[pos + 8 : pos + 8 + n], pos + 8 + n + (-n % 8)


def _v5_matrix_header(head: bytes, endian: str) -> tuple[str | None, int]:
    """Name and declared size (element size, or dims x 8 bytes if larger) of a miMATRIX."""
    if len(head) < 40:
        return None, 0
    mdtype, nbytes = struct.unpack(endian + "II", head[:8])
    if mdtype != _MI_MATRIX:
        return None, 0
    dims_raw, pos = _v5_subelement(head, 8 + 16, endian)  # after the array flags subelement
    name_raw, _ = _v5_subelement(head, pos, endian)
    dims = np.frombuffer(dims_raw[: len(dims_raw) // 4 * 4], dtype=endian + "i4")
    elements = declared_nbytes([max(int(d), 0) for d in dims], 8)
    return name_raw.decode("latin1", "replace"), max(nbytes + 8, elements)


def _load(path: str, budget: ByteBudget, trusted: bool, lazy: LazySpec | None) -> Mapping[str, Any]:
    import scipy.io

    func = "read_stringer_mat"
    if h5py.is_hdf5(path):  # MATLAB v7.3; never parse its gigabytes as v5 element tags
        return _load_v73(path, budget, trusted, lazy)
    try:
        sizes = _v5_declared_sizes(path)
        names = [k for k in sizes if k in _WANTED]
        budget.take(sum(sizes[k] for k in names), f"the variables {names} (declared sizes)")
        mat = scipy.io.loadmat(path, squeeze_me=True, simplify_cells=True, variable_names=names)
        mat["__variables__"] = list(sizes)  # every variable's name, for error messages
        return mat
    except NotImplementedError:  # MATLAB v7.3 = HDF5
        return _load_v73(path, budget, trusted, lazy)
    except ResourceLimitError:
        raise
    except Exception as exc:  # scipy raises many types on damaged files
        raise RecordingFormatError(
            f"{func}(): {path} is not a readable MATLAB .mat file ({type(exc).__name__}: {exc}). "
            "It may be truncated or corrupted; copy it again from its source."
        ) from exc


def _load_v73(
    path: str, budget: ByteBudget, trusted: bool, lazy: LazySpec | None
) -> Mapping[str, Any]:
    func = "read_stringer_mat"
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise RecordingFormatError(
            f"{func}(): {path} looks like a MATLAB v7.3 (HDF5) file but could not be read "
            f"({type(exc).__name__}: {exc}). It may be truncated or corrupted."
        ) from exc
    try:
        check_hdf5_confined(f, func=func, source=path, trusted=trusted)
    except BaseException:
        f.close()
        raise
    return _LazyGroup(f, budget, lazy)


def _array(value: Any) -> Any:
    """``value`` as a NumPy array, or itself when it is a (lazy) dask array."""
    return value if hasattr(value, "dask") else np.asarray(value)


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def _as_rate(value: Any) -> float | None:
    try:
        rate = float(np.asarray(value).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return None
    return rate if np.isfinite(rate) and rate > 0 else None


def read_stringer_mat(
    path: str | os.PathLike[str],
    *,
    activity: str | None = None,
    frame_rate: float | None = None,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    trusted: bool = False,
    chunks: str | int | None = "auto",
) -> xr.Dataset:
    """Read a Stringer-lab (or similar) ``.mat`` recording into the (time, unit) schema.

    Parameters
    ----------
    path : str or path-like
        The ``.mat`` file (MATLAB v5 via scipy, v7.3 via h5py).
    activity : str, optional
        Which variable becomes ``activity`` (``'spks'`` or ``'F'``); default ``'spks'`` when
        present.
    frame_rate : float, optional
        Frame rate (Hz). Default: from ``VIDEOfs``/``fs``/``frame_rate`` in the file (or
        ``db.fs``); the Stringer 2019 files do not store it, so pass it for them (about 3 Hz
        per plane in that paper) or get frame indices as times with a warning.
    max_bytes : int or None, default=4 GiB
        Most bytes the reader may allocate, checked against the declared sizes of the
        variables it reads (only those it uses are read) before reading them. None: no limit.
        Lazy activity matrices (v7.3, see ``chunks``) are not counted, except one compressed
        more than 100-fold (a compression bomb); each chunk must fit in ``max_bytes``.
    trusted : bool, default=False
        For v7.3 (HDF5) files: follow external links, external storage and virtual datasets,
        which read other files on the machine. Refused by default.
    chunks : 'auto', int or None, default='auto'
        For v7.3 (HDF5) files, how the activity matrices (``Fsp``, ``spks``, ``F``, ...,
        ``stim.spont``) come back: ``'auto'``, lazily as dask arrays over the file's HDF5
        chunks (every unit in one chunk, frames filling dask's ``array.chunk-size``, rounded
        to whole HDF5 chunks), computable by dask.distributed workers; an int, that many
        frames per chunk; None, read into memory now. Checked as :func:`~netphys.io.read_nwb`
        checks its lazy series. v5 files (scipy) are always read into memory.

    Returns
    -------
    xarray.Dataset
        Dims ``(time, unit)``. ``activity`` and ``spks`` from ``Fsp`` (deconvolved, neurons x
        time; also ``spks``, ``sp``, ``S``, or ``NEURAL`` as in the seqNMF songbird file) or from
        ``stim.spont`` (time x neurons), ``F`` from ``F``. Coords ``frame_time``
        (``arange / frame_rate``), ``unit_id`` (row), ``pos_x``, ``pos_y``, ``pos_z``
        (``med`` columns X, Y, Z), ``is_cell`` (False for ``stat.redcell``), ``plane``
        (``stat.iplane``). ``behaviour`` (time, behaviour_var) from ``beh.runSpeed``,
        ``beh.pupil.area``, ``beh.face.motionSVD``/``beh.whisker.motionSVD`` (first 10
        components) when their length matches; ``stim_resp`` (stimulus, unit) with coord
        ``istim`` from ``stim.resp``/``stim.istim``; ``song`` (song_time, song_freq) with
        coord ``song_time`` (s) from ``SONG``/``SONGfs``. Attrs ``frame_rate``, ``source``,
        ``format='mat'``, ``frame_rate_known``.

    Raises
    ------
    RecordingFormatError
        If the file is unreadable or has none of the recognised neural keys.
    UnsafeFileError
        If a v7.3 file reads other files and ``trusted`` is False.
    ResourceLimitError
        If the variables read declare more than ``max_bytes``.

    Warns
    -----
    NetphysWarning
        When no frame rate is found and none is given (times are then frame indices).

    Examples
    --------
    >>> import numpy as np, scipy.io, tempfile
    >>> path = tempfile.mkdtemp() + "/rec.mat"
    >>> scipy.io.savemat(path, {"NEURAL": np.random.default_rng(0).random((5, 60)),
    ...                         "VIDEOfs": 30})
    >>> ds = read_stringer_mat(path)
    >>> ds.activity.shape, ds.attrs["frame_rate"]
    ((60, 5), 30.0)
    """
    func = "read_stringer_mat"
    name = os.fspath(path)
    if not Path(name).is_file():
        raise FileNotFoundError(f"{func}(): `path` {name!r} is not a file.")
    if frame_rate is not None:
        frame_rate = check_positive_float(frame_rate, func=func, name="frame_rate")
    chunks = check_read_chunks(chunks, func=func)
    lazy = None if chunks is None else LazySpec(chunks=chunks, trusted=bool(trusted))
    mat = _load(name, ByteBudget(max_bytes, func=func, source=name), trusted, lazy)
    try:
        ds = _neural(mat, name, activity=activity, frame_rate=frame_rate)
        n_time, n_unit = ds.sizes["time"], ds.sizes["unit"]
        return _song(_stimulus(_behaviour(ds, mat, n_time), mat, n_unit), mat)
    except (OSError, KeyError, RuntimeError) as exc:  # h5py on a damaged v7.3 file
        raise RecordingFormatError(
            f"{func}(): {name}: could not read the file ({type(exc).__name__}: {exc}). It may "
            "be truncated or corrupted."
        ) from exc
    finally:
        if isinstance(mat, _LazyGroup):
            mat.close()


def _neural(
    mat: Mapping[str, Any], name: str, *, activity: str | None, frame_rate: float | None
) -> xr.Dataset:
    """Traces, frame times and unit coords (the reader schema without extras)."""
    func = "read_stringer_mat"
    traces: dict[str, Any] = {}
    for key, kind in _NEURONS_BY_TIME.items():
        if kind in traces or key not in mat:
            continue
        arr = _array(mat[key])
        if arr.ndim == 2 and arr.dtype.kind in "biuf":
            traces[kind] = arr.T.astype(np.float32, copy=False)
    spont = _get(mat, "stim", "spont")
    if "spks" not in traces and spont is not None and np.ndim(spont) == 2:
        traces["spks"] = _array(spont).astype(np.float32)  # already time x neurons
    if not traces:
        keys = sorted(mat.get("__variables__") or (k for k in mat if not k.startswith("__")))
        raise RecordingFormatError(
            f"{func}(): {name} has no recognisable neural activity: looked for a 2-D neurons x "
            f"time matrix under {list(_NEURONS_BY_TIME)} or time x neurons under stim.spont; the "
            f"file holds {keys}. Load it with scipy.io.loadmat and build the DataArray yourself."
        )
    shapes = {k: v.shape for k, v in traces.items()}
    if len(set(shapes.values())) != 1:
        first = next(iter(traces))
        traces = {first: traces[first]}
    n_time, n_unit = next(iter(traces.values())).shape
    known = True
    if frame_rate is None:
        for key in _RATE_KEYS:
            if key in mat:  # a stored rate must be usable: 0 would give infinite frame times
                frame_rate = check_file_rate(mat[key], func=func, source=name, what=key)
                break
        else:
            db_fs = _get(mat, "db", "fs")
            if db_fs is not None:
                frame_rate = check_file_rate(db_fs, func=func, source=name, what="db.fs")
    if frame_rate is None:
        warnings.warn(
            f"{func}(): {name} stores no frame rate (looked for {list(_RATE_KEYS)} and db.fs); "
            "`frame_time` is the frame index. Pass `frame_rate=` (Hz) to get seconds.",
            NetphysWarning,
            stacklevel=4,
        )
        frame_rate, known = 1.0, False
    coords: dict[str, np.ndarray] = {"unit_id": np.arange(n_unit, dtype=np.int64)}
    med = np.asarray(mat["med"], dtype=np.float64) if "med" in mat else None
    if med is not None and med.ndim == 2 and med.shape[0] == n_unit:
        for j, c in enumerate(("pos_x", "pos_y", "pos_z")[: med.shape[1]]):
            coords[c] = med[:, j]
    stat = mat.get("stat")
    if isinstance(stat, list) and len(stat) == n_unit and all(isinstance(s, dict) for s in stat):
        red = np.array([float(s.get("redcell", 0) or 0) for s in stat])
        coords["is_cell"] = red < 0.5
        if all("iplane" in s for s in stat):
            coords["plane"] = np.array([int(s["iplane"]) for s in stat], dtype=np.int64)
    coords.setdefault("is_cell", np.ones(n_unit, bool))
    for c in ("pos_x", "pos_y", "pos_z"):
        coords.setdefault(c, np.full(n_unit, np.nan))
    chosen = choose_activity(
        list(traces), activity, preference=("spks", "F"), func=func, source=name
    )
    return build_dataset(
        traces,
        activity=chosen,
        frame_time=np.arange(n_time) / float(frame_rate),
        unit_coords=coords,
        attrs={
            "frame_rate": float(frame_rate),
            "source": name,
            "format": "mat",
            "frame_rate_known": known,
        },
    )


def _behaviour(ds: xr.Dataset, mat: Mapping[str, Any], n_time: int) -> xr.Dataset:
    beh_cols, beh_names = [], []
    for label, value in (
        ("runSpeed", _get(mat, "beh", "runSpeed")),
        ("pupil_area", _get(mat, "beh", "pupil", "area")),
        ("face_motionSVD", _get(mat, "beh", "face", "motionSVD")),
        ("whisker_motionSVD", _get(mat, "beh", "whisker", "motionSVD")),
    ):
        if value is None:
            continue
        arr = np.asarray(value, dtype=np.float64)
        arr = arr.reshape(arr.shape[0], -1) if arr.ndim else arr.reshape(1, 1)
        if arr.shape[0] != n_time:
            continue
        for j in range(min(arr.shape[1], 10)):
            beh_cols.append(arr[:, j])
            beh_names.append(label if arr.shape[1] == 1 else f"{label}[{j}]")
    if beh_cols:
        ds["behaviour"] = xr.Variable(("time", "behaviour_var"), np.stack(beh_cols, axis=1))
        ds = ds.assign_coords(behaviour_var=("behaviour_var", beh_names))
    return ds


def _stimulus(ds: xr.Dataset, mat: Mapping[str, Any], n_unit: int) -> xr.Dataset:
    resp = _get(mat, "stim", "resp")
    if resp is not None and np.ndim(resp) == 2 and np.shape(resp)[1] == n_unit:
        ds["stim_resp"] = xr.Variable(("stimulus", "unit"), np.asarray(resp, dtype=np.float32))
        istim = _get(mat, "stim", "istim")
        if istim is not None and np.shape(istim) == (np.shape(resp)[0],):
            ds = ds.assign_coords(istim=("stimulus", np.asarray(istim)))
    return ds


def _song(ds: xr.Dataset, mat: Mapping[str, Any]) -> xr.Dataset:
    if "SONG" in mat and np.ndim(mat["SONG"]) == 2:
        song = np.asarray(mat["SONG"], dtype=np.float32).T  # stored frequency x time
        song_fs = _as_rate(mat.get("SONGfs"))
        ds["song"] = xr.Variable(
            ("song_time", "song_freq"), song, attrs={"long_name": "song spectrogram"}
        )
        if song_fs is not None:
            ds = ds.assign_coords(
                song_time=("song_time", np.arange(song.shape[0]) / song_fs, {"units": "s"})
            )
            ds.attrs["song_rate"] = song_fs
    return ds
