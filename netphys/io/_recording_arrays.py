"""Array-level pieces of the writer: layer groups, graph weights, and the commit primitives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.array import AsyncArray
from zarr.core.sync import sync

from netphys.errors import RecordingError
from netphys.io._nodes import Node, array_node, group_node, metadata_document
from netphys.io._recording_layout import (
    BEHAVIOUR,
    FIELD_ATTRS,
    FLAT_CHUNK_KEYS,
    FRAME_FIELDS,
    GRAPH,
    LAYERS,
    STORED_FIELDS,
    UNIT_COORDS,
    array_at,
    compressor,
    group_at,
    json_safe,
    unit_chunk,
)

__all__ = [
    "ShapeTemplates",
    "behaviour_nodes",
    "field_node",
    "grow",
    "layer_nodes",
    "metadata_document",
    "wide",
    "write_graph_pair",
]


def wide(arr: zarr.Array, n: int) -> zarr.Array:
    """Return a handle on ``arr`` that sees ``n`` frames, without touching its stored metadata.

    Writing through it stores chunk objects only; the stored shape (what readers see) grows
    later, in :meth:`RecordingWriter.write`, once every chunk of the block is on disk.
    """
    if arr.shape[0] >= n:
        return arr
    a = arr._async_array
    meta = a.metadata.update_shape((n, *arr.shape[1:]))
    config = getattr(a, "config", None) or getattr(a, "_config", None)  # zarr < 3.1.6: _config
    return zarr.Array(AsyncArray(metadata=meta, store_path=a.store_path, config=config))


#: Stands for the length along ``time`` in a metadata template (:class:`ShapeTemplates`).
_SENTINEL = 987_654_321_987_654_321


class ShapeTemplates:
    """Each array's ``zarr.json`` as zarr encodes it, with the length along ``time`` left open.

    Growing a recording rewrites the metadata of every array at every flush; zarr's resize
    encodes each document anew through its store (~0.8 ms per array, 16 ms per flush of the
    demo CNN). The bytes of a document differ between lengths only in that number, so they are
    encoded once by zarr (``metadata.update_shape(...).to_buffer_dict``) around a sentinel.
    """

    def __init__(self) -> None:
        self._parts: dict[str, tuple[bytes, bytes] | None] = {}

    def document(self, arr: zarr.Array, n: int) -> bytes | None:
        """Return the ``zarr.json`` bytes of ``arr`` grown to ``n`` (None: use zarr's resize)."""
        if arr.path not in self._parts:
            meta = arr._async_array.metadata.update_shape((_SENTINEL, *arr.shape[1:]))
            parts = metadata_document(meta).split(str(_SENTINEL).encode())
            self._parts[arr.path] = (parts[0], parts[1]) if len(parts) == 2 else None
        found = self._parts[arr.path]
        return None if found is None else found[0] + str(int(n)).encode() + found[1]


def grow(
    arrays: Sequence[zarr.Array],
    n: int,
    *,
    folder: Path | None = None,
    templates: ShapeTemplates | None = None,
    write_files: Callable[[list[tuple[Path, bytes]]], None] | None = None,
) -> None:
    """Grow every array's stored shape to ``n`` frames, all metadata writes at once.

    Writing every document in one go keeps the moment when one group's arrays differ in
    length (plain xarray then refuses to open the group; it never shows unwritten frames) as
    short as possible. With ``folder`` (the local store's root), ``templates`` and
    ``write_files`` (atomic writes of ``(path, bytes)`` pairs, e.g.
    :meth:`netphys.io._chunks.ChunkWriter.replace_files`), the documents come from
    :class:`ShapeTemplates`; other arrays use zarr's resize (concurrently).
    """
    todo = [a for a in arrays if a.shape[0] < n]
    if folder is not None and templates is not None and write_files is not None:
        docs = [(a, templates.document(a, n)) for a in todo]
        write_files([(folder / a.path / "zarr.json", doc) for a, doc in docs if doc is not None])
        for a, doc in docs:
            if doc is not None:  # the handle now sees the length on disk
                meta = a._async_array.metadata.update_shape((n, *a.shape[1:]))
                object.__setattr__(a._async_array, "metadata", meta)
        todo = [a for a, doc in docs if doc is None]
    if not todo:
        return

    async def grow_all() -> None:
        await asyncio.gather(*(a._async_array.resize((n, *a.shape[1:])) for a in todo))

    sync(grow_all())


def field_node(name: str, *, frames: int, chunk: int) -> Node:
    """Return the root array ``name`` of the per-frame table (time chunk ``chunk``)."""
    dtype, fill = STORED_FIELDS.get(name, FRAME_FIELDS[name])
    return array_node(
        name,
        shape=(frames,),
        dtype=dtype,
        chunks=(chunk,),
        fill_value=fill,
        dimension_names=("time",),
        compressors=compressor(),
        attributes=dict(FIELD_ATTRS[name]),
    )


def layer_nodes(
    name: str,
    unit_coords: Mapping[str, np.ndarray],
    n_units: int,
    n_nodes: int,
    dtype: str,
    attrs: Mapping[str, Any],
    *,
    frames: int,
    chunk_frames: int,
    compression: str,
) -> list[Node]:
    """Return one layer's group and its arrays: activity, nodes and unit coordinates."""
    key = f"{LAYERS}/{name}"
    itemsize = np.dtype(dtype).itemsize
    nodes = [
        group_node(key, json_safe(dict(attrs))),
        array_node(
            f"{key}/activity",
            shape=(frames, n_units),
            dtype=dtype,
            chunks=(chunk_frames, unit_chunk(n_units, chunk_frames, itemsize)),
            chunk_key_encoding=FLAT_CHUNK_KEYS,
            fill_value=float("nan"),
            dimension_names=("time", "unit"),
            compressors=compressor(compression, activity=True),
            attributes={
                "long_name": "unit activity (module output)",
                "units": "a.u.",
                "coordinates": " ".join(UNIT_COORDS),
            },
        ),
        array_node(
            f"{key}/nodes",
            shape=(frames, n_nodes),
            dtype="float32",
            chunks=(chunk_frames, unit_chunk(n_nodes, chunk_frames, 4)),
            chunk_key_encoding=FLAT_CHUNK_KEYS,
            fill_value=float("nan"),
            dimension_names=("time", "node"),
            compressors=compressor(),
            attributes={
                "long_name": "node activity (channel spatial mean of the module output)",
                "units": "a.u.",
                "cell_methods": "space: mean",
            },
        ),
        array_node(
            f"{key}/node",
            data=np.arange(n_nodes, dtype="int64"),
            dimension_names=("node",),
            compressors=compressor(),
        ),
    ]
    nodes += [
        array_node(
            f"{key}/{coord}",
            data=np.asarray(unit_coords[coord]),
            dimension_names=("unit",),
            attributes={"units": "um"} if coord.startswith("pos_") else {},
            compressors=compressor(),  # lz4: zarr's default zstd costs far more CPU
        )
        for coord in UNIT_COORDS
    ]
    return nodes


def write_graph_pair(root: zarr.Group, session: int, pre: str, post: str, w: np.ndarray) -> None:
    """Append the weights ``w`` of one session to the ``graph/<pre>--<post>`` group.

    A session already there keeps its weights if they are equal; other weights under a reused
    session id are refused (they belong to another checkpoint).
    """
    key = f"{GRAPH}/{pre}--{post}"
    if key not in root:
        g = root.create_group(key, attributes={"pre_layer": pre, "post_layer": post})
        g.create_array(
            "weight",
            shape=(0, *w.shape),
            dtype="float32",
            chunks=(1, *w.shape),
            fill_value=float("nan"),
            dimension_names=("checkpoint", "post_node", "pre_node"),
            attributes={"long_name": "static node-to-node weight (BatchNorm folded)"},
        )
        g.create_array(
            "checkpoint",
            shape=(0,),
            dtype="int64",
            chunks=(1024,),
            fill_value=-1,
            dimension_names=("checkpoint",),
        )
    g = group_at(root, key)
    weight = array_at(g, "weight")
    if weight.shape[1:] != w.shape:
        raise RecordingError(
            f"Recorder: weights {pre}->{post} have shape {w.shape}, expected {weight.shape[1:]}."
        )
    ckpt = array_at(g, "checkpoint")
    existing = np.asarray(ckpt[:]) if ckpt.shape[0] else np.zeros(0, "int64")
    if session in existing:
        old = np.asarray(weight[int(np.flatnonzero(existing == session)[0])])
        if not np.array_equal(old, w, equal_nan=True):
            raise RecordingError(
                f"Recorder: session {session} already has other node weights {pre}->{post} "
                "in this recording (the model changed but the session id was reused); its "
                "weights would be lost. Start a new session: `rec.session()` (next id) or "
                "`record(..., session=None)`."
            )
        return
    k = ckpt.shape[0]
    wide(weight, k + 1)[k] = w
    wide(ckpt, k + 1)[k] = session
    weight.resize((k + 1, *w.shape))
    ckpt.resize((k + 1,))


def behaviour_nodes(width: int, *, frames: int, chunk_frames: int) -> list[Node]:
    """Return the behaviour group and its four arrays (model outputs of ``width`` values)."""
    nodes = [
        group_node(BEHAVIOUR),
        array_node(
            f"{BEHAVIOUR}/logits",
            shape=(frames, width),
            dtype="float32",
            chunks=(chunk_frames, min(width, 4096)),
            chunk_key_encoding=FLAT_CHUNK_KEYS,
            fill_value=float("nan"),
            dimension_names=("time", "output"),
            attributes={"long_name": "model output (logits)"},
            compressors=compressor(),
        ),
    ]
    for name, dtype, fill, long_name in (
        ("prediction", "int64", -1, "argmax of the output"),
        ("confidence", "float32", float("nan"), "max softmax probability"),
        ("loss", "float32", float("nan"), "cross-entropy to the label (NaN: no label)"),
    ):
        nodes.append(
            array_node(
                f"{BEHAVIOUR}/{name}",
                shape=(frames,),
                dtype=dtype,
                chunks=(chunk_frames,),  # one block per chunk: written directly
                fill_value=fill,
                dimension_names=("time",),
                attributes={"long_name": long_name},
                compressors=compressor(),
            )
        )
    return nodes
