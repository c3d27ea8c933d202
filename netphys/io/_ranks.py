"""Many processes, one recording (format version 3): rank-interleaved time chunks.

Layout (see ``docs/format.md``). The time axis is cut into chunks of ``chunk_frames`` rows.
Time chunk ``s`` (a *slot*) belongs to rank ``s % world_size``; a rank's ``j``-th block goes
to slot ``j * world_size + rank``. Every array along ``time`` (frame table, ``rank``, layers,
behaviour) has that time chunk, so each rank writes whole chunks that no other rank touches,
directly (:mod:`netphys.io._chunks`), without rewriting any shared metadata. A rank commits a
block by rewriting its own group ``ranks/<rank>`` (atomic rename) with the list of its
committed slots and their frame counts. Rows whose ``rank`` is -1 are padding (the tail of a
rank's last chunk, or slots of a rank that wrote fewer blocks); :func:`drop_padding` removes
them when reading.

Rank 0 creates the store and the arrays; when every rank has closed, rank 0 *finalizes*
(:func:`finalize`): chunk files of uncommitted slots are deleted, arrays are sized to the
last committed slot, condition codes are merged, and the root's ``frames_committed``,
``frames_valid`` and ``status`` are written last. A killed rank therefore loses only the
block it had not committed; ``netphys.recover`` finalizes an interrupted store.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from netphys.errors import RecordingError
from netphys.io._chunks import ChunkWriter, _atomic_write
from netphys.io._recording_arrays import create_layer
from netphys.io._recording_layout import (
    FIELD_ATTRS,
    FRAME_FIELDS,
    RANKS_FORMAT_VERSION,
    array_at,
    compressor,
    json_safe,
)

__all__ = ["RANKS_FORMAT_VERSION", "RankWriter", "drop_padding", "finalize"]

_RANKS = "ranks"
_WAIT_S = 600.0


def _wait_for(path: Path, what: str, timeout: float = _WAIT_S) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if time.monotonic() - t0 > timeout:
            raise RecordingError(
                f"DistributedRecorder: waited {timeout:.0f} s for {what} ({str(path)!r}) that "
                "rank 0 creates; is rank 0 running and recording the same `path`?"
            )
        time.sleep(0.02)


def _read_group_attrs(path: Path) -> dict[str, Any]:
    meta = json.loads((path / "zarr.json").read_text())
    return dict(meta.get("attributes", {}))


def _write_group_attrs(path: Path, attrs: Mapping[str, Any]) -> None:
    meta = {"zarr_format": 3, "node_type": "group", "attributes": dict(attrs)}
    path.mkdir(parents=True, exist_ok=True)
    _atomic_write(path / "zarr.json", json.dumps(meta).encode())


class _RootView:
    """The root group as the Recorder sees it: arrays readable, attribute writes local.

    Only rank 0 may write the root's metadata, and only when finalizing; the Recorder's
    own ``root.attrs.update(...)`` calls land in this rank's record instead.
    """

    def __init__(self, root: zarr.Group) -> None:
        self._root = root
        self.attrs: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        return self._root[key]

    def __contains__(self, key: str) -> bool:
        return key in self._root


class RankWriter:
    """The per-rank store writer behind :class:`netphys.recorder.DistributedRecorder`.

    It has the interface of :class:`netphys.io.recording.RecordingWriter` that the Recorder
    uses (``frames``, ``root``, ``chunk_frames``, ``add_layer``, ``add_behaviour``,
    ``condition_code``, ``write``, ``close``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        rank: int,
        world_size: int,
        mode: str,
        chunk_frames: int,
        attrs: Mapping[str, Any],
        compression: str | None,
        barrier: Callable[[], None],
    ) -> None:
        self.path = Path(path)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.compression = "none" if compression is None else compression
        self._chunk = int(chunk_frames)
        self._behaviour_width: int | None = None
        self._layer_specs: dict[str, dict[str, Any]] = {}
        self._conditions: list[str] = []
        self._arrays: dict[str, Any] = {}
        self._slots: list[int] = []
        self._nframes: list[int] = []
        if self.rank == 0:
            self._create_or_reopen(mode, attrs)
        barrier()
        _wait_for(self.path / _RANKS / str(self.rank) / "zarr.json", "this rank's record")
        root = zarr.open_group(self.path, mode="r", zarr_format=3, use_consolidated=False)
        rattrs: dict[str, Any] = dict(root.attrs)
        if int(rattrs.get("world_size", -1)) != self.world_size:
            raise RecordingError(
                f"DistributedRecorder: {str(self.path)!r} was recorded by "
                f"{rattrs.get('world_size')} ranks, this run has world_size={self.world_size}; "
                "resume with the same number of ranks or record to a new `path`."
            )
        self._chunk = int(rattrs["chunk_frames"])
        self.root = _RootView(root)
        for name in rattrs.get("layers", []):
            g: Any = root[f"layers/{name}"]
            self._layer_specs[name] = {
                "n_units": g["activity"].shape[1],
                "n_nodes": g["nodes"].shape[1],
                "dtype": str(g["activity"].dtype),
            }
        if "behaviour" in root:
            self._behaviour_width = int(root["behaviour/logits"].shape[1])  # type: ignore[union-attr]
        record = _read_group_attrs(self.path / _RANKS / str(self.rank))
        self._slots = [int(s) for s in record.get("slots", [])]
        self._nframes = [int(n) for n in record.get("frames", [])]
        self._conditions = list(record.get("conditions", []))
        self.frames = len(self._slots) * self._chunk  # a resumed rank starts a new chunk
        self._cw = ChunkWriter(self.path)

    # -- creation (rank 0) ----------------------------------------------------------------
    def _create_or_reopen(self, mode: str, attrs: Mapping[str, Any]) -> None:
        exists = self.path.exists()
        if exists and mode == "w-":
            raise FileExistsError(
                f"DistributedRecorder: `path` {str(self.path)!r} already exists. Pass "
                "`mode='w'` to overwrite it, `mode='a'` to resume, or choose another path."
            )
        if exists and mode == "a":
            status = _read_group_attrs(self.path).get("status")
            if status == "recording":
                finalize(self.path, status="recovered")  # drop uncommitted blocks first
            root = zarr.open_group(self.path, mode="r+", zarr_format=3, use_consolidated=False)
            root.attrs.update({"status": "recording"})
            return
        if exists:
            shutil.rmtree(self.path)
        root = zarr.open_group(self.path, mode="w-", zarr_format=3)
        root.attrs.update(
            {
                "format_version": RANKS_FORMAT_VERSION,
                "format": "netphys-recording",
                "layout": "rank-interleaved",
                "status": "recording",
                "frames_committed": 0,
                "frames_valid": 0,
                "world_size": self.world_size,
                "chunk_frames": self._chunk,
                "layers": [],
                **{k: json_safe(v) for k, v in attrs.items()},
            }
        )
        fields = {**FRAME_FIELDS, "rank": ("int16", -1)}
        for name, (dtype, fill) in fields.items():
            root.create_array(
                name,
                shape=(0,),
                dtype=dtype,
                chunks=(self._chunk,),
                fill_value=fill,
                dimension_names=("time",),
                compressors=compressor(),
                attributes=dict(
                    FIELD_ATTRS.get(name, {"long_name": "writing rank (-1: padding row)"})
                ),
            )
        root.create_group("layers")
        _write_group_attrs(self.path / _RANKS, {"long_name": "per-rank commit records"})
        for r in range(self.world_size):
            _write_group_attrs(self.path / _RANKS / str(r), {"rank": r, "slots": [], "frames": []})

    @property
    def chunk_frames(self) -> int:
        """Frames per time chunk (one block); fixed when the store is created."""
        return self._chunk

    @chunk_frames.setter
    def chunk_frames(self, value: int) -> None:
        if int(value) != self._chunk:
            raise RecordingError(
                f"DistributedRecorder: staging blocks of {value} frames do not match the "
                f"store's time chunks of {self._chunk}; raise `max_host_memory` or pass a "
                f"smaller `chunk_frames` (at most {value})."
            )

    @property
    def layers(self) -> list[str]:
        return list(self._layer_specs)

    def add_layer(
        self,
        name: str,
        *,
        unit_coords: Mapping[str, np.ndarray],
        n_nodes: int,
        dtype: str,
        attrs: Mapping[str, Any],
    ) -> None:
        """Rank 0 creates the layer's group; other ranks only remember its shape."""
        n_units = len(unit_coords["unit_id"])
        if name in self._layer_specs:
            spec = self._layer_specs[name]
            if (spec["n_units"], spec["n_nodes"]) != (n_units, n_nodes):
                raise RecordingError(
                    f"DistributedRecorder: layer {name!r} has {n_units} units / {n_nodes} nodes "
                    f"on rank {self.rank} but {spec['n_units']} / {spec['n_nodes']} in the store."
                )
            return
        self._layer_specs[name] = {"n_units": n_units, "n_nodes": n_nodes, "dtype": dtype}
        if self.rank != 0:
            return
        root = zarr.open_group(self.path, mode="r+", zarr_format=3, use_consolidated=False)
        create_layer(
            root,
            name,
            unit_coords,
            n_units,
            n_nodes,
            dtype,
            attrs,
            frames=0,
            chunk_frames=self._chunk,
            compression=self.compression,
        )
        root.attrs["layers"] = self.layers

    def add_behaviour(self, width: int) -> None:
        """Rank 0 creates the behaviour group (time chunks of ``chunk_frames``)."""
        if self._behaviour_width is not None:
            return
        self._behaviour_width = width
        if self.rank != 0:
            return
        root = zarr.open_group(self.path, mode="r+", zarr_format=3, use_consolidated=False)
        g = root.create_group("behaviour")
        for name, dtype, fill, tail in (
            ("logits", "float32", float("nan"), (width,)),
            ("prediction", "int64", -1, ()),
            ("confidence", "float32", float("nan"), ()),
            ("loss", "float32", float("nan"), ()),
        ):
            g.create_array(
                name,
                shape=(0, *tail),
                dtype=dtype,
                chunks=(self._chunk, *tail),
                fill_value=fill,
                dimension_names=("time", "output")[: 1 + len(tail)],
                compressors=compressor(),
            )

    def condition_code(self, condition: str) -> int:
        """Return this rank's code of ``condition`` (codes are merged across ranks on finalize)."""
        if not condition or any(c.isspace() for c in condition):
            raise ValueError(
                f"Recorder: `condition` must be a non-empty word without spaces; got {condition!r}."
            )
        if condition not in self._conditions:
            self._conditions.append(condition)
        return self._conditions.index(condition)

    # -- writing --------------------------------------------------------------------------
    def _array(self, key: str) -> Any:
        if key not in self._arrays:
            _wait_for(self.path / key / "zarr.json", f"array {key!r}")
            self._arrays[key] = zarr.open_array(
                self.path / key, mode="r", zarr_format=3, use_consolidated=False
            )
        return self._arrays[key]

    def write(
        self,
        start: int,
        table: Mapping[str, np.ndarray],
        layers: Mapping[str, tuple[np.ndarray, np.ndarray]],
        behaviour: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Write one block (at most one time chunk) into this rank's next slot; commit it."""
        n = len(table["session"])
        c = self._chunk
        if start != self.frames or start % c or n > c:
            raise RecordingError(
                f"internal: rank block at {start} of {n} frames, expected {self.frames} and at "
                f"most {c}"
            )
        slot = (start // c) * self.world_size + self.rank
        values: list[tuple[str, np.ndarray]] = [(k, table[k]) for k in FRAME_FIELDS]
        values.append(("rank", np.full(n, self.rank, "int16")))
        for name, (act, nodes) in layers.items():
            values += [(f"layers/{name}/activity", act), (f"layers/{name}/nodes", nodes)]
        if behaviour is not None and self._behaviour_width is not None:
            values += [(f"behaviour/{k}", v) for k, v in behaviour.items()]
        items = []
        for key, v in values:
            spec = self._cw.spec(self._array(key), key)
            if spec is None:  # pragma: no cover - the arrays are created above with plain codecs
                raise RecordingError(f"internal: array {key!r} cannot be written directly")
            items.append((spec, v, slot))
        self._cw.write(items)
        self._slots.append(slot)
        self._nframes.append(n)
        self._commit()
        self.frames = start + c

    def _commit(self) -> None:
        _write_group_attrs(
            self.path / _RANKS / str(self.rank),
            {
                "rank": self.rank,
                "slots": self._slots,
                "frames": self._nframes,
                "conditions": self._conditions,
            },
        )

    def write_graph(self, session: int, weights: Any) -> None:
        """Node weights are not stored by multi-process recordings."""

    def last_session(self) -> int:
        """Largest session id in the store, over every rank (-1 if none; padding is -1)."""
        arr = self.root["session"]
        return int(np.max(arr[:])) if arr.shape[0] else -1

    def layer_dtype(self, name: str) -> str | None:
        """Return the stored activity dtype of layer ``name`` (None if the store lacks it)."""
        spec = self._layer_specs.get(name)
        return None if spec is None else str(spec["dtype"])

    def check_append(self, layers: Any, dtype: str | None) -> None:
        """Refuse resuming with other layers than the store holds."""
        if self._layer_specs and list(layers) != self.layers:
            raise RecordingError(
                f"DistributedRecorder: resuming with layers {list(layers)} but the recording "
                f"holds {self.layers}; pass `layers={self.layers!r}`."
            )

    def close(self, *, status: str = "complete", attrs: Mapping[str, Any] | None = None) -> None:
        """Commit this rank's record and stop the encoder threads (rank 0 finalizes later)."""
        self._commit()
        self._cw.close()

    def abandon(self) -> None:
        """Stop after a failed first forward: commit what there is (nothing), see :meth:`close`."""
        self.close()

    def release(self) -> None:
        """Give up after a write failure: stop the encoder threads; committed blocks stay."""
        self._cw.close()


def _time_arrays(root: zarr.Group, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for name, arr in root.arrays():
        if tuple(getattr(arr.metadata, "dimension_names", None) or ())[:1] == ("time",):
            out.append((f"{prefix}{name}", arr))
    for name, sub in root.groups():
        if name != _RANKS:
            out += _time_arrays(sub, f"{prefix}{name}/")
    return out


def finalize(path: str | os.PathLike[str], *, status: str = "complete") -> dict[str, Any]:
    """Make a rank-interleaved store consistent from the ranks' records (rank 0, last).

    Chunk files of slots that no rank committed are deleted, arrays are sized to the last
    committed slot, condition codes are merged into one vocabulary, and the root attributes
    ``frames_committed`` (rows, padding included), ``frames_valid`` and ``status`` are
    written last.
    """
    p = Path(path)
    root = zarr.open_group(p, mode="r+", zarr_format=3, use_consolidated=False)
    attrs: dict[str, Any] = dict(root.attrs)
    world, c = int(attrs["world_size"]), int(attrs["chunk_frames"])
    records = [_read_group_attrs(p / _RANKS / str(r)) for r in range(world)]
    slots = {int(s) for rec in records for s in rec.get("slots", [])}
    length = (max(slots) + 1) * c if slots else 0
    removed = 0
    for f in p.rglob("*.partial"):
        f.unlink()
        removed += 1
    arrays = _time_arrays(root)
    for _, arr in arrays:
        folder = p / arr.path / "c"
        if folder.exists():
            for entry in folder.iterdir():
                if entry.name.isdigit() and int(entry.name) not in slots:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                    removed += 1
        if arr.shape[0] != length:
            arr.resize((length, *arr.shape[1:]))
    vocab = _merge_conditions(root, records, c)
    valid = int(sum(sum(int(n) for n in rec.get("frames", [])) for rec in records))
    root.attrs.update({"status": status, "frames_committed": length, "frames_valid": valid})
    if vocab:
        root["condition"].attrs.update(
            {"flag_values": list(range(len(vocab))), "flag_meanings": " ".join(vocab)}
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(p)
    return {
        "frames_committed": length,
        "frames_valid": valid,
        "status_before": attrs.get("status"),
        "chunk_files_removed": removed,
    }


def _merge_conditions(root: zarr.Group, records: list[dict[str, Any]], c: int) -> list[str]:
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
    return vocab


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
