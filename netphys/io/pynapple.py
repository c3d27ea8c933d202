"""Hand a recording to pynapple (optional dependency: ``pip install netphys[pynapple]``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from netphys.errors import MissingDependencyError
from netphys.io._recording_layout import FRAME_FIELDS
from netphys.io._recording_reader import _as_tree, layer_activity

__all__ = ["to_pynapple"]

_UNIT_META = ("layer", "unit_id", "channel", "y", "x", "pos_x", "pos_y", "pos_z")


def _nap(func: str) -> Any:
    try:
        import pynapple as nap
    except ImportError as exc:
        raise MissingDependencyError(
            f"{func}() needs pynapple: `pip install netphys[pynapple]` (or `pip install pynapple`)."
        ) from exc
    return nap


def to_pynapple(
    recording: Any,
    layers: str | Sequence[str] | None = None,
    *,
    frame_table: bool = False,
) -> Any:
    """Return a recording's unit activity, or its frame table, as a pynapple ``TsdFrame``.

    Parameters
    ----------
    recording : xarray.DataTree or str
        A tree from :func:`netphys.open_recording`, or the path of a recording.
    layers : str or list of str, optional
        Layer name(s) for the activity; default: all.
    frame_table : bool, default=False
        Return the per-frame table instead: one column per field (``session``, ``stimulus``,
        ``label``, ``repeat``, ``epoch``, ``step`` and ``condition`` as an integer code) with
        column metadata ``meaning`` (for ``condition``: ``code=name`` pairs).

    Returns
    -------
    pynapple.TsdFrame
        Times are ``frame_time`` in seconds. Activity: one column per unit, with the
        metadata ``layer``, ``unit_id``, ``channel``, ``y``, ``x``, ``pos_x``, ``pos_y``,
        ``pos_z`` (``tsdframe.metadata``; select e.g. ``tsdframe[tsdframe.layer == "act2"]``).

    Raises
    ------
    MissingDependencyError
        If pynapple is not installed.

    Examples
    --------
    >>> frames = to_pynapple("rec.zarr")  # doctest: +SKIP
    >>> table = to_pynapple("rec.zarr", frame_table=True)  # doctest: +SKIP
    >>> frames.restrict(nap.IntervalSet(0, 10))  # doctest: +SKIP
    """
    nap = _nap("to_pynapple")
    tree = _as_tree(recording, "to_pynapple")
    root = tree.to_dataset()
    t = np.asarray(root["frame_time"].values, dtype=np.float64)
    if frame_table:
        return _frame_table(nap, root, t)
    act = layer_activity(tree, layers)
    meta = {k: _plain(act[k].values) for k in _UNIT_META if k in act.coords}
    return nap.TsdFrame(
        t=t, d=np.asarray(act.values), columns=np.arange(act.sizes["unit"]), metadata=meta
    )


def _plain(values: np.ndarray) -> np.ndarray:
    return values.astype(str) if values.dtype.kind in "OUT" else values


def _frame_table(nap: Any, root: xr.Dataset, t: np.ndarray) -> Any:
    names = [k for k in FRAME_FIELDS if k in root.coords and k not in ("frame_time",)]
    columns, meaning = [], []
    for k in names:
        values = np.asarray(root[k].values)
        if k == "condition":
            cats, codes = np.unique(values.astype(str), return_inverse=True)
            values = codes
            meaning.append(" ".join(f"{i}={c}" for i, c in enumerate(cats)))
        else:
            meaning.append(str(root[k].attrs.get("long_name", k)))
        columns.append(values.astype(np.int64))
    return nap.TsdFrame(
        t=t, d=np.stack(columns, axis=1), columns=names, metadata={"meaning": meaning}
    )
