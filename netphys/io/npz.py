"""Read ``.npz`` recordings: rastermap/facemap-era matrices or spike-sorted spike times."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import check_positive_float
from netphys.errors import RecordingFormatError, UnsafeFileError
from netphys.io._common import (
    bin_spike_times,
    build_dataset,
    check_file_rate,
    check_trace,
    choose_activity,
    frame_rate_from_times,
)
from netphys.io._guard import DEFAULT_MAX_BYTES, ByteBudget
from netphys.io._safe_pickle import load_npy

__all__ = ["read_npz"]

_MATRIX_KEYS = {
    "spks": "spks",
    "sp": "spks",
    "Fsp": "spks",
    "X": "spks",
    "S": "spks",
    "F": "F",
    "Fneu": "neuropil",
    "dff": "dff",
}
_SPIKE_TIME_KEYS = ("spike_times", "spikes_times", "times")
_SPIKE_UNIT_KEYS = ("spike_clusters", "spike_units", "clusters")


def _load_npz(path: str, budget: ByteBudget) -> dict[str, Any]:
    func = "read_npz"
    out: dict[str, Any] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            members = [i for i in zf.infolist() if i.filename.endswith(".npy")]
            # a zip bomb declares what it expands to: check before decompressing anything
            budget.check(
                sum(i.file_size for i in members),
                f"the {len(members)} .npy members (declared uncompressed sizes)",
            )
            for info in members:
                with zf.open(info) as fp:
                    source = f"{path}::{info.filename}"
                    out[info.filename[:-4]] = load_npy(fp, source=source, budget=budget)
    except (RecordingFormatError, UnsafeFileError):
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        OSError,
        EOFError,
        ValueError,
        RuntimeError,
    ) as exc:
        raise RecordingFormatError(
            f"{func}(): {path} is not a readable .npz (zip) file ({type(exc).__name__}: {exc}). "
            "It may be truncated or corrupted; copy it again from its source."
        ) from exc
    return out


def read_npz(
    path: str | os.PathLike[str],
    *,
    activity: str | None = None,
    frame_rate: float | None = None,
    bin_width: float = 0.05,
    t_start: float | None = None,
    t_stop: float | None = None,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
) -> xr.Dataset:
    """Read an ``.npz`` recording into the (time, unit) reader schema.

    Two layouts are recognised. *Matrix* (rastermap/facemap papers): ``spks`` (or ``sp``,
    ``Fsp``, ``X``, ``S``; neurons x time), optional ``F``, ``Fneu``, ``dff``, positions
    ``xpos``/``ypos``/``zpos`` or ``xy``/``xyz`` (neurons x 2|3), times ``tneural``/
    ``frame_times``, rate ``fs``, behaviour ``run``. *Spike times* (Kilosort/IBL style):
    ``spike_times`` (s) with ``spike_clusters`` (unit id per spike), binned at ``bin_width``;
    ``event_times`` (and ``event_groups``) become zero-length intervals.

    Parameters
    ----------
    path : str or path-like
        The ``.npz`` file. Object members are read with the allow-list unpickler.
    activity : str, optional
        Variable used as ``activity`` (default ``'spks'``, or ``'counts'`` for spike times).
    frame_rate : float, optional
        Frame rate (Hz) for matrix files without ``fs`` or ``tneural``.
    bin_width : float, default=0.05
        Bin width (s) for spike times.
    t_start, t_stop : float, optional
        Binned span (s); default ``min(0, first spike)`` to the last spike.
    max_bytes : int or None, default=4 GiB
        Most bytes the reader may allocate (declared zip member sizes, arrays, spike-count
        bins), checked before allocating. None: no limit.

    Returns
    -------
    xarray.Dataset
        Dims ``(time, unit)``: ``activity`` plus ``spks``/``F``/``neuropil``/``dff`` or
        ``counts``; coords ``frame_time``, ``unit_id`` (row, or cluster id), ``pos_x``,
        ``pos_y``, ``pos_z``, ``is_cell``; ``behaviour`` (time, behaviour_var) from ``run``;
        ``interval_start``/``interval_stop``/``interval_group`` along ``interval`` for events.
        Attrs ``frame_rate``, ``source``, ``format='npz'``.

    Raises
    ------
    RecordingFormatError
        If the file is unreadable or holds none of the recognised keys.
    UnsafeFileError
        If an object member's pickle asks for anything outside the allow-list.
    ResourceLimitError
        If the file asks for more than ``max_bytes`` (a zip bomb, a spike at 1e12 s).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> path = tempfile.mkdtemp() + "/spikes.npz"
    >>> np.savez(path, spike_times=np.array([0.01, 0.02, 0.5]),
    ...          spike_clusters=np.array([3, 7, 3]))
    >>> ds = read_npz(path, bin_width=0.1)
    >>> ds.counts.sum("time").values.tolist(), ds.unit_id.values.tolist()
    ([2.0, 1.0], [3, 7])
    """
    func = "read_npz"
    name = os.fspath(path)
    if not Path(name).is_file():
        raise FileNotFoundError(f"{func}(): `path` {name!r} is not a file.")
    if not (isinstance(bin_width, (int, float)) and bin_width > 0):
        raise ValueError(f"{func}(): `bin_width` must be a positive number (s); got {bin_width!r}.")
    if frame_rate is not None:
        frame_rate = check_positive_float(frame_rate, func=func, name="frame_rate")
    budget = ByteBudget(max_bytes, func=func, source=name)
    d = _load_npz(name, budget)
    t_key = next((k for k in _SPIKE_TIME_KEYS if k in d), None)
    u_key = next((k for k in _SPIKE_UNIT_KEYS if k in d), None)
    traces = _matrices(d)
    if traces:
        traces, times, coords, attrs = _matrix_layout(d, traces, name, frame_rate)
        preference: tuple[str, ...] = ("spks", "dff", "F", "neuropil")
    elif t_key is not None and u_key is not None:
        traces, times, coords, attrs = _spike_layout(
            d,
            t_key,
            u_key,
            name,
            bin_width=bin_width,
            t_start=t_start,
            t_stop=t_stop,
            budget=budget,
        )
        preference = ("counts",)
    else:
        raise RecordingFormatError(
            f"{func}(): {name} has no recognisable neural data: looked for a neurons x time "
            f"matrix under {list(_MATRIX_KEYS)} or spike times under {list(_SPIKE_TIME_KEYS)} "
            f"with unit ids under {list(_SPIKE_UNIT_KEYS)}; the file holds {sorted(d)}."
        )
    attrs.update(source=name, format="npz")
    n_unit = next(iter(traces.values())).shape[1]
    coords.setdefault("is_cell", np.ones(n_unit, bool))
    for c in ("pos_x", "pos_y", "pos_z"):
        coords.setdefault(c, np.full(n_unit, np.nan))
    chosen = choose_activity(list(traces), activity, preference=preference, func=func, source=name)
    ds = build_dataset(traces, activity=chosen, frame_time=times, unit_coords=coords, attrs=attrs)
    return _extras(ds, d)


_Layout = tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], dict[str, Any]]


def _matrices(d: dict[str, Any]) -> dict[str, np.ndarray]:
    """(time, unit) traces from the neurons x time matrices the file holds."""
    traces: dict[str, np.ndarray] = {}
    for key, kind in _MATRIX_KEYS.items():
        if key in d and kind not in traces:
            arr = np.asarray(d[key])
            if arr.ndim == 2 and arr.dtype.kind in "biuf":
                traces[kind] = arr.T
    return traces


def _matrix_layout(
    d: dict[str, Any], traces: dict[str, np.ndarray], name: str, frame_rate: float | None
) -> _Layout:
    """Traces, frame times, positions and rate of a rastermap/facemap-style matrix file."""
    func = "read_npz"
    shapes = {k: v.shape for k, v in traces.items()}
    if len(set(shapes.values())) != 1:
        first = next(iter(traces))
        traces = {first: traces[first]}
    n_time, n_unit = next(iter(traces.values())).shape
    times = None
    for key in ("tneural", "frame_times", "frame_time", "t"):
        if key in d and np.shape(d[key]) == (n_time,):
            times = np.asarray(d[key], dtype=np.float64)
            break
    fs = frame_rate
    if fs is None and "fs" in d:
        fs = check_file_rate(d["fs"], func=func, source=name, what="`fs`")
    if times is None:
        if fs is None:
            raise RecordingFormatError(
                f"{func}(): {name} has no frame times or rate (looked for tneural, "
                "frame_times, fs). Pass `frame_rate=` (Hz)."
            )
        times = np.arange(n_time) / fs
    attrs: dict[str, Any] = {
        "frame_rate": float(fs) if fs is not None else frame_rate_from_times(times)
    }
    coords = {"unit_id": np.arange(n_unit, dtype=np.int64)}
    for j, c in enumerate(("xpos", "ypos", "zpos")):
        if c in d and np.shape(d[c]) == (n_unit,):
            coords[("pos_x", "pos_y", "pos_z")[j]] = np.asarray(d[c], dtype=np.float64)
    for key in ("xyz", "xy"):
        if key in d and np.ndim(d[key]) == 2 and np.shape(d[key])[0] == n_unit:
            for j in range(min(np.shape(d[key])[1], 3)):
                coords.setdefault(
                    ("pos_x", "pos_y", "pos_z")[j], np.asarray(d[key][:, j], dtype=np.float64)
                )
    return traces, times, coords, attrs


def _spike_layout(
    d: dict[str, Any],
    t_key: str,
    u_key: str,
    name: str,
    *,
    bin_width: float,
    t_start: float | None,
    t_stop: float | None,
    budget: ByteBudget,
) -> _Layout:
    """Spike counts per bin and unit of a Kilosort/IBL-style spike-times file."""
    func = "read_npz"
    spike_t = check_trace(np.asarray(d[t_key]), func=func, source=name, what=f"`{t_key}`")
    spike_t = spike_t.astype(np.float64).reshape(-1)
    spike_u = np.asarray(d[u_key]).reshape(-1)
    if spike_t.shape != spike_u.shape:
        raise RecordingFormatError(
            f"{func}(): {name}: `{t_key}` has {spike_t.size} entries but `{u_key}` has "
            f"{spike_u.size}; they must pair one unit id with each spike time."
        )
    ids, index = np.unique(spike_u, return_inverse=True)
    counts, times = bin_spike_times(
        spike_t,
        index,
        len(ids),
        bin_width=bin_width,
        t_start=t_start,
        t_stop=t_stop,
        budget=budget,
    )
    attrs = {"frame_rate": 1.0 / bin_width, "bin_width": float(bin_width), "modality": "units"}
    return {"counts": counts}, times, {"unit_id": ids.astype(np.int64)}, attrs


def _extras(ds: xr.Dataset, d: dict[str, Any]) -> xr.Dataset:
    """Behaviour (``run``) and event intervals (``event_times``/``event_groups``)."""
    if "run" in d and np.shape(d["run"]) == (ds.sizes["time"],):
        ds["behaviour"] = xr.Variable(
            ("time", "behaviour_var"), np.asarray(d["run"], dtype=np.float64)[:, None]
        )
        ds = ds.assign_coords(behaviour_var=("behaviour_var", ["run"]))
    if "event_times" in d and np.ndim(d["event_times"]) == 1:
        ev = np.asarray(d["event_times"], dtype=np.float64)
        ds["interval_start"] = xr.Variable("interval", ev, attrs={"units": "s"})
        ds["interval_stop"] = xr.Variable("interval", ev.copy(), attrs={"units": "s"})
        ds = ds.assign_coords(interval_table=("interval", np.full(ev.size, "events")))
        if "event_groups" in d and np.shape(d["event_groups"]) == ev.shape:
            ds["interval_group"] = xr.Variable("interval", np.asarray(d["event_groups"]))
    return ds
