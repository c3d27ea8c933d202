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
(:func:`netphys.io._ranks_finalize.finalize`): chunk files of uncommitted slots are deleted,
arrays are sized to the last committed slot, the root ``condition`` strings are written from
the ranks' int16 codes (``ranks/condition``, each rank's own vocabulary), and the root's
``frames_committed``, ``frames_valid`` and ``status`` are written last. A killed rank
therefore loses only the block it had not committed; ``netphys.recover`` finalizes an
interrupted store.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from netphys.errors import RecordingError
from netphys.io._chunks import ChunkWriter
from netphys.io._lease import Lease
from netphys.io._nodes import write_nodes
from netphys.io._ranks_finalize import CODES, drop_padding, finalize
from netphys.io._ranks_finalize import RANKS as _RANKS
from netphys.io._ranks_finalize import read_group_attrs as _read_group_attrs
from netphys.io._ranks_finalize import write_group_attrs as _write_group_attrs
from netphys.io._recording_arrays import behaviour_nodes, layer_nodes, write_graph_pair
from netphys.io._recording_layout import (
    FIELD_ATTRS,
    FRAME_FIELDS,
    GRAPH,
    RANKS_FORMAT_VERSION,
    STORED_FIELDS,
    compressor,
    json_safe,
)
from netphys.io._recording_writer import check_recording_path

__all__ = ["RANKS_FORMAT_VERSION", "RankWriter", "drop_padding", "finalize"]

_WAIT_S = 600.0
_FUNC = "DistributedRecorder"


def _wait_for(path: Path, what: str, timeout: float = _WAIT_S) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if time.monotonic() - t0 > timeout:
            raise RecordingError(
                f"DistributedRecorder: waited {timeout:.0f} s for {what} ({str(path)!r}) that "
                "rank 0 creates; is rank 0 running and recording the same `path`?"
            )
        time.sleep(0.02)


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
        direct_io: bool = True,
    ) -> None:
        self.path = Path(path)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.compression = "none" if compression is None else compression
        self._chunk = int(chunk_frames)
        self._behaviour_width: int | None = None
        self._layer_specs: dict[str, dict[str, Any]] = {}
        self._conditions: list[str] = []
        self._variability: Any = None
        self._created = False
        self._arrays: dict[str, Any] = {}
        self._slots: list[int] = []
        self._nframes: list[int] = []
        # the lease (netphys.io._lease): rank 0 creates under an exclusive one, then every rank
        # shares it, so `recover` or a `mode="w"` writer is refused while any rank lives
        self._lease: Lease | None = None
        if self.rank == 0:
            self._lease = Lease.acquire(self.path, func=_FUNC, shared=mode == "a")
            with self._releasing_on_error():
                self._create_or_reopen(mode, attrs)
                self._lease.downgrade()
        barrier()
        with self._releasing_on_error():
            _wait_for(self.path / _RANKS / str(self.rank) / "zarr.json", "this rank's record")
            if self._lease is None:  # rank 0 holds it exclusively for a moment: wait for that
                self._lease = Lease.acquire(self.path, func=_FUNC, shared=True, wait=30.0)
            self._lease.watch(self.path)  # a store deleted under the ranks is reported
        root = zarr.open_group(self.path, mode="r", zarr_format=3, use_consolidated=False)
        rattrs: dict[str, Any] = dict(root.attrs)
        if int(rattrs.get("world_size", -1)) != self.world_size:
            self.release_lease()
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
        # rank 0 may be creating the behaviour arrays right now (a fresh run): only a finished
        # array counts; otherwise add_behaviour and the writes wait for it
        if (self.path / "behaviour" / "logits" / "zarr.json").exists():
            self._behaviour_width = int(root["behaviour/logits"].shape[1])  # type: ignore[union-attr]
        record = _read_group_attrs(self.path / _RANKS / str(self.rank))
        self._slots = [int(s) for s in record.get("slots", [])]
        self._nframes = [int(n) for n in record.get("frames", [])]
        self._conditions = list(record.get("conditions", []))
        self._variability = record.get("variability")
        if CODES not in root:
            raise RecordingError(
                f"DistributedRecorder: {str(self.path)!r} was written by an older netphys "
                "(condition codes in the root); record to a new `path`."
            )
        self.frames = len(self._slots) * self._chunk  # a resumed rank starts a new chunk
        self._cw = ChunkWriter(self.path, direct_io=direct_io)

    # -- creation (rank 0) ----------------------------------------------------------------
    @contextlib.contextmanager
    def _releasing_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.release_lease()
            raise

    def _check_store(self) -> None:
        if self._lease is not None:
            lost = f"this rank's frames after its {sum(self._nframes)} committed ones are lost."
            self._lease.check_store(func=_FUNC, lost=lost)

    def release_lease(self) -> None:
        """Give the path's lease back (rank 0 does so after finalizing; idempotent)."""
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def _create_or_reopen(self, mode: str, attrs: Mapping[str, Any]) -> None:
        exists = self.path.exists()
        if exists and mode == "w-":
            raise FileExistsError(
                f"DistributedRecorder: `path` {str(self.path)!r} already exists. Pass "
                "`mode='w'` to overwrite it, `mode='a'` to resume, or choose another path."
            )
        if exists and mode == "a":
            check_recording_path(self.path, mode="a", func=_FUNC)
            status = _read_group_attrs(self.path).get("status")
            if status == "recording":
                finalize(self.path, status="recovered")  # drop uncommitted blocks first
            root = zarr.open_group(self.path, mode="r+", zarr_format=3, use_consolidated=False)
            root.attrs.update({"status": "recording"})
            return
        if exists:
            check_recording_path(self.path, mode="w", func=_FUNC)
            shutil.rmtree(self.path)
        self._created = True
        root = zarr.open_group(self.path, mode="w-", zarr_format=3)
        root.update_attributes(
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
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                # CF: the frame table is the root's coordinates (plain xarray reads them so)
                "coordinates": " ".join([*FRAME_FIELDS, "rank"]),
                **{k: json_safe(v) for k, v in attrs.items()},
            }
        )
        _write_group_attrs(self.path / _RANKS, {"long_name": "per-rank commit records"})
        for r in range(self.world_size):
            _write_group_attrs(self.path / _RANKS / str(r), {"rank": r, "slots": [], "frames": []})
        rank_attrs = {"long_name": "writing rank (-1: padding row)"}
        code_attrs = {"long_name": "condition code in the writing rank's vocabulary"}
        fields = {
            **{k: (*STORED_FIELDS.get(k, v), FIELD_ATTRS[k]) for k, v in FRAME_FIELDS.items()},
            "rank": ("int16", -1, rank_attrs),
            CODES: ("int16", -1, code_attrs),  # the ranks' codes; `condition` from finalize
        }
        for name, (dtype, fill, field_attrs) in fields.items():
            root.create_array(
                name,
                shape=(0,),
                dtype=dtype,
                chunks=(self._chunk,),
                fill_value=fill,
                dimension_names=("time",),
                compressors=compressor(),
                attributes=dict(field_attrs),
            )
        root.create_group("layers")
        root.create_group(GRAPH)

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
        compression: str | None = None,
    ) -> None:
        """Rank 0 creates the layer's group; other ranks only remember its shape.

        ``compression`` is the layer's activity codec (default: the writer's).
        """
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
        nodes = layer_nodes(
            name,
            unit_coords,
            n_units,
            n_nodes,
            dtype,
            attrs,
            frames=0,
            chunk_frames=self._chunk,
            compression=compression or self.compression,
        )
        write_nodes(self.path, root.store_path, nodes, None)
        root.attrs["layers"] = self.layers

    def add_behaviour(self, width: int) -> None:
        """Rank 0 creates the behaviour group (time chunks of ``chunk_frames``)."""
        if self._behaviour_width is not None:
            return
        self._behaviour_width = width
        if self.rank != 0:
            return
        root = zarr.open_group(self.path, mode="r+", zarr_format=3, use_consolidated=False)
        nodes = behaviour_nodes(width, frames=0, chunk_frames=self._chunk)
        write_nodes(self.path, root.store_path, nodes, None)

    def prepare(self) -> None:
        """Nothing to start: rank 0 creates each group in :meth:`add_layer` (ranks wait on it)."""

    def creating(self) -> bool:
        """Never: groups are created in :meth:`add_layer` (see :meth:`prepare`)."""
        return False

    def condition_code(self, condition: str) -> int:
        """Return this rank's code of ``condition`` (:func:`finalize` writes the strings)."""
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
        self._check_store()
        n = len(table["session"])
        c = self._chunk
        if start != self.frames or start % c or n > c:
            raise RecordingError(
                f"internal: rank block at {start} of {n} frames, expected {self.frames} and at "
                f"most {c}"
            )
        slot = (start // c) * self.world_size + self.rank
        values = [(CODES if k == "condition" else k, table[k]) for k in FRAME_FIELDS]
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
                "variability": self._variability,
            },
        )

    def write_graph(self, session: int, weights: Mapping[tuple[str, str], np.ndarray]) -> None:
        """Rank 0 stores the node weights of one session (the ranks hold the same model)."""
        if self.rank != 0:
            return
        root = zarr.open_group(self.path, mode="r+", zarr_format=3, use_consolidated=False)
        for (pre, post), w in weights.items():
            write_graph_pair(root, session, pre, post, np.asarray(w, dtype="float32"))

    @property
    def valid_frames(self) -> int:
        """Frames this rank has committed (padding rows left out), over every run."""
        return int(sum(self._nframes))

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
        """Commit this rank's record, stop the encoder threads, give the lease back.

        ``attrs["variability"]`` (the specs as resolved at the first forward) goes into this
        rank's record; :func:`finalize` makes rank 0's the root's. Rank 0 keeps its lease: it
        finalizes later, then calls :meth:`release_lease`.
        """
        if attrs and attrs.get("variability") is not None:
            self._variability = json_safe(attrs["variability"])
        self._check_store()
        self._commit()
        self._cw.close()
        if self.rank != 0:
            self.release_lease()

    def abandon(self) -> None:
        """Stop after a failed first forward: nothing of this rank is committed.

        A store that a single rank (``world_size=1``) created in this run and that holds no
        frame is removed, so that a rerun finds the path free; with several ranks the others
        may still write, so the empty store stays (a rerun passes ``mode="w"``).
        """
        self.close()
        if self.rank == 0 and self.world_size == 1 and self._created and not self._slots:
            shutil.rmtree(self.path, ignore_errors=True)
        self.release_lease()

    def release(self) -> None:
        """Give up after a write failure: stop the encoder threads; committed blocks stay."""
        self._cw.close()
        self.release_lease()
