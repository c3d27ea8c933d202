"""Read NWB 2 files (ophys ROI series or units tables) with h5py; write NWB ophys with pynwb.

Reading needs only h5py. Writing uses pynwb (``pip install netphys[nwb]``), which also builds the
cached specification a valid NWB file carries.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from netphys.errors import MissingDependencyError, RecordingFormatError
from netphys.io._common import (
    as_recording_dataset,
    bin_spike_times,
    build_dataset,
    choose_activity,
    frame_rate_from_times,
    recording_frame_rate,
)

__all__ = ["read_nwb", "to_nwb"]

_PREFERENCE = ("spks", "dff", "F", "neuropil")
# TimeSeries types that are not behaviour (movies, ROI traces, raw voltage)
_NOT_BEHAVIOUR = {
    "TwoPhotonSeries",
    "OnePhotonSeries",
    "ImageSeries",
    "ImageMaskSeries",
    "OpticalSeries",
    "RoiResponseSeries",
    "ElectricalSeries",
    "SpikeEventSeries",
    "IndexSeries",
}
_MAX_BEHAVIOUR_COLUMNS = 16


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _ntype(obj: Any) -> str:
    return _text(obj.attrs.get("neurodata_type", ""))


def _series_time(group: h5py.Group, n: int) -> np.ndarray:
    if "timestamps" in group:
        ts = group["timestamps"]
        t = np.asarray(ts[:n], dtype=np.float64)
        return t
    if "starting_time" in group:
        st = group["starting_time"]
        rate = float(st.attrs["rate"])
        return float(st[()]) + np.arange(n) / rate
    raise RecordingFormatError(
        f"read_nwb(): series {group.name} has neither 'timestamps' nor 'starting_time' + rate."
    )


def _scaled(ds: h5py.Dataset) -> np.ndarray:
    data = np.asarray(ds[()])
    conv = float(ds.attrs.get("conversion", 1.0))
    off = float(ds.attrs.get("offset", 0.0))
    if conv != 1.0 or off != 0.0:
        data = data.astype(np.float64) * conv + off
    return data


def _kind(path: str, parent_type: str) -> str:
    low = path.lower()
    if "neuropil" in low:
        return "neuropil"
    if "deconv" in low or "spks" in low or "event" in low or "spike" in low:
        return "spks"
    if parent_type == "DfOverF" or "dff" in low or "dfoverf" in low:
        return "dff"
    return "F"


def _ragged(table: h5py.Group, name: str) -> list[np.ndarray]:
    data = table[name][()]
    ends = np.asarray(table[f"{name}_index"][()], dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    return [data[a:b] for a, b in zip(starts, ends, strict=True)]


def _mask_positions(table: h5py.Group, n: int, swap_xy: bool) -> np.ndarray:
    """Return (n, 3) positions (x = image column, y = row, z) from the table's masks."""
    pos = np.full((n, 3), np.nan)
    for mask in ("voxel_mask", "pixel_mask"):
        if mask in table and f"{mask}_index" in table:
            for i, m in enumerate(_ragged(table, mask)[:n]):
                if len(m) == 0:
                    continue
                fields = m.dtype.names or ()
                w = np.asarray(m["weight"], dtype=np.float64) if "weight" in fields else None
                if w is not None and not np.any(w > 0):
                    continue  # a mask without positive weight has no location
                pos[i, 0] = np.average(m["x"], weights=w)
                pos[i, 1] = np.average(m["y"], weights=w)
                if "z" in fields:
                    pos[i, 2] = np.average(m["z"], weights=w)
            break
    else:
        if "image_mask" in table:
            img = table["image_mask"]
            for i in range(min(n, img.shape[0])):
                m = np.asarray(img[i], dtype=np.float64)
                tot = m.sum()
                if tot <= 0:
                    continue
                # NWB image_mask is (num_x, num_y[, num_z]): axis 0 is x
                grids = np.indices(m.shape)
                pos[i, : m.ndim] = [float((g * m).sum() / tot) for g in grids]
    if swap_xy:
        pos[:, [0, 1]] = pos[:, [1, 0]]
    return pos


def _table_columns(table: h5py.Group, n: int, skip: set[str]) -> dict[str, np.ndarray]:
    """Plain 1-D columns of a DynamicTable (no ragged, no masks) as per-row arrays."""
    out: dict[str, np.ndarray] = {}
    names = [_text(c) for c in table.attrs.get("colnames", [])]
    for name in names:
        if name in skip or f"{name}_index" in table or name not in table:
            continue
        ds = table[name]
        if not isinstance(ds, h5py.Dataset) or ds.shape != (n,):
            continue
        vals = ds[()]
        if vals.dtype.kind in "OSU":
            vals = np.array([_text(v) for v in vals])
        elif vals.dtype.kind not in "biuf":
            continue
        out[name] = vals
    return out


def _intervals(f: h5py.File) -> dict[str, xr.Variable]:
    rows: list[dict[str, Any]] = []
    extra_names: list[str] = []
    if "intervals" not in f:
        return {}
    for tname in sorted(f["intervals"]):
        table = f["intervals"][tname]
        if not isinstance(table, h5py.Group) or "start_time" not in table:
            continue
        start = np.asarray(table["start_time"][()], dtype=np.float64)
        stop = (
            np.asarray(table["stop_time"][()], dtype=np.float64)
            if "stop_time" in table
            else start.copy()
        )
        n = len(start)
        tags = (
            [",".join(_text(t) for t in tg) for tg in _ragged(table, "tags")]
            if "tags" in table and "tags_index" in table
            else [""] * n
        )
        cols = _table_columns(table, n, {"start_time", "stop_time", "tags", "timeseries"})
        for c in cols:
            if c not in extra_names:
                extra_names.append(c)
        for i in range(n):
            row = {"table": tname, "start": start[i], "stop": stop[i], "tags": tags[i]}
            row.update({c: v[i] for c, v in cols.items()})
            rows.append(row)
    if not rows:
        return {}
    out = {
        "interval_start": xr.Variable(
            "interval", np.array([r["start"] for r in rows]), attrs={"units": "s"}
        ),
        "interval_stop": xr.Variable(
            "interval", np.array([r["stop"] for r in rows]), attrs={"units": "s"}
        ),
        "interval_table": xr.Variable("interval", np.array([r["table"] for r in rows])),
        "interval_tags": xr.Variable("interval", np.array([r["tags"] for r in rows])),
    }
    for c in extra_names:
        vals = [r.get(c) for r in rows]
        if all(isinstance(v, (str, np.str_)) or v is None for v in vals):
            arr = np.array(["" if v is None else str(v) for v in vals])
        else:
            arr = np.array([np.nan if v is None else float(v) for v in vals])
        out[f"interval_{c}"] = xr.Variable("interval", arr)
    return out


def _behaviour(f: h5py.File, frame_time: np.ndarray) -> tuple[np.ndarray, list[str]] | None:
    """Regularly sampled TimeSeries under /acquisition and /processing, nearest-sampled."""
    found: list[tuple[str, h5py.Group]] = []

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Group) or "data" not in obj:
            return
        if "timestamps" not in obj and "starting_time" not in obj:
            return
        if _ntype(obj) in _NOT_BEHAVIOUR or "/ophys/" in obj.name or "/ecephys/" in obj.name:
            return
        found.append((obj.name, obj))

    for root in ("acquisition", "processing"):
        if root in f:
            f[root].visititems(visit)
    columns: list[np.ndarray] = []
    names: list[str] = []
    for path, grp in sorted(found):
        data = grp["data"]
        if data.ndim not in (1, 2) or data.shape[0] < 2:
            continue
        if data.ndim == 2 and data.shape[1] > _MAX_BEHAVIOUR_COLUMNS:
            continue
        t = _series_time(grp, data.shape[0])
        dt = np.diff(t)
        if len(dt) == 0 or np.median(dt) <= 0 or np.percentile(dt, 95) > 2 * np.median(dt):
            continue  # irregular: event times, not a sampled variable
        vals = _scaled(data).astype(np.float64).reshape(data.shape[0], -1)
        idx = np.clip(np.searchsorted(t, frame_time), 1, len(t) - 1)
        left_closer = (frame_time - t[idx - 1]) < (t[idx] - frame_time)
        nearest = np.where(left_closer, idx - 1, idx)
        valid = np.abs(t[nearest] - frame_time) <= np.median(dt)
        valid &= (frame_time >= t[0] - np.median(dt)) & (frame_time <= t[-1] + np.median(dt))
        sampled = np.where(valid[:, None], vals[nearest], np.nan)
        label = path.strip("/").removeprefix("acquisition/").removeprefix("processing/")
        for j in range(sampled.shape[1]):
            names.append(label if sampled.shape[1] == 1 else f"{label}[{j}]")
            columns.append(sampled[:, j])
    if not columns:
        return None
    return np.stack(columns, axis=1), names


def _roi_series(f: h5py.File) -> list[tuple[str, str, h5py.Group]]:
    found: list[tuple[str, str, h5py.Group]] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and _ntype(obj) == "RoiResponseSeries" and "data" in obj:
            found.append((obj.name, _ntype(obj.parent), obj))

    f.visititems(visit)
    return sorted(found, key=lambda x: x[0])


def _plane_tables(f: h5py.File) -> list[h5py.Group]:
    found: list[h5py.Group] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and _ntype(obj) == "PlaneSegmentation":
            found.append(obj)

    f.visititems(visit)
    return sorted(found, key=lambda g: g.name)


def _read_ophys(
    f: h5py.File, path: str, *, activity: str | None, swap_xy: bool | str
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], dict[str, Any], str]:
    func = "read_nwb"
    series = _roi_series(f)
    tables = _plane_tables(f)
    # group series by their ROI table: via `rois.table` reference, else by ROI count
    by_table: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    table_of: dict[str, h5py.Group] = {t.name: t for t in tables}
    for spath, parent_type, grp in series:
        table = None
        rois = None
        if "rois" in grp:
            rois = np.asarray(grp["rois"][()], dtype=np.int64)
            ref = grp["rois"].attrs.get("table")
            if ref is not None:
                try:
                    table = f[ref]
                except (ValueError, KeyError, TypeError):
                    table = None
        data = grp["data"]
        if table is None:
            for t in tables:
                n_t = t["id"].shape[0]
                if n_t in data.shape:
                    table = t
                    break
        if table is None:
            continue
        table_of[table.name] = table
        n_table = table["id"].shape[0]
        if rois is None:
            rois = np.arange(n_table)
        n_rois = len(rois)
        n_t = None
        if "timestamps" in grp:
            n_t = grp["timestamps"].shape[0]
        arr = _scaled(data)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.shape[1] != n_rois and arr.shape[0] == n_rois:
            arr = arr.T  # stored ROI x time (pynapple's suite2p converter does this)
        elif arr.shape[0] == arr.shape[1] == n_rois and n_t is not None and n_t != n_rois:
            arr = arr.T
        if arr.shape[1] != n_rois:
            raise RecordingFormatError(
                f"{func}(): {path}: series {spath} has data shape {data.shape}, which does not "
                f"match its {n_rois} ROIs."
            )
        kind = _kind(spath, parent_type)
        slot = by_table.setdefault(table.name, {})
        if kind not in slot:  # first series of each kind per table
            rate = (
                float(grp["starting_time"].attrs["rate"])
                if "starting_time" in grp and "timestamps" not in grp
                else None
            )
            slot[kind] = (arr, _series_time(grp, arr.shape[0]), rois, rate)  # type: ignore[assignment]
    if not by_table:
        return {}, np.empty(0), {}, {}, ""
    kinds = sorted(set.intersection(*(set(v) for v in by_table.values())))
    chosen = choose_activity(kinds, activity, preference=_PREFERENCE, func=func, source=path)
    n_frames = min(v[k][0].shape[0] for v in by_table.values() for k in kinds)
    first = next(iter(by_table.values()))
    frame_time = first[chosen][1][:n_frames]
    traces = {
        k: np.concatenate([v[k][0][:n_frames] for v in by_table.values()], axis=1) for k in kinds
    }
    coords: dict[str, list[np.ndarray]] = {}
    swapped = []
    for iplane, (tname, slot) in enumerate(by_table.items()):
        table = table_of[tname]
        rois = slot[chosen][2]  # type: ignore[misc]
        n_table = table["id"].shape[0]
        desc = _text(table.attrs.get("description", ""))
        swap = ("suite2p" in desc.lower()) if swap_xy == "auto" else bool(swap_xy)
        swapped.append(swap)
        pos = _mask_positions(table, n_table, swap)
        cols = _table_columns(table, n_table, {"pixel_mask", "voxel_mask", "image_mask", "iscell"})
        if "pos_x" in cols and "pos_y" in cols:  # exact positions written by to_nwb
            pos[:, 0], pos[:, 1] = cols.pop("pos_x"), cols.pop("pos_y")
            if "pos_z" in cols:
                pos[:, 2] = cols.pop("pos_z")
        elif np.all(np.isnan(pos[:, :2])) and "x" in cols and "y" in cols:
            # no masks: Allen-style tables give the ROI box corner (x, y) and its size
            pos[:, 0] = cols["x"] + cols.get("width", np.zeros(n_table)) / 2.0
            pos[:, 1] = cols["y"] + cols.get("height", np.zeros(n_table)) / 2.0
        if np.all(np.isnan(pos[:, 2])):
            pos[:, 2] = iplane
        ids = np.asarray(table["id"][()], dtype=np.int64)
        if "unit_id" in cols:
            ids = np.asarray(cols.pop("unit_id"), dtype=np.int64)
        per: dict[str, np.ndarray] = {
            "unit_id": ids[rois],
            "plane": np.full(len(rois), iplane, np.int64),
            "pos_x": pos[rois, 0],
            "pos_y": pos[rois, 1],
            "pos_z": pos[rois, 2],
        }
        if "iscell" in table:
            ic = np.asarray(table["iscell"][()], dtype=np.float64).reshape(n_table, -1)
            per["is_cell"] = ic[rois, 0] > 0.5
            per["cell_prob"] = ic[rois, 1] if ic.shape[1] > 1 else ic[rois, 0]
        for c, v in cols.items():
            per[c] = v[rois]
        for c, v in per.items():
            coords.setdefault(c, []).append(v)
    unit_coords = {c: np.concatenate(v) for c, v in coords.items() if len(v) == len(by_table)}
    extra = {"n_planes": len(by_table), "xy_swapped": bool(any(swapped)), "modality": "ophys"}
    if first[chosen][3] is not None:  # type: ignore[misc]
        extra["frame_rate"] = first[chosen][3]  # type: ignore[misc]
    return traces, frame_time, unit_coords, extra, chosen


def _read_units(
    f: h5py.File, path: str, *, bin_width: float, t_start: float | None, t_stop: float | None
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    units = f["units"]
    spikes = _ragged(units, "spike_times")
    n = len(spikes)
    times = np.concatenate(spikes) if n else np.empty(0)
    index = np.repeat(np.arange(n), [len(s) for s in spikes])
    counts, centres = bin_spike_times(
        times, index, n, bin_width=bin_width, t_start=t_start, t_stop=t_stop
    )
    coords: dict[str, np.ndarray] = {"unit_id": np.asarray(units["id"][()], dtype=np.int64)}
    coords.update(
        _table_columns(
            units,
            n,
            {
                "spike_times",
                "electrode_group",
                "electrodes",
                "waveform_mean",
                "waveform_sd",
                "obs_intervals",
            },
        )
    )
    coords.setdefault("is_cell", np.ones(n, bool))
    for c in ("pos_x", "pos_y", "pos_z"):
        coords.setdefault(c, np.full(n, np.nan))
    extra = {"bin_width": float(bin_width), "modality": "units", "frame_rate": 1.0 / bin_width}
    return {"counts": counts}, centres, coords, extra


def read_nwb(
    path: str | os.PathLike[str],
    *,
    activity: str | None = None,
    modality: str = "auto",
    bin_width: float = 0.05,
    t_start: float | None = None,
    t_stop: float | None = None,
    swap_xy: bool | str = "auto",
) -> xr.Dataset:
    """Read an NWB 2 file (HDF5) into the (time, unit) reader schema, with h5py only.

    Parameters
    ----------
    path : str or path-like
        The ``.nwb`` file.
    activity : str, optional
        Which ROI series becomes ``activity``: ``'spks'`` (series named Deconvolved/spks/
        events), ``'dff'`` (DfOverF), ``'F'`` (Fluorescence) or ``'neuropil'``. Default: the
        first present in that order. For units tables ``activity`` is ``'counts'``.
    modality : {'auto', 'ophys', 'units'}, default='auto'
        ``'auto'`` reads ROI response series when the file has any, else the units table.
    bin_width : float, default=0.05
        Bin width (s) for spike times of a units table.
    t_start, t_stop : float, optional
        Time span binned (s); default from ``min(0, first spike)`` to the last spike.
    swap_xy : bool or 'auto', default='auto'
        suite2p's NWB export writes image rows (``ypix``) into the mask's ``x`` field and columns
        into ``y``. ``'auto'`` swaps back when the PlaneSegmentation description mentions
        suite2p; True/False force it.

    Returns
    -------
    xarray.Dataset
        Dims ``(time, unit)``: ``activity`` plus ``F``, ``dff``, ``neuropil``, ``spks`` as found
        (ophys) or ``counts`` (units, spikes per bin); coords ``frame_time`` (series timestamps,
        or ``starting_time + arange(n) / rate``; bin centres for units), ``unit_id`` (table
        ``id``), ``plane``, ``pos_x``/``pos_y``/``pos_z`` (weighted centroid of pixel/voxel masks
        or image masks, in pixels; else the centre of Allen-style ``x``/``y``/``width``/
        ``height`` box columns), ``is_cell``/``cell_prob`` (``iscell`` column) and every plain
        1-D column of the ROI or units table (e.g. ``location``); ``behaviour`` (time,
        behaviour_var) for regularly sampled TimeSeries in /acquisition and /processing,
        nearest sample per frame (NaN outside their span); variables along ``interval`` for every
        table under /intervals (``interval_start``, ``interval_stop``, ``interval_table``,
        ``interval_tags``, other columns as ``interval_<name>``). Attrs ``frame_rate``,
        ``source``, ``format='nwb'``, ``modality``, ``nwb_version``.

    Raises
    ------
    RecordingFormatError
        If the file is not readable HDF5 (truncated, corrupted) or holds neither ROI response
        series nor a units table with spike times.

    Examples
    --------
    >>> import numpy as np, tempfile, xarray as xr
    >>> act = xr.DataArray(np.random.default_rng(0).random((30, 5)), dims=("time", "unit"),
    ...                    attrs={"frame_rate": 10.0})
    >>> path = to_nwb(act, tempfile.mkdtemp() + "/rec.nwb")
    >>> read_nwb(path).activity.shape
    (30, 5)
    """
    func = "read_nwb"
    name = os.fspath(path)
    if modality not in ("auto", "ophys", "units"):
        raise ValueError(
            f"{func}(): `modality` must be 'auto', 'ophys' or 'units'; got {modality!r}."
        )
    if not (isinstance(bin_width, (int, float)) and bin_width > 0):
        raise ValueError(f"{func}(): `bin_width` must be a positive number (s); got {bin_width!r}.")
    if not Path(name).is_file():
        raise FileNotFoundError(f"{func}(): `path` {name!r} is not a file.")
    try:
        f = h5py.File(name, "r")
    except OSError as exc:
        raise RecordingFormatError(
            f"{func}(): {name} is not a readable HDF5/NWB file ({exc}). It may be truncated or "
            "corrupted; copy it again from its source."
        ) from exc
    try:
        with f:
            return _read_open(
                f,
                name,
                activity=activity,
                modality=modality,
                bin_width=bin_width,
                t_start=t_start,
                t_stop=t_stop,
                swap_xy=swap_xy,
            )
    except RecordingFormatError:
        raise
    except ValueError as exc:
        if str(exc).startswith(f"{func}():"):  # our own message about an argument
            raise
        raise RecordingFormatError(
            f"{func}(): {name}: could not read the file ({type(exc).__name__}: {exc}). It may be "
            "truncated or corrupted."
        ) from exc
    except (OSError, KeyError, TypeError, RuntimeError, IndexError) as exc:
        raise RecordingFormatError(
            f"{func}(): {name}: could not read the file ({type(exc).__name__}: {exc}). It may be "
            "truncated or corrupted."
        ) from exc


def _read_open(
    f: h5py.File,
    name: str,
    *,
    activity: str | None,
    modality: str,
    bin_width: float,
    t_start: float | None,
    t_stop: float | None,
    swap_xy: bool | str,
) -> xr.Dataset:
    func = "read_nwb"
    traces: dict[str, np.ndarray] = {}
    extra: dict[str, Any] = {}
    if modality in ("auto", "ophys"):
        traces, frame_time, coords, extra, chosen = _read_ophys(
            f, name, activity=activity, swap_xy=swap_xy
        )
    has_units = "units" in f and "spike_times" in f["units"]
    if not traces and modality in ("auto", "units") and has_units:
        traces, frame_time, coords, extra = _read_units(
            f, name, bin_width=bin_width, t_start=t_start, t_stop=t_stop
        )
        chosen = choose_activity(
            list(traces), activity, preference=("counts",), func=func, source=name
        )
    if not traces:
        raise RecordingFormatError(
            f"{func}(): {name} has no neural data netphys can read: looked for RoiResponseSeries "
            "(processing/ophys/Fluorescence, DfOverF, ...) with a PlaneSegmentation ROI table"
            + (" and for a /units table with spike_times" if modality != "ophys" else "")
            + f" (modality={modality!r}). Found top-level groups {sorted(f.keys())}."
        )
    ds = build_dataset(
        traces,
        activity=chosen,
        frame_time=frame_time,
        unit_coords=coords,
        attrs={
            "frame_rate": frame_rate_from_times(frame_time),
            "source": name,
            "format": "nwb",
            "nwb_version": _text(f.attrs.get("nwb_version", "")),
            **extra,  # an exact frame_rate (series rate, 1 / bin_width) overrides the estimate
        },
    )
    for c, v in coords.items():
        if c not in ds.coords and np.shape(v) == (ds.sizes["unit"],):
            ds = ds.assign_coords({c: ("unit", v)})
    beh = _behaviour(f, np.asarray(frame_time))
    if beh is not None:
        ds["behaviour"] = xr.Variable(
            ("time", "behaviour_var"),
            beh[0],
            attrs={"long_name": "behaviour, nearest sample per frame"},
        )
        ds = ds.assign_coords(behaviour_var=("behaviour_var", beh[1]))
    for k, var in _intervals(f).items():
        if k in ("interval_table", "interval_tags"):
            ds = ds.assign_coords({k: var})
        else:
            ds[k] = var
    return ds


def to_nwb(
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
        As for :func:`netphys.io.to_suite2p`.
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
    ``pos_y``, ``pos_z`` (exact model coordinates) and ``iscell``. The per-frame table of a
    model recording (``stimulus``, ``label``, ``condition``, ``repeat``, ``session``, ``epoch``,
    ``step`` coords along time) becomes ``/intervals/presentations``, one row per frame from
    ``frame_time`` to the next frame, which :func:`read_nwb` returns along ``interval``. The
    file is written to a temporary name and renamed, so a failure leaves nothing half-written.

    Examples
    --------
    >>> import numpy as np, tempfile, xarray as xr
    >>> act = xr.DataArray(np.zeros((10, 2)), dims=("time", "unit"), attrs={"frame_rate": 5.0})
    >>> to_nwb(act, tempfile.mkdtemp() + "/x.nwb").suffix
    '.nwb'
    """
    func = "to_nwb"
    try:
        import pynwb
        from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel
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

    def unit_coord(name: str, default: np.ndarray) -> np.ndarray:
        if name in ds.coords and ds[name].dims == ("unit",):
            return np.asarray(ds[name].values)
        return default

    grid = np.arange(n_units)
    side = int(np.ceil(np.sqrt(max(n_units, 1))))
    pos_x = unit_coord("pos_x", (grid % side).astype(float)).astype(np.float64)
    pos_y = unit_coord("pos_y", (grid // side).astype(float)).astype(np.float64)
    pos_z = unit_coord("pos_z", np.zeros(n_units)).astype(np.float64)
    unit_id = unit_coord("unit_id", grid).astype(np.int64)
    is_cell = unit_coord("is_cell", np.ones(n_units, bool)).astype(np.float64)
    prob = unit_coord("cell_prob", is_cell).astype(np.float64)
    prob = np.where(np.isfinite(prob), prob, is_cell)

    nwb = pynwb.NWBFile(
        session_description=session_description,
        identifier=str(uuid.uuid4()),
        session_start_time=datetime.datetime.now(datetime.timezone.utc),
        source_script="netphys.io.to_nwb",
        source_script_file_name="netphys/io/nwb.py",
    )
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
    fx = np.where(np.isfinite(pos_x), pos_x, 0.0)
    fy = np.where(np.isfinite(pos_y), pos_y, 0.0)
    px = np.round(fx - min(fx.min(initial=0.0), 0.0)).astype(np.int64)
    py = np.round(fy - min(fy.min(initial=0.0), 0.0)).astype(np.int64)
    for i in range(n_units):
        ps.add_roi(
            pixel_mask=[(int(px[i]), int(py[i]), 1.0)],
            unit_id=int(unit_id[i]),
            pos_x=float(pos_x[i]),
            pos_y=float(pos_y[i]),
            pos_z=float(pos_z[i]),
            iscell=[float(is_cell[i]), float(prob[i])],
        )
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
