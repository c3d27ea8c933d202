"""Read Stringer-lab and similar MATLAB ``.mat`` recordings (v5 with scipy, v7.3 with h5py)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from netphys.errors import NetphysWarning, RecordingFormatError
from netphys.io._common import build_dataset, choose_activity

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


def _load_v73(path: str) -> dict[str, Any]:
    """Read a v7.3 (HDF5) .mat: datasets transposed back to MATLAB order, structs as dicts."""

    def read(obj: Any) -> Any:
        if isinstance(obj, h5py.Group):
            return {k: read(obj[k]) for k in obj if not k.startswith("#")}
        arr = obj[()]
        if isinstance(arr, np.ndarray) and arr.ndim >= 2:
            arr = arr.T
        if isinstance(arr, np.ndarray) and arr.size == 1 and arr.dtype.kind in "biuf":
            return arr.reshape(()).item()
        return arr

    with h5py.File(path, "r") as f:
        return {k: read(f[k]) for k in f if not k.startswith("#")}


def _load(path: str) -> dict[str, Any]:
    import scipy.io

    func = "read_stringer_mat"
    try:
        return scipy.io.loadmat(path, squeeze_me=True, simplify_cells=True)
    except NotImplementedError:  # MATLAB v7.3 = HDF5
        try:
            return _load_v73(path)
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise RecordingFormatError(
                f"{func}(): {path} looks like a MATLAB v7.3 (HDF5) file but could not be read "
                f"({type(exc).__name__}: {exc}). It may be truncated or corrupted."
            ) from exc
    except Exception as exc:  # scipy raises many types on damaged files
        raise RecordingFormatError(
            f"{func}(): {path} is not a readable MATLAB .mat file ({type(exc).__name__}: {exc}). "
            "It may be truncated or corrupted; copy it again from its source."
        ) from exc


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
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
    mat = _load(name)
    traces: dict[str, np.ndarray] = {}
    for key, kind in _NEURONS_BY_TIME.items():
        if kind in traces or key not in mat:
            continue
        arr = np.asarray(mat[key])
        if arr.ndim == 2 and arr.dtype.kind in "biuf":
            traces[kind] = arr.T.astype(np.float32, copy=False)
    spont = _get(mat, "stim", "spont")
    if "spks" not in traces and spont is not None and np.ndim(spont) == 2:
        traces["spks"] = np.asarray(spont, dtype=np.float32)  # already time x neurons
    if not traces:
        keys = sorted(k for k in mat if not k.startswith("__"))
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
            if key in mat and _as_rate(mat[key]) is not None:
                frame_rate = _as_rate(mat[key])
                break
        else:
            frame_rate = _as_rate(_get(mat, "db", "fs"))
    if frame_rate is None:
        warnings.warn(
            f"{func}(): {name} stores no frame rate (looked for {list(_RATE_KEYS)} and db.fs); "
            "`frame_time` is the frame index. Pass `frame_rate=` (Hz) to get seconds.",
            NetphysWarning,
            stacklevel=2,
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
    ds = build_dataset(
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
    resp = _get(mat, "stim", "resp")
    if resp is not None and np.ndim(resp) == 2 and np.shape(resp)[1] == n_unit:
        ds["stim_resp"] = xr.Variable(("stimulus", "unit"), np.asarray(resp, dtype=np.float32))
        istim = _get(mat, "stim", "istim")
        if istim is not None and np.shape(istim) == (np.shape(resp)[0],):
            ds = ds.assign_coords(istim=("stimulus", np.asarray(istim)))
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
