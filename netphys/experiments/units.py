"""A neuroscientist's look at one unit: tuning, preferred stimuli, sessions, spontaneous activity.

:func:`unit_profile` gathers the numbers from a recording (no figure);
:func:`netphys.plot.plot_unit` draws them; ``netphys units REC --layer L --unit U`` does both.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import xarray as xr

from netphys.io._stimuli import read_stimuli
from netphys.io.recording import open_recording

__all__ = ["unit_profile"]


def _pick_unit(tree: xr.DataTree, layer: str, unit: int) -> xr.DataArray:
    func = "unit_profile"
    layers = list(tree.attrs.get("layers", []))
    if layer not in layers:
        raise ValueError(f"{func}(): `layer` {layer!r} is not in the recording; layers: {layers}.")
    act = tree[f"layers/{layer}"].to_dataset()["activity"]
    n = act.sizes["unit"]
    if not isinstance(unit, (int, np.integer)) or not 0 <= int(unit) < n:
        raise ValueError(
            f"{func}(): `unit` must be an int in 0..{n - 1} (a position in layer {layer!r}); "
            f"got {unit!r}."
        )
    return act.isel(unit=int(unit)).load()


def _sem(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0


def _tuning(trace: xr.DataArray, session: int) -> xr.Dataset:
    """Mean and SEM per label over the stimulus presentations of one session."""
    ok = (trace.session.values == session) & (trace.condition.values == "stimulus")
    ok &= trace.label.values >= 0
    vals, labs = trace.values[ok], trace.label.values[ok]
    labels = np.unique(labs)
    return xr.Dataset(
        {
            "tuning_mean": ("label", [float(vals[labs == c].mean()) for c in labels]),
            "tuning_sem": ("label", [_sem(vals[labs == c]) for c in labels]),
            "tuning_n": ("label", [int((labs == c).sum()) for c in labels]),
        },
        coords={"label": labels},
    )


def _top_stimuli(trace: xr.DataArray, session: int, top_k: int) -> xr.Dataset:
    """Return the ``top_k`` stimuli with the largest response (mean over repeats) in a session."""
    ok = (trace.session.values == session) & (trace.stimulus.values >= 0)
    ok &= trace.condition.values == "stimulus"
    stim, vals, labs = trace.stimulus.values[ok], trace.values[ok], trace.label.values[ok]
    ids = np.unique(stim)
    mean = np.array([vals[stim == i].mean() for i in ids])
    label = np.array([labs[stim == i][0] for i in ids])
    best = np.argsort(-mean, kind="stable")[:top_k]
    return xr.Dataset(
        {"top_response": ("rank", mean[best]), "top_label": ("rank", label[best])},
        coords={"rank": np.arange(1, len(best) + 1), "top_stimulus": ("rank", ids[best])},
    )


def _by_session(trace: xr.DataArray) -> xr.Dataset:
    """Mean and SEM of the stimulus and spontaneous responses in every session."""
    sessions = np.unique(trace.session.values)
    out: dict[str, Any] = {}
    for cond in ("stimulus", "spontaneous"):
        rows = []
        for s in sessions:
            v = trace.values[(trace.session.values == s) & (trace.condition.values == cond)]
            rows.append((float(v.mean()) if v.size else np.nan, _sem(v) if v.size else np.nan))
        out[f"{cond}_mean"] = ("session", [r[0] for r in rows])
        out[f"{cond}_sem"] = ("session", [r[1] for r in rows])
    return xr.Dataset(out, coords={"session": sessions})


def unit_profile(
    recording: Any,
    layer: str,
    unit: int,
    *,
    session: int | None = None,
    top_k: int = 8,
    inputs: Any = None,
) -> xr.Dataset:
    """Gather what a per-unit page shows: tuning, top stimuli, sessions, spontaneous activity.

    Parameters
    ----------
    recording : str, path-like or xarray.DataTree
        A recording (path or :func:`netphys.open_recording` tree).
    layer : str
        Recorded layer name.
    unit : int
        Position of the unit in the layer (0 .. n_units - 1; see the ``unit_id`` coord).
    session : int, optional
        Session of the tuning curve, top stimuli and spontaneous trace (default: the last).
    top_k : int, default=8
        Number of preferred stimuli.
    inputs : array-like, optional
        The presented inputs indexed by stimulus id (e.g. images (n, h, w) or (n, 1, h, w)).
        Default: the thumbnails stored in the recording's ``stimuli`` group, if any.

    Returns
    -------
    xarray.Dataset
        ``tuning_mean``, ``tuning_sem`` (SEM over the presentations of each label: stimuli x
        repeats), ``tuning_n`` along ``label``; ``top_response``, ``top_label`` and
        ``top_stimulus`` along ``rank`` (with ``top_image`` (rank, y, x) when inputs are
        images); ``stimulus_mean/sem`` and ``spontaneous_mean/sem`` along ``session``;
        ``spontaneous_trace`` along ``frame``. Attrs: ``layer``, ``unit``, ``unit_id``,
        ``session``, ``channel``, ``y``, ``x``.

    Raises
    ------
    ValueError
        If ``layer`` or ``unit`` is not in the recording, or ``session`` was not recorded.

    Examples
    --------
    >>> prof = unit_profile("rec.zarr", "act2", 5)  # doctest: +SKIP
    >>> prof["tuning_mean"].to_series()  # doctest: +SKIP
    """
    tree = open_recording(recording) if isinstance(recording, (str, os.PathLike)) else recording
    trace = _pick_unit(tree, layer, unit)
    sessions = np.unique(trace.session.values)
    session = int(sessions[-1]) if session is None else session
    if session not in sessions:
        raise ValueError(
            f"unit_profile(): `session` {session!r} was not recorded; sessions: {sessions.tolist()}."
        )
    top = _top_stimuli(trace, session, top_k)
    ds = xr.merge([_tuning(trace, session), top, _by_session(trace)])
    spont = trace.values[
        (trace.session.values == session) & (trace.condition.values == "spontaneous")
    ]
    ds["spontaneous_trace"] = ("frame", spont)
    images = read_stimuli(tree) if inputs is None else np.asarray(inputs)
    if images is not None:
        img = np.asarray(images)[top["top_stimulus"].values]
        img = img.reshape(img.shape[0], *[d for d in img.shape[1:] if d != 1] or [1])
        if img.ndim == 3:  # grey images
            ds["top_image"] = (("rank", "image_y", "image_x"), img)
    coords = {k: trace[k].item() for k in ("unit_id", "channel", "y", "x") if k in trace.coords}
    ds.attrs = {"layer": layer, "unit": int(unit), "session": session, **coords}
    return ds
