"""NWB ophys (ROI response series + PlaneSegmentation) and units-table reading for read_nwb."""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from netphys.errors import RecordingFormatError
from netphys.io._common import bin_spike_times, choose_activity
from netphys.io._guard import ByteBudget
from netphys.io._hdf5_lazy import LazySpec
from netphys.io._nwb_read import (
    _PREFERENCE,
    mask_positions,
    ntype,
    ragged,
    read_array,
    scaled,
    series_kind,
    series_time,
    table_columns,
    text,
)

__all__ = ["read_ophys", "read_units"]

# (data (time, roi), NumPy or dask; frame times, roi indices into the table, exact rate or None)
_Series = tuple[Any, np.ndarray, np.ndarray, float | None]


def _find(f: h5py.File, neurodata_type: str) -> list[h5py.Group]:
    found: list[h5py.Group] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and ntype(obj) == neurodata_type:
            found.append(obj)

    f.visititems(visit)
    return sorted(found, key=lambda g: g.name)


def _series_table(
    f: h5py.File, grp: h5py.Group, tables: list[h5py.Group], budget: ByteBudget
) -> tuple[h5py.Group | None, np.ndarray | None]:
    """Return the ROI table of a series (``rois.table``, else by ROI count) and its rois."""
    table, rois = None, None
    if "rois" in grp:
        rois = np.asarray(read_array(grp["rois"], budget, "rois"), dtype=np.int64)
        ref = grp["rois"].attrs.get("table")
        if ref is not None:
            try:
                table = f[ref]
            except (ValueError, KeyError, TypeError):
                table = None
    if table is None:
        for t in tables:
            if t["id"].shape[0] in grp["data"].shape:
                table = t
                break
    return table, rois


def _series_array(
    grp: h5py.Group, n_rois: int, source: str, budget: ByteBudget, lazy: LazySpec | None
) -> Any:
    """Return the series data as (time, roi), transposing ROI x time storage.

    The orientation is decided from the shape alone, so a lazy read knows its frame axis.
    """
    data = grp["data"]
    shape = getattr(data, "shape", None)
    if shape is None or len(shape) not in (1, 2):
        raise RecordingFormatError(
            f"read_nwb(): {source}: series {grp.name} has {len(shape or ())}-D data {shape}; "
            "ROI series are (time, roi)."
        )
    n_t = grp["timestamps"].shape[0] if "timestamps" in grp else None
    rois_first = len(shape) == 2 and (
        (shape[1] != n_rois and shape[0] == n_rois)  # pynapple's suite2p converter
        or (shape[0] == shape[1] == n_rois and n_t is not None and n_t != n_rois)
    )
    arr = scaled(data, budget, "the ROI series", lazy=lazy, time_axis=1 if rois_first else 0)
    arr = arr[:, None] if arr.ndim == 1 else (arr.T if rois_first else arr)
    if arr.shape[1] != n_rois:
        raise RecordingFormatError(
            f"read_nwb(): {source}: series {grp.name} has data shape {data.shape}, which does "
            f"not match its {n_rois} ROIs."
        )
    return arr


def _concat_units(parts: list[Any]) -> Any:
    """Concatenate (time, roi) parts along ROIs, lazily when any is a dask array."""
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts, axis=1)
    import dask.array as dsa

    return dsa.concatenate([dsa.asarray(p) for p in parts], axis=1)


def _collect_series(
    f: h5py.File, source: str, budget: ByteBudget, lazy: LazySpec | None
) -> tuple[dict[str, dict[str, _Series]], dict[str, h5py.Group]]:
    """Group the ROI series by ROI table: ``{table: {kind: series}}``, first of each kind."""
    tables = _find(f, "PlaneSegmentation")
    by_table: dict[str, dict[str, _Series]] = {}
    table_of: dict[str, h5py.Group] = {t.name: t for t in tables}
    for grp in _find(f, "RoiResponseSeries"):
        if "data" not in grp:
            continue
        table, rois = _series_table(f, grp, tables, budget)
        if table is None:
            continue
        table_of[table.name] = table
        n_table = table["id"].shape[0]
        if rois is None:
            rois = np.arange(n_table)
        if rois.size and (rois.min() < 0 or rois.max() >= n_table):
            raise RecordingFormatError(
                f"read_nwb(): {source}: series {grp.name} names ROIs {rois.min()}..{rois.max()} "
                f"but its table {table.name} has {n_table} rows. The file is damaged."
            )
        kind = series_kind(grp.name, ntype(grp.parent))
        slot = by_table.setdefault(table.name, {})
        if kind in slot:
            continue
        arr = _series_array(grp, len(rois), source, budget, lazy)
        rate = (
            float(grp["starting_time"].attrs["rate"])
            if "starting_time" in grp and "timestamps" not in grp
            else None
        )
        slot[kind] = (arr, series_time(grp, arr.shape[0], budget), rois, rate)
    return by_table, table_of


def _plane_coords(
    table: h5py.Group, rois: np.ndarray, iplane: int, swap: bool, budget: ByteBudget
) -> dict[str, np.ndarray]:
    """Per-ROI coords (ids, positions, iscell, plain columns) of the rows ``rois`` of a table."""
    n_table = table["id"].shape[0]
    pos = mask_positions(table, n_table, swap, budget)
    cols = table_columns(
        table, n_table, {"pixel_mask", "voxel_mask", "image_mask", "iscell"}, budget
    )
    if "pos_x" in cols and "pos_y" in cols:  # exact positions written by write_nwb
        pos[:, 0], pos[:, 1] = cols.pop("pos_x"), cols.pop("pos_y")
        if "pos_z" in cols:
            pos[:, 2] = cols.pop("pos_z")
    elif np.all(np.isnan(pos[:, :2])) and "x" in cols and "y" in cols:
        # no masks: Allen-style tables give the ROI box corner (x, y) and its size
        pos[:, 0] = cols["x"] + cols.get("width", np.zeros(n_table)) / 2.0
        pos[:, 1] = cols["y"] + cols.get("height", np.zeros(n_table)) / 2.0
    if np.all(np.isnan(pos[:, 2])):
        pos[:, 2] = iplane
    ids = np.asarray(read_array(table["id"], budget, "id"), dtype=np.int64)
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
        ic = read_array(table["iscell"], budget, "iscell").astype(np.float64)
        ic = ic.reshape(n_table, -1)
        per["is_cell"] = ic[rois, 0] > 0.5
        per["cell_prob"] = ic[rois, 1] if ic.shape[1] > 1 else ic[rois, 0]
    for c, v in cols.items():
        per[c] = v[rois]
    return per


def read_ophys(
    f: h5py.File,
    path: str,
    *,
    activity: str | None,
    swap_xy: bool | str,
    budget: ByteBudget,
    lazy: LazySpec | None = None,
) -> tuple[dict[str, Any], np.ndarray, dict[str, np.ndarray], dict[str, Any], str]:
    """Traces, frame times, unit coords, attrs and chosen activity of the ROI series in ``f``.

    With ``lazy`` the traces are dask arrays over the file's chunks (see
    :mod:`netphys.io._hdf5_lazy`); the rest is read at once.
    """
    by_table, table_of = _collect_series(f, path, budget, lazy)
    if not by_table:
        return {}, np.empty(0), {}, {}, ""
    kinds = sorted(set.intersection(*(set(v) for v in by_table.values())))
    chosen = choose_activity(kinds, activity, preference=_PREFERENCE, func="read_nwb", source=path)
    n_frames = min(v[k][0].shape[0] for v in by_table.values() for k in kinds)
    first = next(iter(by_table.values()))
    frame_time = first[chosen][1][:n_frames]
    traces = {k: _concat_units([v[k][0][:n_frames] for v in by_table.values()]) for k in kinds}
    coords: dict[str, list[np.ndarray]] = {}
    swapped = []
    for iplane, (tname, slot) in enumerate(by_table.items()):
        table = table_of[tname]
        desc = text(table.attrs.get("description", ""))
        swap = ("suite2p" in desc.lower()) if swap_xy == "auto" else bool(swap_xy)
        swapped.append(swap)
        for c, v in _plane_coords(table, slot[chosen][2], iplane, swap, budget).items():
            coords.setdefault(c, []).append(v)
    unit_coords = {c: np.concatenate(v) for c, v in coords.items() if len(v) == len(by_table)}
    extra: dict[str, Any] = {
        "n_planes": len(by_table),
        "xy_swapped": bool(any(swapped)),
        "modality": "ophys",
    }
    if first[chosen][3] is not None:
        extra["frame_rate"] = first[chosen][3]
    return traces, frame_time, unit_coords, extra, chosen


def read_units(
    f: h5py.File,
    path: str,
    *,
    bin_width: float,
    t_start: float | None,
    t_stop: float | None,
    budget: ByteBudget,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Spike counts per bin of the /units table, with its per-unit columns."""
    units = f["units"]
    spikes = ragged(units, "spike_times", budget)
    n = len(spikes)
    times = np.concatenate(spikes) if n else np.empty(0)
    index = np.repeat(np.arange(n), [len(s) for s in spikes])
    counts, centres = bin_spike_times(
        times, index, n, bin_width=bin_width, t_start=t_start, t_stop=t_stop, budget=budget
    )
    ids = read_array(units["id"], budget, "id")
    coords: dict[str, np.ndarray] = {"unit_id": np.asarray(ids, dtype=np.int64)}
    skip = {
        "spike_times",
        "electrode_group",
        "electrodes",
        "waveform_mean",
        "waveform_sd",
        "obs_intervals",
    }
    coords.update(table_columns(units, n, skip, budget))
    coords.setdefault("is_cell", np.ones(n, bool))
    for c in ("pos_x", "pos_y", "pos_z"):
        coords.setdefault(c, np.full(n, np.nan))
    extra = {"bin_width": float(bin_width), "modality": "units", "frame_rate": 1.0 / bin_width}
    return {"counts": counts}, centres, coords, extra
