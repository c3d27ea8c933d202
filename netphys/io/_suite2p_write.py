"""Write a recording as a suite2p output folder (``folder/plane0``) that suite2p's GUI opens."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from netphys.io._common import as_recording_dataset, recording_frame_rate

__all__ = ["write_suite2p"]

_TRACE_FILES = {"F": "F.npy", "neuropil": "Fneu.npy", "spks": "spks.npy"}


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
