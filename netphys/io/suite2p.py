"""Read and write suite2p output folders (v0 ``ops.npy`` and v1 ``db.npy``/``settings.npy``).

Object arrays (``stat.npy``, ``ops.npy``, ...) are read with an allow-list unpickler
(:mod:`netphys.io._safe_pickle`): a file that asks for anything but numpy and builtin values is
refused with :class:`~netphys.errors.UnsafeFileError`, and no pickle is ever executed.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import check_positive_float
from netphys.errors import RecordingFormatError
from netphys.io._common import (
    as_recording_dataset,
    build_dataset,
    check_file_rate,
    check_trace,
    choose_activity,
    recording_frame_rate,
)
from netphys.io._guard import DEFAULT_MAX_BYTES, ByteBudget
from netphys.io._safe_pickle import load_npy

__all__ = ["read_suite2p", "to_suite2p", "write_suite2p"]

_PREFERENCE = ("spks", "F", "neuropil")
_TRACE_FILES = {"F": "F.npy", "neuropil": "Fneu.npy", "spks": "spks.npy"}


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
        header, and the expanded size of pickles, before allocating). None: no limit.

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
        (or for arrays built from raw memory).
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
    planes = _plane_folders(path)
    if not planes:
        raise RecordingFormatError(
            f"{func}(): {path} is not a suite2p output folder: looked for F.npy in it, in "
            "plane0/, plane1/, ... and in suite2p/plane*/ and found none. Pass the folder that "
            "suite2p wrote (usually <data>/suite2p)."
        )
    budget = ByteBudget(max_bytes, func=func, source=str(path))
    read = [_read_plane(plane, iplane, budget) for iplane, plane in planes]
    per_trace: dict[str, list[np.ndarray]] = {}
    for plane_read in read:
        for name, arr in plane_read.traces.items():
            per_trace.setdefault(name, []).append(arr)
    names = [n for n in _TRACE_FILES if n in per_trace and len(per_trace[n]) == len(planes)]
    if "F" not in names:
        raise RecordingFormatError(f"{func}(): every plane of {path} needs F.npy.")
    n_frames = min(a.shape[1] for a in per_trace["F"])
    merged = {n: np.concatenate([a[:, :n_frames] for a in per_trace[n]], axis=0).T for n in names}
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


def _read_plane(plane: Path, iplane: int, budget: ByteBudget) -> _Plane:
    func = "read_suite2p"
    meta, generation = _plane_metadata(plane, budget)
    traces = {}
    for name, fname in _TRACE_FILES.items():
        if (plane / fname).is_file():
            arr = _load(plane / fname, budget)
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


def _disk(radius: float) -> tuple[np.ndarray, np.ndarray]:
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy**2 + dx**2 <= radius**2
    return dy[keep], dx[keep]


def _pixel_layout(
    pos_x: np.ndarray, pos_y: np.ndarray, *, pixels_per_unit: float | None, margin: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Map model positions to image pixels: returns pixel x, pixel y and the scale used."""
    span = max(float(np.ptp(pos_x)), float(np.ptp(pos_y)), 0.0)
    if pixels_per_unit is None:
        pixels_per_unit = 1.0 if span >= 32 or span == 0 else 256.0 / span
    px = (pos_x - pos_x.min()) * pixels_per_unit + margin
    py = (pos_y - pos_y.min()) * pixels_per_unit + margin
    return px, py, float(pixels_per_unit)


def write_suite2p(
    recording: Any,
    folder: str | os.PathLike[str],
    *,
    frame_rate: float | None = None,
    tau: float = 1.0,
    pixels_per_unit: float | None = None,
    roi_radius: float = 2.0,
    overwrite: bool = False,
) -> Path:
    """Write a recording as a suite2p output folder (``folder/plane0``).

    Parameters
    ----------
    recording : xarray.DataArray, xarray.Dataset or xarray.DataTree
        A (time, unit) DataArray (e.g. from ``netphys.io.recording.layer_activity``), a Dataset
        with ``activity`` and optionally ``F``, ``neuropil``, ``spks`` (a reader's output or
        :func:`netphys.population.simulate_calcium`'s), or a DataTree from
        ``netphys.open_recording`` (all layers).
    folder : str or path-like
        Output folder; ``plane0/`` is created inside it.
    frame_rate : float, optional
        Frames per second (``ops['fs']``). Default: the ``frame_rate`` attr, else from
        ``frame_time``.
    tau : float, default=1.0
        Indicator timescale written to ``ops['tau']`` (s).
    pixels_per_unit : float, optional
        Scale from ``pos_x``/``pos_y`` to image pixels. Default: 1 when positions already span
        >= 32 (pixel-like), else a scale that spreads them over ~256 pixels.
    roi_radius : float, default=2.0
        Radius (pixels) of the disk mask written for each unit (``ypix``, ``xpix``, ``lam``).
    overwrite : bool, default=False
        Replace an existing ``folder/plane0``, and remove the other suite2p plane folders
        (``plane1``, ... holding ``F.npy``) and ``combined/`` in ``folder``, which
        :func:`read_suite2p` would otherwise read back merged with the new plane.

    Returns
    -------
    pathlib.Path
        The plane folder written (``folder/plane0``).

    Notes
    -----
    Written: ``F.npy``, ``Fneu.npy``, ``spks.npy`` (units x frames, float32), ``iscell.npy``
    (``is_cell``/``cell_prob`` or all ones), ``stat.npy`` (``med`` (y, x) in pixels, ``ypix``,
    ``xpix``, ``lam``, ``npix`` and the shape statistics the suite2p GUI draws, plus the exact
    model position ``netphys_pos`` (x, y, z) and ``netphys_unit_id``), and ``ops.npy`` (``fs``,
    ``nframes``, ``Ly``, ``Lx``, ``tau``, mean/max images). Without ``F``/``spks`` in the input,
    ``activity`` is written as both ``F.npy`` and ``spks.npy`` and ``Fneu.npy`` is zeros. Units
    without positions are laid out on a square grid. Files are written to a temporary folder and
    moved into place, so a failure leaves nothing half-written.

    Examples
    --------
    >>> import numpy as np, tempfile, xarray as xr
    >>> act = xr.DataArray(np.ones((20, 3), np.float32), dims=("time", "unit"),
    ...                    attrs={"frame_rate": 30.0})
    >>> plane = write_suite2p(act, tempfile.mkdtemp() + "/out")
    >>> sorted(p.name for p in plane.iterdir())[:3]
    ['F.npy', 'Fneu.npy', 'iscell.npy']
    """
    func = "write_suite2p"
    ds = as_recording_dataset(recording, func=func)
    fs = recording_frame_rate(ds, frame_rate, func=func)
    out = Path(folder) / "plane0"
    stale = _stale_planes(Path(folder))
    if ((out.exists() and any(out.iterdir())) or stale) and not overwrite:
        raise FileExistsError(
            f"{func}(): {out if out.exists() else stale[0]} already exists and is not empty. "
            "Pass `overwrite=True` to replace it (other plane folders there are removed too), "
            "or choose another `folder`."
        )
    act = np.asarray(ds["activity"].values, dtype=np.float32)
    n_frames, n_units = act.shape
    traces = {
        "F": ds["F"].values if "F" in ds else act,
        "neuropil": ds["neuropil"].values if "neuropil" in ds else np.zeros_like(act),
        "spks": ds["spks"].values if "spks" in ds else act,
    }

    pos_x, pos_y, pos_z, unit_id, is_cell, prob = _unit_columns(ds, n_units)
    margin = int(np.ceil(roi_radius)) + 2
    px, py, scale = _pixel_layout(pos_x, pos_y, pixels_per_unit=pixels_per_unit, margin=margin)
    ly = int(np.ceil(py.max())) + margin + 1 if n_units else 2 * margin
    lx = int(np.ceil(px.max())) + margin + 1 if n_units else 2 * margin
    stat = _roi_stats(act, px, py, roi_radius, np.stack([pos_x, pos_y, pos_z], axis=1), unit_id)
    ops = _ops(fs=fs, n_frames=n_frames, ly=ly, lx=lx, tau=tau, out=out)
    ops["netphys"] = {
        "pixels_per_unit": scale,
        "x_min": float(pos_x.min()) if n_units else 0.0,
        "y_min": float(pos_y.min()) if n_units else 0.0,
        "margin": margin,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".plane0-", dir=out.parent))
    try:
        for name, fname in _TRACE_FILES.items():
            np.save(tmp / fname, np.ascontiguousarray(np.asarray(traces[name], np.float32).T))
        np.save(tmp / "iscell.npy", np.stack([is_cell, prob], axis=1))
        np.save(tmp / "stat.npy", stat, allow_pickle=True)
        np.save(tmp / "ops.npy", np.array(ops, dtype=object), allow_pickle=True)
        if out.exists():
            shutil.rmtree(out)
        for old in _stale_planes(Path(folder)):
            shutil.rmtree(old)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _skew(x: np.ndarray) -> float:
    sd = float(np.std(x))
    return float(np.mean((x - x.mean()) ** 3) / sd**3) if sd > 0 else 0.0


def _unit_columns(ds: xr.Dataset, n_units: int) -> tuple[np.ndarray, ...]:
    """pos_x, pos_y, pos_z, unit_id, is_cell, cell_prob from coords (grid/defaults without)."""

    def unit_coord(name: str, default: np.ndarray) -> np.ndarray:
        if name in ds.coords and ds[name].dims == ("unit",):
            return np.asarray(ds[name].values)
        return default

    side = int(np.ceil(np.sqrt(n_units))) if n_units else 1
    grid = np.arange(n_units)
    pos_x = unit_coord("pos_x", (grid % side).astype(np.float64)).astype(np.float64)
    pos_y = unit_coord("pos_y", (grid // side).astype(np.float64)).astype(np.float64)
    pos_z = unit_coord("pos_z", np.zeros(n_units)).astype(np.float64)
    bad = ~(np.isfinite(pos_x) & np.isfinite(pos_y))
    pos_x[bad], pos_y[bad] = (grid % side)[bad], (grid // side)[bad]
    unit_id = unit_coord("unit_id", grid).astype(np.int64)
    is_cell = unit_coord("is_cell", np.ones(n_units, bool)).astype(np.float64)
    prob = unit_coord("cell_prob", np.ones(n_units)).astype(np.float64)
    prob = np.where(np.isfinite(prob), prob, is_cell)
    return pos_x, pos_y, pos_z, unit_id, is_cell, prob


def _stale_planes(folder: Path) -> list[Path]:
    """Suite2p folders in ``folder`` other than ``plane0`` that read_suite2p would merge."""
    if not folder.is_dir():
        return []
    found = []
    for child in sorted(folder.iterdir()):
        is_plane = re.fullmatch(r"plane(\d+)", child.name) and child.name != "plane0"
        suite2p = (is_plane and (child / "F.npy").is_file()) or child.name == "combined"
        if suite2p and child.is_dir() and not child.is_symlink():
            found.append(child)
    return found


def _roi_stats(
    act: np.ndarray,
    px: np.ndarray,
    py: np.ndarray,
    roi_radius: float,
    pos: np.ndarray,
    unit_id: np.ndarray,
) -> np.ndarray:
    """suite2p ``stat``: a disk mask per unit plus the shape statistics the GUI draws."""
    n_units = act.shape[1]
    dy, dx = _disk(roi_radius)
    weights = np.exp(-(dy**2 + dx**2) / (2.0 * max(roi_radius, 0.5) ** 2)).astype(np.float32)
    pos_x, pos_y, pos_z = pos[:, 0], pos[:, 1], pos[:, 2]
    stat = np.empty(n_units, dtype=object)
    for i in range(n_units):
        cy, cx = round(py[i]), round(px[i])
        ypix = (cy + dy).astype(np.int64)
        xpix = (cx + dx).astype(np.int64)
        stat[i] = {
            "ypix": ypix,
            "xpix": xpix,
            "lam": weights / weights.sum(),
            "med": [float(py[i]), float(px[i])],
            "npix": len(ypix),
            "npix_soma": len(ypix),
            "soma_crop": np.ones(len(ypix), bool),
            "overlap": np.zeros(len(ypix), bool),
            "radius": float(roi_radius),
            "aspect_ratio": 1.0,
            "compact": 1.0,
            "solidity": 1.0,
            "footprint": 1.0,
            "npix_norm": 1.0,
            "npix_norm_no_crop": 1.0,
            "skew": float(_skew(act[:, i])),
            "std": float(np.std(act[:, i])),
            "iplane": 0,
            "netphys_pos": [float(pos_x[i]), float(pos_y[i]), float(pos_z[i])],
            "netphys_unit_id": int(unit_id[i]),
        }
    return stat


def _ops(*, fs: float, n_frames: int, ly: int, lx: int, tau: float, out: Path) -> dict[str, Any]:
    """suite2p ``ops`` of a one-plane, one-channel recording with blank images."""
    mean_img = np.zeros((ly, lx), np.float32)
    ops = {
        "fs": float(fs),
        "nframes": int(n_frames),
        "Ly": ly,
        "Lx": lx,
        "nplanes": 1,
        "nchannels": 1,
        "functional_chan": 1,
        "tau": float(tau),
        "neucoeff": 0.7,
        "meanImg": mean_img,
        "meanImgE": mean_img.copy(),
        "max_proj": mean_img.copy(),
        "Vcorr": mean_img.copy(),
        "refImg": mean_img.copy(),
        "xrange": [0, lx],
        "yrange": [0, ly],
        "save_path": str(out),
        "suite2p_version": "netphys-export",
    }
    return ops


def to_suite2p(recording: Any, folder: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Deprecated alias of :func:`write_suite2p` (removed in the next release).

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
