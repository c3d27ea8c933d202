"""Helpers shared by the readers and writers of real neural data (suite2p, NWB, .mat, .npz).

Every reader returns the same schema: an :class:`xarray.Dataset` with dims ``(time, unit)``,

* variables ``activity`` (the main signal; the reader's ``activity=`` picks it) and, where present,
  ``F``, ``neuropil``, ``spks``, ``dff`` (all ``(time, unit)``);
* coords ``frame_time`` (time, s), ``unit`` (0..N-1 running index), ``unit_id`` (the id in the
  file), ``pos_x``, ``pos_y``, ``pos_z``, ``is_cell``, ``cell_prob``, ``plane`` (unit);
* attrs ``frame_rate`` (Hz), ``source`` (the path), ``format``, ``activity_variable``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import activity_array, check_magnitude
from netphys.errors import NetphysWarning, RecordingFormatError
from netphys.io._guard import ByteBudget

__all__ = [
    "as_recording_dataset",
    "bin_spike_times",
    "build_dataset",
    "check_file_rate",
    "check_trace",
    "choose_activity",
    "frame_rate_from_times",
    "recording_frame_rate",
]

_LONG_NAMES = {
    "activity": "main activity signal",
    "F": "ROI fluorescence",
    "neuropil": "neuropil fluorescence",
    "spks": "deconvolved activity",
    "dff": "dF/F",
    "counts": "spike count per bin",
}


def choose_activity(
    available: Sequence[str],
    activity: str | None,
    *,
    preference: Sequence[str],
    func: str,
    source: str,
) -> str:
    """Pick the variable used as ``activity``: ``activity`` if given, else the first preferred."""
    if activity is not None:
        if activity not in available:
            raise ValueError(
                f"{func}(): `activity`={activity!r} is not in {source}; it holds "
                f"{list(available)}. Pass one of those, or None for the default "
                f"(first of {list(preference)})."
            )
        return activity
    for name in preference:
        if name in available:
            return name
    return available[0]


def check_file_rate(value: Any, *, func: str, source: str, what: str) -> float:
    """Return a frame rate read from a file as a float, refusing 0, negative and non-finite.

    A rate of 0 would give infinite frame times; the message names where it was found.
    """
    try:
        rate = float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
    except (TypeError, ValueError, IndexError) as exc:
        raise RecordingFormatError(
            f"{func}(): {source}: {what} should be a number (Hz); got {value!r}. "
            "Pass `frame_rate=` (Hz) to override it."
        ) from exc
    if not (np.isfinite(rate) and rate > 0):
        raise RecordingFormatError(
            f"{func}(): {source}: {what} is {rate}, but a frame rate must be finite and > 0 "
            "(0 would give infinite frame times). Pass `frame_rate=` (Hz) to override it."
        )
    return rate


def check_trace(arr: np.ndarray, *, func: str, source: str, what: str) -> np.ndarray:
    """Refuse activity that is not real numbers (strings, objects, complex) with a clear error."""
    if arr.dtype.kind not in "biuf":
        kind = "complex" if arr.dtype.kind == "c" else "non-numeric"
        raise RecordingFormatError(
            f"{func}(): {source}: {what} holds {kind} data (dtype {arr.dtype}), not real numbers, "
            "so it cannot be activity. Pick another variable with `activity=`, or convert the "
            "data yourself (e.g. `np.abs`) and build the DataArray."
        )
    return arr


def build_dataset(
    traces: Mapping[str, np.ndarray],
    *,
    activity: str,
    frame_time: np.ndarray,
    unit_coords: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """Assemble the reader schema from ``(time, unit)`` arrays and per-unit coords."""
    n_unit = next(iter(traces.values())).shape[1]
    _warn_if_huge(traces[activity], attrs)
    data_vars: dict[str, Any] = {}
    for name, arr in traces.items():
        data_vars[name] = xr.Variable(
            ("time", "unit"), arr, attrs={"long_name": _LONG_NAMES.get(name, name), "units": "a.u."}
        )
    data_vars["activity"] = xr.Variable(
        ("time", "unit"),
        traces[activity],
        attrs={"long_name": f"main activity signal (= {activity})", "units": "a.u."},
    )
    coords: dict[str, Any] = {
        "frame_time": xr.Variable(
            "time",
            np.asarray(frame_time, dtype=np.float64),
            attrs={"units": "s", "long_name": "frame time"},
        ),
        "unit": ("unit", np.arange(n_unit, dtype=np.int64)),
    }
    pos_units = {"pos_x": "pixel", "pos_y": "pixel", "pos_z": "plane"}
    for name, values in unit_coords.items():
        values = np.asarray(values)
        if values.shape != (n_unit,):
            continue
        coords[name] = xr.Variable(
            "unit", values, attrs={"units": pos_units[name]} if name in pos_units else {}
        )
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update({k: v for k, v in attrs.items() if v is not None})
    ds.attrs["activity_variable"] = activity
    return ds


def _warn_if_huge(arr: np.ndarray, attrs: Mapping[str, Any]) -> None:
    """Warn when activity is so large that analyses would overflow (NaN correlations).

    Lazy (dask) traces are not scanned here: that would read the whole file at open time.
    """
    if not isinstance(arr, np.ndarray):
        return
    try:
        check_magnitude(arr, func="netphys.io", name="activity")
    except ValueError as exc:
        warnings.warn(
            f"{attrs.get('source', 'the file')}: {exc}".replace("netphys.io(): ", ""),
            NetphysWarning,
            stacklevel=4,
        )


def frame_rate_from_times(frame_time: np.ndarray) -> float:
    """Return 1 / median frame interval (NaN for fewer than two frames)."""
    t = np.asarray(frame_time, dtype=np.float64)
    if t.size < 2:
        return float("nan")
    dt = float(np.median(np.diff(t)))
    return 1.0 / dt if dt > 0 else float("nan")


def bin_spike_times(
    times: np.ndarray,
    unit_index: np.ndarray,
    n_units: int,
    *,
    bin_width: float,
    t_start: float | None = None,
    t_stop: float | None = None,
    budget: ByteBudget | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Count spikes per (bin, unit).

    Returns ``(counts, centres)`` with counts of shape ``(n_bins, n_units)`` (float32) and bin
    centres in seconds. Bins are ``[t_start + k * bin_width, t_start + (k + 1) * bin_width)``;
    ``t_start`` defaults to ``min(0, first spike)`` and ``t_stop`` to the last spike. The
    count matrix is checked against ``budget`` before it is allocated (a spike at 1e12 s asks
    for petabytes); non-finite spike times or span are refused.
    """
    times = np.asarray(times, dtype=np.float64)
    unit_index = np.asarray(unit_index, dtype=np.int64)
    func = budget.func if budget is not None else "bin_spike_times"
    if not np.all(np.isfinite(times)):
        raise RecordingFormatError(
            f"{func}(): {budget.source if budget else ''}: {int(np.sum(~np.isfinite(times)))} "
            "spike times are NaN or infinite; a spike time must be a finite number of seconds."
        )
    if t_start is None:
        t_start = min(0.0, float(times.min())) if times.size else 0.0
    if t_stop is None:
        t_stop = float(times.max()) if times.size else t_start + bin_width
    for name, value in (("t_start", t_start), ("t_stop", t_stop)):
        if not np.isfinite(value):
            raise ValueError(f"{func}(): `{name}` must be a finite time (s); got {value}.")
    n_bins_f = np.ceil((t_stop - t_start) / bin_width - 1e-9)
    if budget is not None:
        budget.take(
            int(max(n_bins_f, 1.0)) * max(n_units, 1) * 4,
            f"the spike counts ({n_bins_f:.3g} bins of {bin_width} s from {t_start} s to "
            f"{t_stop} s, x {n_units} units)",
        )
    n_bins = max(1, int(n_bins_f))
    # a spike exactly at t_stop belongs to the last bin
    k = np.floor((times - t_start) / bin_width).astype(np.int64)
    k[(k == n_bins) & (times <= t_stop)] = n_bins - 1
    keep = (k >= 0) & (k < n_bins)
    counts = np.zeros((n_bins, n_units), dtype=np.float32)
    np.add.at(counts, (k[keep], unit_index[keep]), 1.0)
    centres = t_start + (np.arange(n_bins) + 0.5) * bin_width
    return counts, centres


def as_recording_dataset(recording: Any, *, func: str) -> xr.Dataset:
    """Turn a model recording or reader output into a Dataset with ``activity`` (time, unit).

    Accepts a (time, unit) DataArray (schema of ``netphys.io.recording.layer_activity``), a
    Dataset with ``activity`` (a reader's or :func:`~netphys.population.simulate_calcium`'s
    output, maybe with ``F``/``neuropil``/``spks``), or an ``xarray.DataTree`` from
    ``netphys.open_recording`` (all layers, via ``layer_activity``).
    """
    if isinstance(recording, xr.DataTree):
        from netphys.io import recording as _rec

        da = _rec.layer_activity(recording)
        attrs = dict(recording.attrs)
        recording = da.to_dataset(name="activity")
        recording.attrs.update({k: v for k, v in attrs.items() if k == "frame_rate"})
    if isinstance(recording, xr.DataArray | xr.Dataset):
        da = activity_array(
            recording,
            func=func,
            name="recording",
            fix="Use `netphys.io.recording.layer_activity(tree)` to get one.",
        )
        ds = recording if isinstance(recording, xr.Dataset) else da.to_dataset(name="activity")
        if isinstance(recording, xr.DataArray):
            ds.attrs.update(recording.attrs)
        if da.dims[0] != "time":
            ds = ds.rename({da.dims[0]: "time"})
        return ds.transpose("time", "unit", ...)
    raise TypeError(
        f"{func}(): `recording` must be an xarray DataArray (time, unit), a Dataset with "
        f"'activity', or a DataTree from netphys.open_recording; got {type(recording).__name__}."
    )


def recording_frame_rate(ds: xr.Dataset, frame_rate: float | None, *, func: str) -> float:
    """Frame rate from the argument, the ``frame_rate`` attr, or ``frame_time`` spacing."""
    if frame_rate is not None:
        return float(frame_rate)
    fr = ds.attrs.get("frame_rate")
    if fr is not None and np.isfinite(float(fr)) and float(fr) > 0:
        return float(fr)
    if "frame_time" in ds.coords:
        fr = frame_rate_from_times(ds["frame_time"].values)
        if np.isfinite(fr):
            return fr
    raise ValueError(
        f"{func}(): cannot tell the frame rate: `recording` has no 'frame_rate' attr and no "
        "increasing 'frame_time' coord. Pass `frame_rate=` (Hz)."
    )
