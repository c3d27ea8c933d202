"""Reading recordings: :func:`open_recording`, :func:`layer_activity`, :func:`node_activity`."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from netphys.errors import RecordingFormatError
from netphys.io._guard import check_store_confined
from netphys.io._ranks import drop_padding
from netphys.io._recording_layout import (
    BEHAVIOUR,
    FIELD_ATTRS,
    FRAME_FIELDS,
    GRAPH,
    LAYERS,
    RANKS_FORMAT_VERSION,
    STIMULI,
    UNIT_COORDS,
    array_at,
    check_version,
    committed_frames,
    group_at,
)

__all__ = ["layer_activity", "node_activity", "open_recording"]


def open_root(path: str | os.PathLike[str], func: str) -> tuple[zarr.Group, int]:
    """Open the root group read-only after the safety checks; return it and the committed frames.

    Checks: the path exists, holds no symlinks, is a netphys recording of a known version,
    and its ``frames_committed`` is an int >= 0 backed by data (so a forged count cannot make
    a reader allocate or scan terabytes).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{func}(): no recording at {str(p)!r}.")
    check_store_confined(p, func=func)
    try:
        root = zarr.open_group(p, mode="r", zarr_format=3, use_consolidated=False)
    except Exception as exc:
        raise RecordingFormatError(
            f"{func}(): {str(p)!r} is not a Zarr v3 group ({type(exc).__name__}: {exc})."
        ) from exc
    attrs = dict(root.attrs)
    check_version(attrs, p, func)
    n = committed_frames(attrs, p, func)
    _check_frames_backed(root, p, n, func)
    return root, n


def _check_frames_backed(root: zarr.Group, path: Path, n: int, func: str) -> None:
    """Refuse a store whose frame table is shorter than, or has no data for, ``n`` frames."""
    if "session" not in root or n == 0:
        return
    arr = root["session"]
    if not isinstance(arr, zarr.Array) or arr.ndim != 1:
        raise RecordingFormatError(f"{func}(): {str(path)!r} has no 1-D `session` array.")
    if arr.shape[0] < n:
        raise RecordingFormatError(
            f"{func}(): {str(path)!r} claims {n} committed frames but its frame table holds "
            f"{arr.shape[0]}; the store is damaged (or was edited by hand)."
        )
    last = arr.metadata.encode_chunk_key(((n - 1) // arr.chunks[0],))
    if not (path / "session" / last).exists():
        raise RecordingFormatError(
            f"{func}(): {str(path)!r} claims {n} committed frames but the frame table has no "
            f"data for frame {n - 1} (chunk {last!r} missing); the store is damaged or forged. "
            "`netphys.recover(path)` cannot repair a count larger than the data."
        )


def _dims(arr: Any) -> tuple[str, ...]:
    """Dimension names of a Zarr v3 array (empty if it has none)."""
    return tuple(getattr(arr.metadata, "dimension_names", None) or ())


def _node(tree: xr.DataTree, key: str) -> xr.DataTree:
    node = tree[key]
    if not isinstance(node, xr.DataTree):
        raise ValueError(f"netphys: {key!r} is not a group of the recording.")
    return node


def _open_group(path: Path, group: str | None, n: int, chunks: Any) -> xr.Dataset:
    """Open one group lazily, clipped to ``n`` frames (the committed length)."""
    zgroup = zarr.open_group(
        path, path=group or "", mode="r", zarr_format=3, use_consolidated=False
    )
    lengths = {arr.shape[0] for _, arr in zgroup.arrays() if _dims(arr)[:1] == ("time",)}
    if len(lengths) > 1:
        # interrupted mid-flush: arrays of one group have different lengths, which xarray
        # refuses; build the Dataset from the arrays themselves, each clipped to `n`
        return _open_group_clipped(zgroup, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ds = xr.open_zarr(
            path,
            group=group,
            chunks=chunks,
            consolidated=False,
            zarr_format=3,
            mask_and_scale=False,
            decode_times=False,
        )
    if "time" in ds.dims and ds.sizes["time"] != n:
        ds = ds.isel(time=slice(0, n))
    return ds


def _open_group_clipped(zgroup: zarr.Group, n: int) -> xr.Dataset:
    import dask.array as dsa

    variables = {}
    for name, arr in zgroup.arrays():
        dims = _dims(arr)
        data = dsa.from_zarr(arr, chunks=arr.chunks)
        if dims[:1] == ("time",):
            data = data[:n]
        attrs = {k: v for k, v in arr.attrs.items() if k != "coordinates"}
        variables[name] = xr.Variable(dims, data, attrs)
    return xr.Dataset(variables, attrs=dict(zgroup.attrs))


def _load_coords(ds: xr.Dataset, names: Sequence[str]) -> xr.Dataset:
    # coordinates are small: keep them in memory so that selections need no compute; they
    # come in the order of `names` (the store lists arrays in no fixed order)
    names = [k for k in names if k in ds.variables]
    others = {k: v.variable for k, v in ds.coords.items() if k not in names}
    coords: dict[Any, xr.Variable] = {**others, **{k: ds[k].load().variable for k in names}}
    data = {k: v.variable for k, v in ds.data_vars.items() if k not in names}
    return xr.Dataset(data, coords=coords, attrs=ds.attrs)


def _decode_condition(var: xr.DataArray) -> xr.Variable:
    """Return ``condition`` as strings: v2 stores hold strings, v1 stores int16 codes."""
    values = np.asarray(var.values)
    attrs = {"long_name": FIELD_ATTRS["condition"]["long_name"]}
    if values.dtype.kind in "iu":  # version 1: CF flag_values / flag_meanings
        meanings = str(var.attrs.get("flag_meanings", "")).split()
        names = np.array([*meanings, ""], dtype=object)
        ok = (values >= 0) & (values < len(meanings))
        values = names[np.where(ok, values, len(meanings))]
    # numpy 2 reads Zarr strings as StringDType; a fixed-width '<U' array is the familiar form
    return xr.Variable(var.dims, np.array(values.tolist(), dtype=str), attrs)


def _frame_table(base: xr.Dataset) -> xr.Dataset:
    """Return the root: the frame table as indexed coordinates, in :data:`FRAME_FIELDS` order.

    Each field gets its own (non-unique) pandas index along ``time``: DataTree children
    inherit only indexed coordinates, so every layer group sees ``session``, ``label``, ...,
    and ``.sel(session=2)`` or ``.sel(condition="spontaneous")`` work on any group.
    """
    names = [k for k in FRAME_FIELDS if k in base.variables]
    variables = {k: base[k].load().variable for k in names}
    if "condition" in variables:
        variables["condition"] = _decode_condition(base["condition"])
    out = xr.Dataset(coords=variables, attrs=base.attrs)
    for name in names:
        out = out.set_xindex(name)
    return out


def open_recording(
    path: str | os.PathLike[str],
    *,
    chunks: Any = None,
) -> xr.DataTree:
    """Open a recording lazily as an :class:`xarray.DataTree` (dask-backed).

    Parameters
    ----------
    path : str or Path
        The ``*.zarr`` directory written by :class:`netphys.Recorder` or :func:`netphys.record`.
    chunks : dict, optional
        Dask chunks; default: the store's own chunks (e.g. 1024 frames).

    Returns
    -------
    xarray.DataTree
        Root with the per-frame table along ``time`` (``condition`` decoded to strings),
        ``behaviour``, ``layers/<module>`` (``activity``, ``nodes``) and ``graph`` nodes.
        Frames beyond ``frames_committed`` (an interrupted write) are left out.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    RecordingFormatError
        If ``path`` is not a netphys recording, has a newer format version, or claims more
        committed frames than it holds data for.
    UnsafeFileError
        If the store contains a symbolic link to data outside the store.

    See Also
    --------
    layer_activity : one (time, unit) DataArray of one or all layers.
    recover : make an interrupted recording consistent on disk.

    Examples
    --------
    >>> import netphys
    >>> rec = netphys.open_recording("rec.zarr")  # doctest: +SKIP
    >>> rec["layers/conv1"]["activity"]  # doctest: +SKIP
    """
    root, n = open_root(path, "open_recording")
    p = Path(path)
    attrs: dict[str, Any] = dict(root.attrs)
    chunks = {} if chunks is None else chunks
    tree: dict[str, xr.Dataset] = {}
    base = _frame_table(_open_group(p, None, n, chunks))
    base.attrs = {k: v for k, v in attrs.items() if k != "coordinates"}
    tree["/"] = base
    if BEHAVIOUR in root:
        tree[f"/{BEHAVIOUR}"] = _open_group(p, BEHAVIOUR, n, chunks)
    for name in attrs.get("layers", []):
        ds = _open_group(p, f"{LAYERS}/{name}", n, chunks)
        ds = _load_coords(ds, UNIT_COORDS)
        tree[f"/{LAYERS}/{name}"] = ds
    if STIMULI in root:
        tree[f"/{STIMULI}"] = _open_group(p, STIMULI, n, chunks)
    if GRAPH in root:
        for key in group_at(root, GRAPH).group_keys():
            tree[f"/{GRAPH}/{key}"] = _open_group(p, f"{GRAPH}/{key}", n, chunks)
    out = xr.DataTree.from_dict(tree)
    # format 3 (many ranks, netphys.io._ranks): leave out the padding rows (rank == -1)
    if int(attrs.get("format_version", 1)) == RANKS_FORMAT_VERSION:
        out = drop_padding(out, np.asarray(array_at(root, "rank")[:n]))
    return out


def _as_tree(rec: Any, func: str) -> xr.DataTree:
    if isinstance(rec, xr.DataTree):
        return rec
    if isinstance(rec, (str, os.PathLike)):
        return open_recording(rec)
    raise TypeError(
        f"{func}(): `recording` must be a DataTree from `netphys.open_recording` or a path; "
        f"got {type(rec).__name__}."
    )


def _pick_layers(tree: xr.DataTree, layers: str | Sequence[str] | None, func: str) -> list[str]:
    available = list(tree.attrs.get("layers", []))
    if not available and LAYERS in tree.children:
        available = list(tree[LAYERS].children)
    if layers is None:
        return available
    wanted = [layers] if isinstance(layers, str) else list(layers)
    bad = [w for w in wanted if w not in available]
    if bad:
        raise ValueError(
            f"{func}(): `layers` {bad} not in the recording; recorded layers are {available}."
        )
    return wanted


def _time_coords(tree: xr.DataTree) -> dict[str, Any]:
    coords = tree.to_dataset().coords
    return {str(k): v.variable for k, v in coords.items() if v.dims == ("time",)}


def layer_activity(
    recording: Any,
    layers: str | Sequence[str] | None = None,
) -> xr.DataArray:
    """Return unit activity of one layer, or several stacked, as a (time, unit) DataArray.

    Parameters
    ----------
    recording : xarray.DataTree or str
        A tree from :func:`open_recording`, or the path of a recording.
    layers : str or list of str, optional
        Layer name(s); default: all recorded layers in forward order.

    Returns
    -------
    xarray.DataArray
        Dims (``time``, ``unit``), dask-backed. ``unit`` is a running index over the stacked
        layers; non-index unit coords ``layer``, ``unit_id``, ``channel``, ``y``, ``x``,
        ``pos_x``, ``pos_y``, ``pos_z``; the root's per-frame coords along ``time``.

    Examples
    --------
    >>> act = netphys.layer_activity("rec.zarr", "conv1")  # doctest: +SKIP
    >>> act.sel(time=act.session == 0)  # doctest: +SKIP
    """
    tree = _as_tree(recording, "layer_activity")
    names = _pick_layers(tree, layers, "layer_activity")
    if not names:
        raise ValueError("layer_activity(): the recording has no layers.")
    parts = []
    for name in names:
        ds = _node(tree, f"{LAYERS}/{name}").to_dataset(inherit=False)
        da = ds["activity"]
        da = da.assign_coords(layer=("unit", np.full(da.sizes["unit"], name, dtype=object)))
        parts.append(da)
    out = parts[0] if len(parts) == 1 else xr.concat(parts, dim="unit", coords="all")
    out = out.assign_coords(unit=np.arange(out.sizes["unit"]), **_time_coords(tree))
    out.name = "activity"
    out.attrs = {"long_name": "unit activity", "units": "a.u."}
    return out


def node_activity(
    recording: Any,
    layers: str | Sequence[str] | None = None,
) -> xr.DataArray:
    """Return node activity (channel spatial means) as a (time, node) DataArray.

    Parameters
    ----------
    recording : xarray.DataTree or str
        A tree from :func:`open_recording`, or the path of a recording.
    layers : str or list of str, optional
        Layer name(s); default: all recorded layers.

    Returns
    -------
    xarray.DataArray
        Dims (``time``, ``node``); ``node`` is a running index, with coords ``layer`` and
        ``channel`` along ``node`` and the per-frame coords along ``time``.
    """
    tree = _as_tree(recording, "node_activity")
    names = _pick_layers(tree, layers, "node_activity")
    parts = []
    for name in names:
        da = _node(tree, f"{LAYERS}/{name}").to_dataset(inherit=False)["nodes"]
        da = da.assign_coords(
            channel=("node", da["node"].values),
            layer=("node", np.full(da.sizes["node"], name, dtype=object)),
        ).drop_vars("node")
        parts.append(da)
    out = parts[0] if len(parts) == 1 else xr.concat(parts, dim="node", coords="all")
    out = out.assign_coords(node=np.arange(out.sizes["node"]), **_time_coords(tree))
    out.name = "nodes"
    return out
