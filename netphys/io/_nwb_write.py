"""Write NWB 2 ophys files with pynwb (``pip install netphys[nwb]``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from netphys.errors import MissingDependencyError
from netphys.io._common import as_recording_dataset, recording_frame_rate
from netphys.io._nwb_model import add_behaviour, add_layer_column, tree_behaviour

__all__ = ["write_nwb"]


def write_nwb(
    recording: Any,
    path: str | os.PathLike[str],
    *,
    frame_rate: float | None = None,
    session_description: str = "netphys model recording",
    indicator: str = "none (artificial network)",
    overwrite: bool = False,
) -> Path:
    """Write a recording as an NWB 2 ophys file (ImagingPlane, PlaneSegmentation, ROI series).

    Parameters
    ----------
    recording : xarray.DataArray, xarray.Dataset or xarray.DataTree
        As for :func:`netphys.io.write_suite2p`.
    path : str or path-like
        Output ``.nwb`` file.
    frame_rate : float, optional
        Frames per second; default from the ``frame_rate`` attr or ``frame_time``.
    session_description : str, default="netphys model recording"
        NWB ``session_description``.
    indicator : str, default="none (artificial network)"
        ImagingPlane ``indicator``.
    overwrite : bool, default=False
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    MissingDependencyError
        If pynwb is not installed (``pip install netphys[nwb]``).

    Notes
    -----
    ``processing/ophys/Fluorescence/Fluorescence``, ``Neuropil/Neuropil`` and
    ``Deconvolved/Deconvolved`` are RoiResponseSeries (time x ROI) with ``rate`` (and
    ``starting_time``) when frames are evenly spaced, else ``timestamps``. Without ``F``/``spks``
    in the input, ``activity`` is written as both. The PlaneSegmentation has a one-pixel
    ``pixel_mask`` per unit at its rounded position with the standard orientation (``x`` =
    image column, ``y`` = row, unlike suite2p's export), plus columns ``unit_id``, ``pos_x``,
    ``pos_y``, ``pos_z`` (exact model coordinates), ``iscell`` and, for a model recording,
    ``layer`` (the recorded module of each unit). A recording tree's ``behaviour`` (the model's
    ``logits``, ``prediction``, ``confidence``, ``loss``) becomes TimeSeries in
    ``processing/behavior/BehavioralTimeSeries``. The per-frame table of a
    model recording (``stimulus``, ``label``, ``condition``, ``repeat``, ``session``, ``epoch``,
    ``step`` coords along time) becomes ``/intervals/presentations``, one row per frame from
    ``frame_time`` to the next frame, which :func:`read_nwb` returns along ``interval``. The
    file is written to a temporary name and renamed, so a failure leaves nothing half-written.

    Examples
    --------
    >>> import numpy as np, tempfile, xarray as xr
    >>> act = xr.DataArray(np.zeros((10, 2)), dims=("time", "unit"), attrs={"frame_rate": 5.0})
    >>> write_nwb(act, tempfile.mkdtemp() + "/x.nwb").suffix
    '.nwb'
    """
    func = "write_nwb"
    try:
        import pynwb
        from pynwb.ophys import Fluorescence
    except ImportError as exc:  # pragma: no cover - pynwb is in the test extra
        raise MissingDependencyError(
            f"{func}() needs pynwb to write NWB files: `pip install netphys[nwb]`."
        ) from exc
    import datetime
    import uuid

    ds = as_recording_dataset(recording, func=func)
    fs = recording_frame_rate(ds, frame_rate, func=func)
    out = Path(path)
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"{func}(): {out} already exists. Pass `overwrite=True` to replace it, or choose "
            "another `path`."
        )
    act = np.asarray(ds["activity"].values, dtype=np.float32)
    n_frames, n_units = act.shape
    if "frame_time" in ds.coords:
        frame_time = np.asarray(ds["frame_time"].values, dtype=np.float64)
    else:
        frame_time = np.arange(n_frames) / fs
    regular = n_frames < 2 or np.allclose(np.diff(frame_time), 1.0 / fs, rtol=1e-6, atol=1e-9)

    nwb = pynwb.NWBFile(
        session_description=session_description,
        identifier=str(uuid.uuid4()),
        session_start_time=datetime.datetime.now(datetime.timezone.utc),
        source_script="netphys.io.write_nwb",
        source_script_file_name="netphys/io/_nwb_write.py",
    )
    ophys, ps = _imaging_plane(nwb, fs=fs, indicator=indicator)
    _add_rois(ps, _unit_columns(ds, n_units))
    add_layer_column(ps, ds)
    region = ps.create_roi_table_region(region=list(range(n_units)), description="all units")
    traces = {
        "Fluorescence": ds["F"].values if "F" in ds else act,
        "Neuropil": ds["neuropil"].values if "neuropil" in ds else np.zeros_like(act),
        "Deconvolved": ds["spks"].values if "spks" in ds else act,
    }
    for name, data in traces.items():
        timing: dict[str, Any] = (
            {"rate": float(fs), "starting_time": float(frame_time[0]) if n_frames else 0.0}
            if regular
            else {"timestamps": frame_time}
        )
        container = Fluorescence(name=name)
        ophys.add(container)  # attach first, so the ROI region shares an ancestor with its table
        container.create_roi_response_series(
            name=name, data=np.asarray(data, np.float32), rois=region, unit="a.u.", **timing
        )
    _add_presentations(nwb, ds, frame_time, fs)
    add_behaviour(nwb, tree_behaviour(recording), timing)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{out.stem}-", suffix=".nwb", dir=out.parent)
    os.close(fd)
    try:
        with pynwb.NWBHDF5IO(tmp, "w") as io:
            io.write(nwb)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return out


_FRAME_COLUMNS = ("session", "stimulus", "label", "condition", "repeat", "epoch", "step")


def _add_presentations(nwb: Any, ds: xr.Dataset, frame_time: np.ndarray, fs: float) -> None:
    """Write the per-frame table (stimulus, label, ...) as TimeIntervals 'presentations'."""
    present = [c for c in _FRAME_COLUMNS if c in ds.coords and ds[c].dims == ("time",)]
    if not present or len(frame_time) == 0:
        return
    from hdmf.common import VectorData
    from pynwb.epoch import TimeIntervals

    stop = np.append(frame_time[1:], frame_time[-1] + 1.0 / fs)
    columns = [
        VectorData(name="start_time", description="frame start (s)", data=frame_time),
        VectorData(name="stop_time", description="next frame start (s)", data=stop),
    ]
    for c in present:
        values = np.asarray(ds[c].values)
        if values.dtype.kind in "OUS":
            values = np.array([str(v) for v in values], dtype=object)
        columns.append(VectorData(name=c, description=f"per-frame {c}", data=values))
    nwb.add_time_intervals(
        TimeIntervals(
            name="presentations", description="one row per recorded frame", columns=columns
        )
    )


def _unit_columns(ds: xr.Dataset, n_units: int) -> dict[str, np.ndarray]:
    """Per-unit columns of the ROI table, from coords or defaults (a square grid, all cells)."""

    def unit_coord(name: str, default: np.ndarray) -> np.ndarray:
        if name in ds.coords and ds[name].dims == ("unit",):
            return np.asarray(ds[name].values)
        return default

    grid = np.arange(n_units)
    side = int(np.ceil(np.sqrt(max(n_units, 1))))
    is_cell = unit_coord("is_cell", np.ones(n_units, bool)).astype(np.float64)
    prob = unit_coord("cell_prob", is_cell).astype(np.float64)
    return {
        "pos_x": unit_coord("pos_x", (grid % side).astype(float)).astype(np.float64),
        "pos_y": unit_coord("pos_y", (grid // side).astype(float)).astype(np.float64),
        "pos_z": unit_coord("pos_z", np.zeros(n_units)).astype(np.float64),
        "unit_id": unit_coord("unit_id", grid).astype(np.int64),
        "is_cell": is_cell,
        "prob": np.where(np.isfinite(prob), prob, is_cell),
    }


def _imaging_plane(nwb: Any, *, fs: float, indicator: str) -> tuple[Any, Any]:
    """Add device, imaging plane, ophys module and an empty PlaneSegmentation to ``nwb``."""
    from pynwb.ophys import ImageSegmentation, OpticalChannel

    device = nwb.create_device(name="netphys", description="forward hooks on an artificial network")
    channel = OpticalChannel(name="OpticalChannel", description="model units", emission_lambda=0.0)
    plane = nwb.create_imaging_plane(
        name="ImagingPlane",
        optical_channel=channel,
        imaging_rate=float(fs),
        description="recorded layers of an artificial network",
        device=device,
        excitation_lambda=0.0,
        indicator=indicator,
        location="artificial network",
    )
    ophys = nwb.create_processing_module(name="ophys", description="model unit activity")
    seg = ImageSegmentation()
    ophys.add(seg)
    ps = seg.create_plane_segmentation(
        name="PlaneSegmentation",
        description="netphys model units; pixel_mask x = image column, y = row",
        imaging_plane=plane,
    )
    for col, desc in (
        ("unit_id", "netphys unit id"),
        ("pos_x", "model x position"),
        ("pos_y", "model y position"),
        ("pos_z", "model z position (layer depth)"),
        ("iscell", "two columns: is cell, cell probability"),
    ):
        ps.add_column(name=col, description=desc)
    return ophys, ps


def _add_rois(ps: Any, cols: dict[str, np.ndarray]) -> None:
    """One ROI per unit: a one-pixel mask at its rounded position plus the exact columns."""
    pos_x, pos_y = cols["pos_x"], cols["pos_y"]
    fx = np.where(np.isfinite(pos_x), pos_x, 0.0)
    fy = np.where(np.isfinite(pos_y), pos_y, 0.0)
    px = np.round(fx - min(fx.min(initial=0.0), 0.0)).astype(np.int64)
    py = np.round(fy - min(fy.min(initial=0.0), 0.0)).astype(np.int64)
    for i in range(len(pos_x)):
        ps.add_roi(
            pixel_mask=[(int(px[i]), int(py[i]), 1.0)],
            unit_id=int(cols["unit_id"][i]),
            pos_x=float(pos_x[i]),
            pos_y=float(pos_y[i]),
            pos_z=float(cols["pos_z"][i]),
            iscell=[float(cols["is_cell"][i]), float(cols["prob"][i])],
        )
