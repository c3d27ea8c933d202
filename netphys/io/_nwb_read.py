"""Low-level NWB (HDF5) reading shared by :mod:`netphys.io.nwb`: checked reads, tables, masks.

Every array read goes through :func:`read_array`, which checks the dataset's declared size
against the call's :class:`~netphys.io._guard.ByteBudget` (and refuses large never-written
datasets) before reading.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np
import xarray as xr

from netphys.errors import RecordingFormatError
from netphys.io._common import check_file_rate, check_trace
from netphys.io._guard import ByteBudget, check_hdf5_dataset
from netphys.io._hdf5_lazy import LazySpec, lazy_dataset

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


def text(value: Any) -> str:
    """Decode an HDF5 string attribute or value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return text(value[()])
    return str(value)


def ntype(obj: Any) -> str:
    """Return the NWB ``neurodata_type`` of an HDF5 object."""
    return text(obj.attrs.get("neurodata_type", ""))


def read_array(dset: Any, budget: ByteBudget, what: str) -> np.ndarray:
    """Read a whole HDF5 dataset after checking its declared size (and that it was written)."""
    if not isinstance(dset, h5py.Dataset):
        raise RecordingFormatError(
            f"{budget.func}(): {budget.source}: {what} ({getattr(dset, 'name', dset)}) should "
            f"be a dataset; got {type(dset).__name__}."
        )
    check_hdf5_dataset(dset, budget, what)
    return np.asarray(dset[()])


def series_time(group: h5py.Group, n: int, budget: ByteBudget) -> np.ndarray:
    """Frame times of a TimeSeries: its timestamps, or starting_time + arange(n) / rate."""
    if "timestamps" in group:
        ts = read_array(group["timestamps"], budget, "timestamps")
        check_trace(ts, func=budget.func, source=budget.source, what=f"{group.name}/timestamps")
        return np.asarray(ts[:n], dtype=np.float64)
    if "starting_time" in group:
        st = group["starting_time"]
        what = f"the rate of {group.name}/starting_time"
        rate = check_file_rate(
            st.attrs.get("rate"), func=budget.func, source=budget.source, what=what
        )
        return float(st[()]) + np.arange(n) / rate
    raise RecordingFormatError(
        f"read_nwb(): series {group.name} has neither 'timestamps' nor 'starting_time' + rate."
    )


def scaled(
    ds: h5py.Dataset,
    budget: ByteBudget,
    what: str,
    *,
    lazy: LazySpec | None = None,
    time_axis: int = 0,
) -> Any:
    """Read ``ds`` as real numbers, applying its ``conversion`` and ``offset`` attrs.

    With ``lazy``, a dask array over the dataset's chunks (``time_axis`` is its frame axis).
    """
    label = f"{what} {ds.name}"
    if lazy is None:
        data = read_array(ds, budget, what)
        check_trace(data, func=budget.func, source=budget.source, what=label)
    else:  # the dtype is checked before the (lazy) dataset is even opened
        check_trace(np.empty(0, ds.dtype), func=budget.func, source=budget.source, what=label)
        data = lazy_dataset(ds, budget, what, spec=lazy, time_axis=time_axis)
    conv = float(ds.attrs.get("conversion", 1.0))
    off = float(ds.attrs.get("offset", 0.0))
    if conv != 1.0 or off != 0.0:
        data = data.astype(np.float64) * conv + off
    return data


def series_kind(path: str, parent_type: str) -> str:
    """Which trace a ROI response series holds, from its path and container type."""
    low = path.lower()
    if "neuropil" in low:
        return "neuropil"
    if "deconv" in low or "spks" in low or "event" in low or "spike" in low:
        return "spks"
    if parent_type == "DfOverF" or "dff" in low or "dfoverf" in low:
        return "dff"
    return "F"


def ragged_parts(table: h5py.Group, name: str, budget: ByteBudget) -> tuple[np.ndarray, np.ndarray]:
    """Return a ragged column's flat data and the row end offsets (checked to be in order)."""
    data = read_array(table[name], budget, f"column {name}")
    ends = read_array(table[f"{name}_index"], budget, f"column {name}_index")
    if ends.dtype.kind not in "iu" or ends.ndim != 1:
        raise RecordingFormatError(
            f"{budget.func}(): {budget.source}: {table.name}/{name}_index should be 1-D integer "
            f"offsets; got {ends.dtype} of shape {ends.shape}."
        )
    ends = ends.astype(np.int64)
    if ends.size and (ends[0] < 0 or np.any(np.diff(ends) < 0) or ends[-1] > len(data)):
        raise RecordingFormatError(
            f"{budget.func}(): {budget.source}: {table.name}/{name}_index is not a list of "
            f"increasing offsets within the {len(data)} rows of {name}. The file is damaged."
        )
    return data, ends


def ragged(table: h5py.Group, name: str, budget: ByteBudget) -> list[np.ndarray]:
    """Rows of a ragged (``name`` + ``name_index``) column."""
    data, ends = ragged_parts(table, name, budget)
    starts = np.concatenate([[0], ends[:-1]])
    return [data[a:b] for a, b in zip(starts, ends, strict=True)]


def mask_positions(table: h5py.Group, n: int, swap_xy: bool, budget: ByteBudget) -> np.ndarray:
    """Return (n, 3) positions (x = image column, y = row, z) from the table's masks.

    Weighted centroids, computed for all ROIs at once (thousands of empty masks cost nothing);
    a mask that is empty or has no positive weight gives NaN.
    """
    pos = np.full((n, 3), np.nan)
    for mask in ("voxel_mask", "pixel_mask"):
        if mask in table and f"{mask}_index" in table:
            data, ends = ragged_parts(table, mask, budget)
            _centroids_from_pixels(pos, data, ends[:n])
            break
    else:
        if "image_mask" in table:
            _centroids_from_images(pos, table["image_mask"], n, budget)
    if swap_xy:
        pos[:, [0, 1]] = pos[:, [1, 0]]
    return pos


def _centroids_from_pixels(pos: np.ndarray, data: np.ndarray, ends: np.ndarray) -> None:
    fields = data.dtype.names or ()
    if "x" not in fields or "y" not in fields:
        return
    lengths = np.diff(np.concatenate([[0], ends]))
    rows = np.repeat(np.arange(len(ends)), lengths)
    data = data[: len(rows)]
    w = np.asarray(data["weight"], np.float64) if "weight" in fields else np.ones(len(rows))
    wsum = np.bincount(rows, weights=w, minlength=len(ends))
    has_pos = np.bincount(rows, weights=(w > 0).astype(np.float64), minlength=len(ends)) > 0
    ok = has_pos & (wsum != 0)
    for j, axis in enumerate(a for a in ("x", "y", "z") if a in fields):
        s = np.bincount(rows, weights=w * np.asarray(data[axis], np.float64), minlength=len(ends))
        pos[: len(ends), j][ok] = s[ok] / wsum[ok]


def _centroids_from_images(pos: np.ndarray, img: Any, n: int, budget: ByteBudget) -> None:
    check_hdf5_dataset(img, budget, "image_mask")
    n = min(n, img.shape[0])
    per_row = max(1, int(np.prod(img.shape[1:], dtype=np.int64)) * 8)
    step = max(1, (64 * 2**20) // per_row)
    for a in range(0, n, step):
        block = np.asarray(img[a : min(a + step, n)])
        axes = tuple(range(1, block.ndim))
        tot = block.sum(axis=axes, dtype=np.float64)
        ok = np.flatnonzero(tot > 0)  # empty masks: no position, no further work
        if not ok.size:
            continue
        m = block[ok].astype(np.float64)
        # NWB image_mask is (num_x, num_y[, num_z]): axis 0 is x
        for j in range(m.ndim - 1):
            other = tuple(ax for ax in axes if ax != j + 1)
            profile = m.sum(axis=other)  # (rows, size along axis j)
            coord = np.arange(m.shape[j + 1], dtype=np.float64)
            pos[a + ok, j] = profile @ coord / tot[ok]


def table_columns(
    table: h5py.Group, n: int, skip: set[str], budget: ByteBudget
) -> dict[str, np.ndarray]:
    """Plain 1-D columns of a DynamicTable (no ragged, no masks) as per-row arrays."""
    out: dict[str, np.ndarray] = {}
    names = [text(c) for c in table.attrs.get("colnames", [])]
    for name in names:
        if name in skip or f"{name}_index" in table or name not in table:
            continue
        ds = table[name]
        if not isinstance(ds, h5py.Dataset) or ds.shape != (n,):
            continue
        vals = read_array(ds, budget, f"column {name}")
        if vals.dtype.kind in "OSU":
            vals = np.array([text(v) for v in vals])
        elif vals.dtype.kind not in "biuf":
            continue
        out[name] = vals
    return out


def intervals(f: h5py.File, budget: ByteBudget) -> dict[str, xr.Variable]:
    """Rows of every table under /intervals as variables along ``interval``."""
    rows: list[dict[str, Any]] = []
    extra_names: list[str] = []
    if "intervals" not in f:
        return {}
    for tname in sorted(f["intervals"]):
        table = f["intervals"][tname]
        if not isinstance(table, h5py.Group) or "start_time" not in table:
            continue
        start = np.asarray(read_array(table["start_time"], budget, "start_time"), np.float64)
        stop = (
            np.asarray(read_array(table["stop_time"], budget, "stop_time"), np.float64)
            if "stop_time" in table
            else start.copy()
        )
        n = len(start)
        tags = (
            [",".join(text(t) for t in tg) for tg in ragged(table, "tags", budget)]
            if "tags" in table and "tags_index" in table
            else [""] * n
        )
        cols = table_columns(table, n, {"start_time", "stop_time", "tags", "timeseries"}, budget)
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


def behaviour(
    f: h5py.File, frame_time: np.ndarray, budget: ByteBudget
) -> tuple[np.ndarray, list[str]] | None:
    """Regularly sampled TimeSeries under /acquisition and /processing, nearest-sampled."""
    found: list[tuple[str, h5py.Group]] = []

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Group) or "data" not in obj:
            return
        if "timestamps" not in obj and "starting_time" not in obj:
            return
        if ntype(obj) in _NOT_BEHAVIOUR or "/ophys/" in obj.name or "/ecephys/" in obj.name:
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
        if data.dtype.kind not in "biuf":
            continue  # text or compound data is not a sampled behaviour variable
        try:
            t = series_time(grp, data.shape[0], budget)
        except RecordingFormatError:
            continue  # unusable timing (rate 0, text timestamps): not a sampled variable
        dt = np.diff(t)
        if len(dt) == 0 or np.median(dt) <= 0 or np.percentile(dt, 95) > 2 * np.median(dt):
            continue  # irregular: event times, not a sampled variable
        vals = scaled(data, budget, "behaviour").astype(np.float64).reshape(data.shape[0], -1)
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
