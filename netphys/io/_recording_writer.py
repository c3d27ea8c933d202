"""The recording writer: whole time chunks, the array shape as the commit point, one writer.

Crash protocol of one flush (see ``docs/format.md``): every chunk object of the block is
written first (through a handle that sees the array one block longer than its stored shape),
then each array's shape grows to cover the block, then the root attribute ``frames_committed``
is updated. A reader that trusts the shapes (plain xarray) never sees a frame whose data is not
on disk, and a reader that trusts ``frames_committed`` (netphys) never sees one that is not in
every array.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from netphys._validation import check_choice, check_int
from netphys.errors import RecordingError
from netphys.io._chunks import ChunkWriter, write_arrays, write_file
from netphys.io._lease import Lease
from netphys.io._nodes import (
    Node,
    consolidate,
    group_node,
    handle,
    metadata_document,
    write_nodes,
)
from netphys.io._recording_arrays import (
    ShapeTemplates,
    field_node,
    grow,
    wide,
    write_graph_pair,
)
from netphys.io._recording_define import Definitions
from netphys.io._recording_layout import (
    BEHAVIOUR,
    BEHAVIOUR_KEYS,
    COMPRESSIONS,
    FORMAT_VERSION,
    FRAME_FIELDS,
    GRAPH,
    LAYERS,
    RANKS_FORMAT_VERSION,
    TABLE_CHUNK,
    array_at,
    check_version,
    committed_frames,
    group_at,
    json_safe,
)

__all__ = ["RecordingWriter"]


def _is_recording(path: Path) -> bool:
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    attrs = meta.get("attributes", {}) if isinstance(meta, dict) else {}
    return isinstance(attrs, dict) and attrs.get("format") == "netphys-recording"


_ONLY_RECORDINGS = {
    "w": "`mode='w'` only replaces recordings (it never deletes other data). Remove it yourself "
    "if you mean to, or choose another `path`.",
    "a": "`mode='a'` only appends to recordings. Choose another `path` (a new one is created), "
    "or remove it yourself if you mean to.",
}


def check_recording_path(path: Path, *, mode: str, func: str = "Recorder") -> None:
    """Refuse, untouched, an existing ``path`` that ``mode`` ("w" or "a") would write into.

    ``mode="w"`` replaces only a netphys recording (or an empty folder); ``mode="a"`` appends
    only to a netphys recording.
    """
    folder = path.is_dir() and not path.is_symlink()
    if folder and (_is_recording(path) or (mode == "w" and not any(path.iterdir()))):
        return
    kind = "a symbolic link" if path.is_symlink() else "a file" if path.is_file() else "a folder"
    raise FileExistsError(
        f"{func}: `path` {str(path)!r} exists and is {kind} that is not a netphys recording; "
        + _ONLY_RECORDINGS[mode]
    )


def _configured(arr: zarr.Array) -> zarr.Array:
    """Return a handle on ``arr`` with the writer's runtime config (:data:`ARRAY_CONFIG`)."""
    return handle(arr.store_path, arr.metadata)  # (``Array.with_config``: zarr >= 3.1.6 only)


class RecordingWriter(Definitions):
    """Write frames into a recording store, whole time chunks at a time.

    Parameters
    ----------
    path : str or Path
        Directory of the store (``*.zarr``).
    mode : {"w-", "w", "a"}, default="w-"
        ``"w-"`` refuses an existing path, ``"w"`` replaces an existing *recording* (the new one
        is written beside it and takes its place at the first committed frame or at close),
        ``"a"`` appends to an existing recording of the same layers.
    chunk_frames : int, default=1024
        Frames per time chunk; every write except the last covers whole chunks.
    attrs : mapping, optional
        Extra root attributes (provenance); must be JSON-serialisable.
    compression : {"auto", "lz4", "zstd", "none"} or None, default="lz4"
        Codec of unit activity (Blosc; lz4 without byte shuffle) for layers that
        :meth:`add_layer` gives none; other arrays always use lz4. "auto" without a per-layer
        choice means lz4 (the Recorder chooses per layer from its first batch).
    direct_io : bool, default=True
        Write chunk files of 1 MiB or more with ``O_DIRECT`` where allowed
        (:class:`netphys.io._chunks.ChunkWriter`).

    Notes
    -----
    One writer per path: the writer holds a lease (:class:`netphys.io._lease.Lease`) until
    :meth:`close`, so a second writer or :func:`netphys.recover` on the same path is refused
    while it lives. Each write checks that the store is still there.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: str = "w-",
        chunk_frames: int = 1024,
        attrs: Mapping[str, Any] | None = None,
        compression: str | None = "lz4",
        direct_io: bool = True,
    ) -> None:
        self.path = Path(path)
        self.direct_io = bool(direct_io)
        compression = "none" if compression is None else compression
        self.compression = check_choice(
            compression, COMPRESSIONS, func="Recorder", name="compression"
        )
        if mode not in ("w-", "w", "a"):
            raise ValueError(
                f"Recorder: `mode` must be 'w-' (new), 'w' (overwrite) or 'a' (append); got {mode!r}."
            )
        self.chunk_frames = check_int(chunk_frames, func="Recorder", name="chunk_frames", minimum=1)
        exists = os.path.lexists(self.path)
        if exists and mode == "w-":
            raise FileExistsError(
                f"Recorder: `path` {str(self.path)!r} already exists. Pass `mode='w'` to "
                "overwrite it, `mode='a'` to append new sessions, or choose another path."
            )
        if mode == "a" and not exists:
            mode = "w-"
        self._check_parent(mode)
        self.mode = mode
        self._lock = threading.RLock()
        self._conditions: list[str] = []
        self._conditions_written = 0
        self._array_cache: dict[str, Any] = {}
        self._layer_specs: dict[str, dict[str, Any]] = {}
        self._behaviour_width: int | None = None
        self._pending_layers: dict[str, dict[str, Any]] = {}
        self._pending_behaviour = False
        self._dir = self.path
        self._replacing = False
        self._chunk_writer: ChunkWriter | None = None
        self._shape_templates = ShapeTemplates()
        self._lease = Lease.acquire(self.path, func="Recorder")
        try:
            self._open_store(mode, exists, attrs or {})
        except BaseException:
            self._lease.release()
            raise

    def _check_parent(self, mode: str) -> None:
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if mode == "a":
            return
        if not parent.exists():
            raise FileNotFoundError(
                f"Recorder: the folder of `path` {str(parent)!r} does not exist; create it first."
            )
        if not os.access(parent, os.W_OK):
            raise PermissionError(
                f"Recorder: cannot write to {str(parent)!r} (permission denied); "
                "choose a writable `path`."
            )

    def _open_store(self, mode: str, exists: bool, attrs: Mapping[str, Any]) -> None:
        for stale in self.path.parent.glob(f".{self.path.name}.netphys-new-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a crashed writer of this path
        try:
            if mode == "w" and exists:
                check_recording_path(self.path, mode="w")
                self._replacing = True
                self._dir = self.path.parent / f".{self.path.name}.netphys-new-{os.getpid()}"
            if mode == "a":
                check_recording_path(self.path, mode="a")
                self.root = zarr.open_group(
                    self.path, mode="r+", zarr_format=3, use_consolidated=False
                )
                self._load_existing()
            else:
                self._create_root(attrs)
        except PermissionError as exc:
            raise PermissionError(
                f"Recorder: cannot write the recording at {str(self.path)!r}: {exc}. "
                "Choose a writable `path`."
            ) from exc
        self._lease.watch(self._dir)

    # -- creation -------------------------------------------------------------------------
    def _create_root(self, attrs: Mapping[str, Any]) -> None:
        root_attrs: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "format": "netphys-recording",
            "status": "recording",
            "frames_committed": 0,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "layers": [],
            # CF: the frame table is the root's coordinates (plain xarray reads them as such)
            "coordinates": " ".join(FRAME_FIELDS),
        }
        root_attrs.update({k: json_safe(v) for k, v in attrs.items()})
        self.frames = 0
        os.mkdir(self._dir)  # refuses one that appeared since the path was checked
        root = group_node("", root_attrs)
        write_file(self._dir / "zarr.json", metadata_document(root.meta), root=self._dir)
        self.root = zarr.open_group(self._dir, mode="r+", zarr_format=3, use_consolidated=False)
        fields = [field_node(k, frames=0, chunk=TABLE_CHUNK) for k in FRAME_FIELDS]
        self._write_nodes([*fields, group_node(LAYERS), group_node(GRAPH)])

    def _writer(self) -> ChunkWriter:
        """Return the chunk writer of this store (started at first use)."""
        if self._chunk_writer is None:
            self._chunk_writer = ChunkWriter(self._dir, direct_io=self.direct_io)
        return self._chunk_writer

    def _write_nodes(self, nodes: list[Node]) -> None:
        """Write ``nodes`` (:func:`netphys.io._nodes.write_nodes`); cache the time arrays."""
        handles = write_nodes(self._dir, self.root.store_path, nodes, self._writer())
        for key, arr in handles.items():
            if (getattr(arr.metadata, "dimension_names", None) or ("",))[0] == "time":
                self._array_cache[key] = arr

    def _load_existing(self) -> None:
        attrs: dict[str, Any] = dict(self.root.attrs)
        check_version(attrs, self.path, "Recorder")
        if attrs.get("format_version") == RANKS_FORMAT_VERSION:
            raise RecordingError(
                f"Recorder: {str(self.path)!r} was recorded by many processes (format version "
                f"{RANKS_FORMAT_VERSION}); append to it with "
                "`netphys.recorder.DistributedRecorder(..., mode='a')`, or record to a new `path`."
            )
        if attrs.get("status") == "recording":
            raise RecordingError(
                f"Recorder: {str(self.path)!r} is marked as still recording (it was interrupted "
                "or is open elsewhere). Run `netphys.recover(path)` first, then append."
            )
        self.frames = committed_frames(attrs, self.path, "Recorder")
        self._conditions = list(
            str(array_at(self.root, "condition").attrs.get("flag_meanings", "")).split()
        )
        self._conditions_written = len(self._conditions)
        time_chunks = array_at(self.root, "session").chunks[0]
        for name in attrs.get("layers", []):
            g = group_at(self.root, f"{LAYERS}/{name}")
            time_chunks = array_at(g, "activity").chunks[0]
            self._layer_specs[name] = {
                "n_units": array_at(g, "activity").shape[1],
                "n_nodes": array_at(g, "nodes").shape[1],
                "dtype": str(array_at(g, "activity").dtype),
                "unit_id": np.asarray(array_at(g, "unit_id")[:]),
            }
        if BEHAVIOUR in self.root:
            self._behaviour_width = array_at(self.root, f"{BEHAVIOUR}/logits").shape[1]
        missing = [k for k in FRAME_FIELDS if k not in self.root]  # added to the format later
        self._write_nodes([field_node(k, frames=self.frames, chunk=TABLE_CHUNK) for k in missing])
        self.chunk_frames = int(time_chunks)  # append in the chunks the store already has
        self.root.attrs.update({"status": "recording"})

    def last_session(self) -> int:
        """Return the largest session id among the committed frames (-1 if none)."""
        arr = array_at(self.root, "session")
        return int(np.max(arr[: self.frames])) if self.frames else -1

    # -- writing ------------------------------------------------------------------------
    def condition_code(self, condition: str) -> int:
        """Return the integer code of a condition string, registering it if new."""
        if condition not in self._conditions:
            if any(c.isspace() for c in condition) or not condition:
                raise ValueError(
                    f"Recorder: `condition` must be a non-empty word without spaces; got {condition!r}."
                )
            self._conditions.append(condition)
        return self._conditions.index(condition)

    def _condition_values(self, codes: np.ndarray, dtype: Any) -> np.ndarray:
        """Map condition codes to what the store holds: strings (v2) or the codes (v1)."""
        codes = np.asarray(codes)
        if np.dtype(dtype).kind in "iu":
            return codes
        names = np.array([*self._conditions, ""], dtype=object)
        return names[np.where(codes >= 0, codes, len(self._conditions))]

    def _write_conditions(self) -> None:
        # only version-1 stores keep condition codes (with CF flag_values/flag_meanings)
        conditions = list(self._conditions)
        if np.dtype(self._handles()["condition"].dtype).kind not in "iu":
            return
        if len(conditions) != self._conditions_written:
            self._handles()["condition"].update_attributes(
                {
                    "flag_values": list(range(len(conditions))),
                    "flag_meanings": " ".join(conditions),
                }
            )
            self._conditions_written = len(conditions)
            self._shape_templates = ShapeTemplates()  # the cached documents lack the new attrs

    def _check_alive(self) -> None:
        """Raise if the store was deleted or replaced under this writer."""
        lost = f"frames after the {self.frames} committed ones are lost."
        self._lease.check_store(func="Recorder", lost=lost)

    def write(
        self,
        start: int,
        table: Mapping[str, np.ndarray],
        layers: Mapping[str, tuple[np.ndarray, np.ndarray]],
        behaviour: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Write frames ``start .. start + n`` and commit them.

        ``table`` maps names of :data:`FRAME_FIELDS` to (n,) arrays (``session`` is required;
        fields left out get their fill value); ``layers`` maps a
        layer name to ``(activity (n, units), nodes (n, nodes))``. Chunk objects are written
        first, array shapes grow next, ``frames_committed`` last.
        """
        self.join_prepared()
        with self._lock:
            self._check_alive()
            n = len(table["session"])
            if start != self.frames:
                raise RecordingError(f"internal: write at {start} but {self.frames} committed")
            self.materialize()
            stop = start + n
            arrays = self._arrays_for(table, layers, behaviour)
            # chunk objects first: whole chunks are encoded and written directly, in one wait
            # (netphys.io._chunks); string arrays and unaligned starts go through zarr. Both
            # write through a handle one block longer than the stored shape and never resize.
            write_arrays(self._writer(), [(wide(a, stop), v) for a, v in arrays], start)
            self._write_conditions()
            grow(  # the commit point of each array
                [arr for arr, _ in arrays],
                stop,
                folder=self._dir,
                templates=self._shape_templates,
                write_files=self._writer().replace_files,
            )
            self.frames = stop
            self._commit_frames(stop)
            if self._replacing:
                self._swap_in()

    def _commit_frames(self, stop: int) -> None:
        """Set the root attribute ``frames_committed`` (the last step of a flush).

        The root ``zarr.json`` is written atomically from the metadata zarr would write,
        without a round trip through zarr's event loop (2-5 ms per flush). Unlike the arrays'
        documents it is not swapped with a spare: a spare file in a group's folder would be
        listed by zarr as an unknown member.
        """
        meta = self._root_meta({"frames_committed": stop})
        write_file(self._dir / "zarr.json", metadata_document(meta), root=self._dir)
        self._set_root_meta(meta)

    def _root_meta(self, updates: Mapping[str, Any]) -> Any:
        """Return the root group's metadata with ``updates`` to its attributes (not written)."""
        meta = self.root._async_group.metadata
        return dataclasses.replace(meta, attributes={**meta.attributes, **updates})

    def _set_root_meta(self, meta: Any) -> None:
        """Make the root handle see ``meta``, the document just written."""
        object.__setattr__(self.root._async_group, "metadata", meta)

    def _arrays_for(
        self,
        table: Mapping[str, np.ndarray],
        layers: Mapping[str, tuple[np.ndarray, np.ndarray]],
        behaviour: Mapping[str, np.ndarray] | None,
    ) -> list[tuple[Any, np.ndarray]]:
        handles = self._handles()
        arrays: list[tuple[Any, np.ndarray]] = []
        for name, (act, nodes) in layers.items():
            arrays += [
                (handles[f"{LAYERS}/{name}/activity"], act),
                (handles[f"{LAYERS}/{name}/nodes"], nodes),
            ]
        if behaviour is not None and self._behaviour_width is not None:
            arrays += [(handles[f"{BEHAVIOUR}/{k}"], behaviour[k]) for k in BEHAVIOUR_KEYS]
        n = len(table["session"])
        for k, (dtype, fill) in FRAME_FIELDS.items():  # root table grows last
            values = table[k] if k in table else np.full(n, fill, dtype=dtype)  # a field left out
            if k == "condition":
                values = self._condition_values(values, handles[k].dtype)
            arrays.append((handles[k], values))
        return arrays

    def _swap_in(self) -> None:
        """Put the new store in place of the recording it replaces (``mode="w"``)."""
        # first: its cached array folders and its spare documents are in the new store's
        # current place (the spares are deleted here, while their paths still hold)
        self._stop_chunk_writer()
        old = self.path.parent / f".{self.path.name}.netphys-old-{os.getpid()}"
        os.rename(self.path, old)
        os.rename(self._dir, self.path)
        shutil.rmtree(old, ignore_errors=True)
        self._dir = self.path
        self._replacing = False
        self.root = zarr.open_group(self.path, mode="r+", zarr_format=3, use_consolidated=False)
        store = self.root.store_path  # the cached handles, moved with the store
        self._array_cache = {
            k: handle(store / a.path, a.metadata) for k, a in self._array_cache.items()
        }
        self._lease.watch(self._dir)

    def _stop_chunk_writer(self) -> None:
        if self._chunk_writer is not None:
            self._chunk_writer.close()
            self._chunk_writer = None

    def _handles(self) -> dict[str, Any]:
        """Open array handles along ``time``, cached (each lookup reads metadata)."""
        keys = [*FRAME_FIELDS]
        for name in self._layer_specs:
            keys += [f"{LAYERS}/{name}/activity", f"{LAYERS}/{name}/nodes"]
        if self._behaviour_width is not None:
            keys += [f"{BEHAVIOUR}/{k}" for k in BEHAVIOUR_KEYS]
        if set(keys) != set(self._array_cache):
            # runtime config is not stored with the array: set it on every handle
            self._array_cache = {
                k: self._array_cache.get(k) or _configured(array_at(self.root, k)) for k in keys
            }
        return self._array_cache

    def write_graph(self, session: int, weights: Mapping[tuple[str, str], np.ndarray]) -> None:
        """Store the node-to-node weights of one session (checkpoint).

        A session already in the store keeps its weights if they are equal; different weights
        under a reused session id are refused (they belong to another checkpoint).
        """
        with self._lock:
            for (pre, post), w in weights.items():
                write_graph_pair(self.root, session, pre, post, np.asarray(w, dtype="float32"))

    def close(self, *, status: str = "complete", attrs: Mapping[str, Any] | None = None) -> None:
        """Mark ``status``, consolidate metadata, release the lease (and swap in a new store).

        ``attrs`` are root attributes known only at the end (e.g. the variability specs).
        """
        self._settle_prepared()
        with self._lock:
            try:
                try:
                    self._check_alive()
                    self.materialize()
                finally:
                    self._stop_chunk_writer()  # its threads; the spare documents
                self._trim()
                final = {k: json_safe(v) for k, v in (attrs or {}).items()}
                meta = self._root_meta({**final, "status": status, "frames_committed": self.frames})
                # the final attributes and the consolidated metadata: one atomic write
                self._set_root_meta(consolidate(self._dir, meta))
                if self._replacing:
                    self._swap_in()
            finally:
                self._lease.release()

    def abandon(self) -> None:
        """Drop a store this writer created that holds no frame (a failed first forward).

        A replaced recording (``mode="w"``) stays as it was; an appended one is closed with
        its previous frames. Nothing empty is left in the way of a rerun.
        """
        if self._preparing is not None:
            self._preparing.join()  # what it created is dropped below (or reported by close)
        with self._lock:
            if self.frames or self.mode == "a":
                self.close()
                return
            try:
                self._stop_chunk_writer()
                shutil.rmtree(self._dir, ignore_errors=True)
            finally:
                self._lease.release()

    def release(self) -> None:
        """Give up the store as it is (after a write failure): release the lease only."""
        try:
            if self._preparing is not None:
                self._preparing.join()  # its failure, if any, is not this call's to report
            self._stop_chunk_writer()
        finally:
            self._lease.release()

    def _settle_prepared(self) -> None:
        """Wait for :meth:`prepare`'s thread; a failure there fails the close or abandon."""
        try:
            self.join_prepared()
        except BaseException:
            self._lease.release()
            raise

    def _trim(self) -> None:
        """Clip every array along ``time`` to the committed length."""
        for arr in self._handles().values():
            if arr.shape[0] != self.frames:
                arr.resize((self.frames, *arr.shape[1:]))
