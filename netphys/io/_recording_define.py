"""Layer and behaviour definitions of the recording writer, created in one round trip.

``add_layer`` and ``add_behaviour`` only check and remember what the Recorder asks for; the
groups and arrays are created by :meth:`Definitions.materialize`, at the first write (or at
close), all of them concurrently in zarr's event loop: a recording of a few layers needs
dozens of small metadata and coordinate objects, and creating them one call at a time was
the largest fixed cost of a short recording.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from netphys.errors import RecordingError
from netphys.io._recording_arrays import (
    behaviour_coroutine,
    field_coroutine,
    layer_coroutine,
    run_all,
)
from netphys.io._recording_layout import FRAME_FIELDS, array_at

__all__ = ["Definitions"]


class Definitions:
    """Mixin of :class:`netphys.io.recording.RecordingWriter`: layers, behaviour, table chunks."""

    root: zarr.Group
    frames: int
    chunk_frames: int
    compression: str
    _lock: Any
    _array_cache: dict[str, Any]
    _layer_specs: dict[str, dict[str, Any]]
    _behaviour_width: int | None
    _pending_layers: dict[str, dict[str, Any]]
    _pending_behaviour: bool

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
    ) -> None:
        """Define the group of one recorded layer (or check it matches on append).

        The group is created by :meth:`materialize` (at the first write).
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

    def materialize(self) -> None:
        """Create every defined layer and behaviour group, all arrays concurrently.

        On a new store the frame table is re-created first with one time chunk per block
        (``chunk_frames`` is fixed only at the Recorder's first forward call), so that every
        block is written as whole chunks by :mod:`netphys.io._chunks`.
        """
        if not self._pending_layers and not self._pending_behaviour:
            return
        c = int(self.chunk_frames)
        todo = []
        if not self.frames and array_at(self.root, "session").chunks[0] != c:
            todo += [
                field_coroutine(self.root, k, frames=0, chunk=c, overwrite=True)
                for k in FRAME_FIELDS
            ]
        for name, spec in self._pending_layers.items():
            todo.append(
                layer_coroutine(
                    self.root,
                    name,
                    spec["unit_coords"],
                    spec["n_units"],
                    spec["n_nodes"],
                    spec["dtype"],
                    spec["attrs"],
                    frames=self.frames,
                    chunk_frames=c,
                    compression=self.compression,
                )
            )
        if self._pending_behaviour:
            assert self._behaviour_width is not None
            todo.append(
                behaviour_coroutine(
                    self.root, self._behaviour_width, frames=self.frames, chunk_frames=c
                )
            )
        run_all(todo)
        if self._pending_layers:
            self.root.attrs["layers"] = self.layers
        self._pending_layers = {}
        self._pending_behaviour = False
        self._array_cache = {}
