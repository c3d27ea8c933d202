"""Layer and behaviour definitions of the recording writer, created in one pass.

``add_layer`` and ``add_behaviour`` only check and remember what the Recorder asks for; the
groups and arrays are created by :meth:`Definitions.materialize`, all in one pass
(:mod:`netphys.io._nodes`): a recording of a few layers needs dozens of small metadata and
coordinate objects, and creating them one call at a time was the largest fixed cost of a short
recording. The Recorder calls :meth:`Definitions.prepare` once the layers are known (its
first forward call), which runs that creation in a background thread while the model fills
the first block (30-90 ms for the demo CNN; 0.2-0.6 s for a ResNet-18 shape, mostly its 16 MB of
unit coordinates); the first write, ``close``, ``abandon`` and ``release`` wait for it first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from netphys.errors import RecordingError
from netphys.io._nodes import Node
from netphys.io._recording_arrays import behaviour_nodes, field_node, layer_nodes
from netphys.io._recording_layout import FRAME_FIELDS, array_at

__all__ = ["Definitions"]


class Definitions:
    """Mixin of :class:`netphys.io.recording.RecordingWriter`: layers, behaviour, table chunks."""

    root: zarr.Group
    _dir: Path
    frames: int
    chunk_frames: int
    compression: str
    _lock: Any
    _array_cache: dict[str, Any]
    _layer_specs: dict[str, dict[str, Any]]
    _behaviour_width: int | None
    _pending_layers: dict[str, dict[str, Any]]
    _pending_behaviour: bool
    _check_alive: Callable[[], None]
    _write_nodes: Callable[[list[Node]], None]
    _preparing: threading.Thread | None = None
    _prepare_error: BaseException | None = None

    @property
    def layers(self) -> list[str]:
        """Names of the layers in the store, in forward order."""
        return list(self._layer_specs)

    def layer_dtype(self, name: str) -> str | None:
        """Return the stored activity dtype of layer ``name`` (None if the store lacks it)."""
        spec = self._layer_specs.get(name)
        return None if spec is None else str(spec["dtype"])

    def check_append(self, layers: Sequence[str], dtype: str | None) -> None:
        """Refuse appending other layers or another activity dtype than the store holds."""
        if not self._layer_specs:
            return
        if list(layers) != self.layers:
            raise RecordingError(
                f"Recorder: appending layers {list(layers)} to a recording of layers "
                f"{self.layers}; every session of one recording must hold the same layers (the "
                f"others would be filled with NaN). Pass `layers={self.layers!r}`, or record to "
                "a new `path`."
            )
        stored = {spec["dtype"] for spec in self._layer_specs.values()}
        if dtype is not None and {dtype} != stored:
            raise RecordingError(
                f"Recorder: `dtype`={dtype!r} but the recording stores {sorted(stored)} activity; "
                f"appending would change the precision mid-recording. Pass `dtype={sorted(stored)[0]!r}`."
            )

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
        """Define the group of one recorded layer (or check it matches on append).

        ``compression`` is the layer's activity codec (default: the writer's). The group is
        created by :meth:`materialize` (see :meth:`prepare`).
        """
        n_units = len(unit_coords["unit_id"])
        with self._lock:
            if name in self._layer_specs:
                self._check_layer(name, unit_coords, n_nodes, dtype)
                return
            if self.frames:
                raise RecordingError(
                    f"Recorder: layer {name!r} is not in the existing recording (layers "
                    f"{self.layers}); append needs the same layers."
                )
            self._pending_layers[name] = {
                "unit_coords": unit_coords,
                "n_units": n_units,
                "n_nodes": n_nodes,
                "dtype": dtype,
                "attrs": attrs,
                "compression": compression or self.compression,
            }
            self._layer_specs[name] = {
                "n_units": n_units,
                "n_nodes": n_nodes,
                "dtype": dtype,
                "unit_id": np.asarray(unit_coords["unit_id"]),
            }

    def _check_layer(
        self, name: str, unit_coords: Mapping[str, np.ndarray], n_nodes: int, dtype: str
    ) -> None:
        spec = self._layer_specs[name]
        n_units = len(unit_coords["unit_id"])
        if spec["n_units"] != n_units or spec["n_nodes"] != n_nodes:
            raise RecordingError(
                f"Recorder: layer {name!r} has {n_units} units / {n_nodes} nodes now but "
                f"{spec['n_units']} / {spec['n_nodes']} in the existing recording; append "
                "needs the same layers and unit selection (same `max_units` and `rng`)."
            )
        if not np.array_equal(spec["unit_id"], np.asarray(unit_coords["unit_id"])):
            raise RecordingError(
                f"Recorder: layer {name!r} would record other units than the existing "
                "recording (different `unit_id`s: another `rng` seed or `max_units`); new "
                "frames would be stored under the old unit ids. Pass the `rng` and `max_units` "
                "of the first session (see the layer's attrs `seed` and `max_units`)."
            )
        if spec["dtype"] != dtype:
            raise RecordingError(
                f"Recorder: layer {name!r} is stored as {spec['dtype']} but this recorder "
                f"writes {dtype}; pass `dtype={spec['dtype']!r}`."
            )

    def add_behaviour(self, width: int) -> None:
        """Define the behaviour group for model outputs of ``width`` values per frame."""
        with self._lock:
            if self._behaviour_width is not None:
                if self._behaviour_width != width:
                    raise RecordingError(
                        f"Recorder: the model output has {width} values per frame now but "
                        f"{self._behaviour_width} in the existing recording."
                    )
                return
            self._behaviour_width = width
            self._pending_behaviour = True

    def prepare(self) -> None:
        """Start creating the defined groups and arrays in a background thread.

        Callers that touch the store next (``write``, ``close``) first call
        :meth:`join_prepared`, which waits and re-raises a failure (``abandon`` and
        ``release`` only wait).
        """
        if self._preparing is not None or not (self._pending_layers or self._pending_behaviour):
            return

        def run() -> None:
            try:
                with self._lock:  # e.g. write_graph waits (the first write joins the thread)
                    self.materialize()
            except BaseException as exc:  # re-raised by join_prepared in the caller's thread
                self._prepare_error = exc

        self._preparing = threading.Thread(target=run, name="netphys-create", daemon=True)
        self._preparing.start()

    def creating(self) -> bool:
        """Whether :meth:`prepare`'s thread is still creating arrays."""
        return self._preparing is not None and self._preparing.is_alive()

    def join_prepared(self) -> None:
        """Wait for :meth:`prepare`'s thread; raise what it raised (every call, until gone).

        Call it outside the writer's lock: the thread takes that lock.
        """
        thread = self._preparing
        if thread is not None:
            thread.join()
        if self._prepare_error is not None:
            raise self._prepare_error

    def materialize(self) -> None:
        """Create every defined layer and behaviour group.

        On a new store the frame table is re-created first with one time chunk per block
        (``chunk_frames`` is fixed only at the Recorder's first forward call), so that every
        block is written as whole chunks by :mod:`netphys.io._chunks`. The nodes are built as
        zarr metadata objects and written in one pass (:mod:`netphys.io._nodes`): creating
        the ~45 arrays of the demo CNN through zarr's ``create_array`` took 65 ms of CPU, and
        130 ms beside the running model; this takes ~25 ms.
        """
        if not self._pending_layers and not self._pending_behaviour:
            return
        session = self._array_cache.get("session") or array_at(self.root, "session")
        rechunk = not self.frames and session.chunks[0] != self.chunk_frames
        try:
            self._write_nodes(self._nodes(rechunk))
        except FileNotFoundError:
            self._check_alive()  # the store was deleted under the writer: say so
            raise
        if self._pending_layers:
            self._check_alive()  # zarr would recreate a deleted store's root
            self.root.attrs["layers"] = self.layers
        self._pending_layers = {}
        self._pending_behaviour = False

    def _nodes(self, rechunk: bool) -> list[Node]:
        """Return the pending groups and arrays (and the frame table if ``rechunk``)."""
        c = int(self.chunk_frames)
        nodes = [field_node(k, frames=0, chunk=c) for k in FRAME_FIELDS if rechunk]
        for name, spec in self._pending_layers.items():
            nodes += layer_nodes(
                name,
                spec["unit_coords"],
                spec["n_units"],
                spec["n_nodes"],
                spec["dtype"],
                spec["attrs"],
                frames=self.frames,
                chunk_frames=c,
                compression=spec["compression"],
            )
        if self._pending_behaviour:
            assert self._behaviour_width is not None
            nodes += behaviour_nodes(self._behaviour_width, frames=self.frames, chunk_frames=c)
        return nodes
