"""Shared input handling of the cross-session analyses (sessions, matched units, coords)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import (
    check_population,
)
from netphys.population._stream import reduce_sample_chunks


# ------------------------------------------------------------------------------ input ----
def _from_mapping(activity: Any, func: str) -> xr.DataArray:
    """Concatenate ``{session: population}`` (or a list) along the sample dim, units matched."""
    items = list(activity.items()) if isinstance(activity, Mapping) else list(enumerate(activity))
    if not items:
        raise ValueError(f"{func}(): `activity` is empty; pass at least two sessions.")
    parts, ref_units = [], None
    for sid, data in items:
        da = check_population(data, func=func, name=f"activity[{sid!r}]")
        if "unit" not in da.coords:
            da = da.assign_coords(unit=np.arange(da.sizes["unit"]))
        da = da.rename({da.dims[0]: "time"}) if da.dims[0] != "time" else da
        units = np.asarray(da["unit"].values)
        if ref_units is None:
            ref_units = units
        elif set(units.tolist()) != set(ref_units.tolist()):
            missing = sorted(set(ref_units.tolist()) - set(units.tolist()))[:5]
            extra = sorted(set(units.tolist()) - set(ref_units.tolist()))[:5]
            raise ValueError(
                f"{func}(): units are not matched across sessions: session {sid!r} lacks units "
                f"{missing} and has extra units {extra} compared with the first session. Keep "
                "only units tracked in every session, e.g. `a.sel(unit=common)` for each."
            )
        else:
            da = da.sel(unit=ref_units)
        parts.append(da.assign_coords(session=("time", np.full(da.sizes["time"], sid))))
    return xr.concat(parts, dim="time", coords="minimal", compat="override", join="override")


def _session_population(
    activity: Any,
    *,
    func: str,
    sessions: Sequence[Any] | None,
    condition: str | None,
    min_sessions: int,
) -> tuple[xr.DataArray, np.ndarray, list[np.ndarray]]:
    """Validate; return the filtered population, its session ids and each session's rows."""
    if isinstance(activity, (Mapping, list, tuple)):
        da = _from_mapping(activity, func)
    else:
        da = check_population(activity, func=func)
    dim = str(da.dims[0])
    if "session" not in da.coords or da["session"].dims != (dim,):
        raise ValueError(
            f"{func}(): `activity` needs a 'session' coordinate along '{dim}'; got coords "
            f"{sorted(map(str, da.coords))}. Add one with `.assign_coords(session=('{dim}', "
            "ids))`, or pass a dict {session: activity}."
        )
    keep = np.ones(da.sizes[dim], dtype=bool)
    if condition is not None and "condition" in da.coords:
        cond = np.asarray(da["condition"].values).astype(str)
        keep &= cond == str(condition)
        if not keep.any():
            raise ValueError(
                f"{func}(): no frame has condition {condition!r}; conditions present: "
                f"{sorted(set(cond.tolist()))}. Pass one of them, or `condition=None` for all."
            )
    sess = np.asarray(da["session"].values)
    present = np.unique(sess[keep])
    if sessions is None:
        ids = present
    else:
        ids = np.asarray(list(sessions))
        absent = [s for s in ids.tolist() if s not in set(present.tolist())]
        if absent:
            raise ValueError(
                f"{func}(): `sessions` {absent} not found in the data; sessions present: "
                f"{present.tolist()}."
            )
    if len(ids) < min_sessions:
        raise ValueError(
            f"{func}(): needs at least {min_sessions} sessions to compare; got {len(ids)} "
            f"(session ids {np.asarray(ids).tolist()}). Record more checkpoints, or pass a "
            "population whose 'session' coordinate has several values."
        )
    keep &= np.isin(sess, ids)
    da = da.isel({dim: np.flatnonzero(keep)})
    sess = sess[keep]
    rows = [np.flatnonzero(sess == s) for s in ids]
    return da, np.asarray(ids), rows


def _session_coords(da: xr.DataArray, ids: np.ndarray, rows: list[np.ndarray]) -> dict[str, Any]:
    """Per-session coords (``epoch``, ``task`` ...) taken from each session's first frame."""
    out: dict[str, Any] = {}
    dim = da.dims[0]
    for name in ("epoch", "step"):
        if name in da.coords and da[name].dims == (dim,):
            vals = np.asarray(da[name].values)
            out[name] = np.asarray([vals[r[0]] for r in rows])
    return out


def _unit_coords(da: xr.DataArray) -> dict[str, Any]:
    return {str(k): v.variable for k, v in da.coords.items() if v.dims == ("unit",)}


def _nonfinite_error(func: str, session: Any, block: np.ndarray) -> ValueError:
    bad = np.flatnonzero(~np.isfinite(block).all(axis=0))[:5].tolist()
    return ValueError(
        f"{func}(): `activity` has NaN or inf in session {session!r} (unit positions {bad}...). "
        "Units that are not matched in every session (e.g. cells not tracked on that day) must "
        "be dropped first, e.g. `activity.dropna('unit')`."
    )



def _finite_kernel(
    start: int, stop: int, block: np.ndarray, *, func: str, sid: Any
) -> dict[str, Any]:
    if not np.isfinite(block).all():
        raise _nonfinite_error(func, sid, block)
    return {"n": np.array(stop - start)}


def _check_session_finite(sub: xr.DataArray, func: str, sid: Any, chunk_size: int | None) -> None:
    """Raise the cross-session NaN error when a session holds NaN or inf (one pass)."""
    reduce_sample_chunks(sub, _finite_kernel, chunk_size=chunk_size, func=func, sid=sid)
