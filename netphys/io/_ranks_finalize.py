"""Finalizing and reading rank-interleaved recordings (format version 3, :mod:`._ranks`).

Each rank writes its condition codes (int16, its own vocabulary) into ``ranks/condition``;
:func:`finalize` turns them into the root ``condition`` strings of format version 2, from the
ranks' records, every time it runs (idempotent: a finalize killed half-way is redone by
``recover``).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from netphys.io._chunks import write_file
from netphys.io._recording_layout import array_at, json_safe

__all__ = ["CODES", "RANKS", "drop_padding", "finalize", "read_group_attrs", "write_group_attrs"]

#: Group of the per-rank commit records (``ranks/<r>``) and the condition codes.
RANKS = "ranks"
#: Per-frame condition codes as written by each rank (its own vocabulary in ``ranks/<r>``).
CODES = f"{RANKS}/condition"
#: Slots whose condition strings are written per zarr call when finalizing.
_SLOTS_PER_WRITE = 64


def read_group_attrs(path: Path) -> dict[str, Any]:
    """Return the attributes of the group at ``path`` (its ``zarr.json``)."""
    meta = json.loads((path / "zarr.json").read_text())
    return dict(meta.get("attributes", {}))


def write_group_attrs(path: Path, attrs: Mapping[str, Any]) -> None:
    """Write the group ``zarr.json`` at ``path`` with ``attrs``, atomically."""
    meta = {"zarr_format": 3, "node_type": "group", "attributes": json_safe(dict(attrs))}
    path.mkdir(parents=True, exist_ok=True)
    write_file(path / "zarr.json", json.dumps(meta).encode())


def _time_arrays(root: zarr.Group, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for name, arr in root.arrays():
        if tuple(getattr(arr.metadata, "dimension_names", None) or ())[:1] == ("time",):
            out.append((f"{prefix}{name}", arr))
    for name, sub in root.groups():
        out += _time_arrays(sub, f"{prefix}{name}/")
    return out


def finalize(path: str | os.PathLike[str], *, status: str = "complete") -> dict[str, Any]:
    """Make a rank-interleaved store consistent from the ranks' records (rank 0, last).

    Chunk files of slots that no rank committed are deleted, arrays are sized to the last
    committed slot, the root ``condition`` strings are written from the ranks' codes, the
    variability specs of rank 0 become the root's, and the root attributes
    ``frames_committed`` (rows, padding included), ``frames_valid`` and ``status`` are
    written last.
    """
    p = Path(path)
    root = zarr.open_group(p, mode="r+", zarr_format=3, use_consolidated=False)
    attrs: dict[str, Any] = dict(root.attrs)
    world, c = int(attrs["world_size"]), int(attrs["chunk_frames"])
    records = [read_group_attrs(p / RANKS / str(r)) for r in range(world)]
    slots = {int(s) for rec in records for s in rec.get("slots", [])}
    length = (max(slots) + 1) * c if slots else 0
    removed = 0
    for f in p.rglob("*.partial"):
        f.unlink()
        removed += 1
    for _, arr in _time_arrays(root):
        removed += _drop_uncommitted_chunks(p / arr.path, arr, slots)
        if arr.shape[0] != length:
            arr.resize((length, *arr.shape[1:]))
    if CODES in root:
        _write_conditions(root, records, c)
    else:  # a version-3 store written before the codes moved to ranks/condition
        _merge_conditions(root, records, c)
    valid = int(sum(sum(int(n) for n in rec.get("frames", [])) for rec in records))
    final: dict[str, Any] = {"status": status, "frames_committed": length, "frames_valid": valid}
    if records and records[0].get("variability") is not None:
        final["variability"] = records[0]["variability"]
    root.update_attributes(final)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(p)
    return {
        "frames_committed": length,
        "frames_valid": valid,
        "status_before": attrs.get("status"),
        "chunk_files_removed": removed,
    }


def _write_conditions(root: zarr.Group, records: list[dict[str, Any]], c: int) -> None:
    """Write the root ``condition`` strings of every committed slot from its rank's codes."""
    codes_arr, cond = array_at(root, CODES), array_at(root, "condition")
    owner = {int(s): r for r, rec in enumerate(records) for s in rec.get("slots", [])}
    names = {
        r: np.array([*rec.get("conditions", []), ""], dtype=object) for r, rec in enumerate(records)
    }
    order = sorted(owner)
    for i in range(0, len(order), _SLOTS_PER_WRITE):
        lo, hi = order[i], order[min(i + _SLOTS_PER_WRITE, len(order)) - 1] + 1
        codes = np.asarray(codes_arr[lo * c : hi * c]).reshape(hi - lo, c)
        out = np.full(codes.shape, "", dtype=object)
        for k, s in enumerate(range(lo, hi)):
            if s in owner:
                vocab = names[owner[s]]
                row = codes[k]
                out[k] = vocab[np.where((row >= 0) & (row < len(vocab) - 1), row, len(vocab) - 1)]
        cond[lo * c : hi * c] = out.reshape(-1)


def _merge_conditions(root: zarr.Group, records: list[dict[str, Any]], c: int) -> None:
    """Legacy layout: int16 codes in the root ``condition``, merged into one vocabulary."""
    vocab: list[str] = []
    for rec in records:
        vocab += [k for k in rec.get("conditions", []) if k not in vocab]
    cond = array_at(root, "condition")
    for rec in records:
        local = list(rec.get("conditions", []))
        if local == vocab[: len(local)]:
            continue  # this rank's codes already agree
        lut = np.array([vocab.index(k) for k in local] + [-1], "int16")
        for s in rec.get("slots", []):
            rows = slice(int(s) * c, (int(s) + 1) * c)
            codes = np.asarray(cond[rows])
            cond[rows] = np.where(codes >= 0, lut[np.clip(codes, 0, len(local))], -1)
    if vocab:
        cond.update_attributes(
            {"flag_values": list(range(len(vocab))), "flag_meanings": " ".join(vocab)}
        )


def _drop_uncommitted_chunks(folder: Path, arr: Any, slots: set[int]) -> int:
    """Delete the chunk objects of ``arr`` at time-chunk indices not in ``slots``.

    Handles both chunk-key separators: ``c/<t>/...`` (a folder or file per time chunk) and
    ``c.<t>.<u>`` (files in the array's folder).
    """
    removed = 0
    if getattr(arr.metadata.chunk_key_encoding, "separator", "/") == ".":
        entries = folder.glob("c.*") if folder.exists() else []
        for entry in entries:
            t = entry.name.split(".")[1]
            if t.isdigit() and int(t) not in slots and entry.is_file():
                entry.unlink()
                removed += 1
        return removed
    nested = folder / "c"
    if nested.exists():
        for entry in nested.iterdir():
            if entry.name.isdigit() and int(entry.name) not in slots:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                removed += 1
    return removed


def drop_padding(tree: xr.DataTree, ranks: np.ndarray) -> xr.DataTree:
    """Add the ``rank`` coordinate and remove padding rows (``rank == -1``) from every node."""
    ranks = np.asarray(ranks).astype("int16")
    keep = np.flatnonzero(ranks >= 0)
    nodes = {}
    for node in tree.subtree:
        ds = node.to_dataset(inherit=False)
        if node is tree:
            ds = ds.assign_coords(rank=("time", ranks, {"long_name": "writing rank"}))
            ds = ds.set_xindex("rank")  # indexed: every group inherits it, like the frame table
        if "time" in ds.dims:
            ds = ds.isel(time=keep)
        nodes[node.path] = ds
    return xr.DataTree.from_dict(nodes)
