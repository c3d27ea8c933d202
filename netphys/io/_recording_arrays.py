"""Array-level pieces of the writer: layer groups, graph weights, and the commit primitives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.array import AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from netphys.errors import RecordingError
from netphys.io._recording_layout import (
    ARRAY_CONFIG,
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
    "behaviour_coroutine",
    "field_coroutine",
    "grow",
    "layer_coroutine",
    "metadata_document",
    "run_all",
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
    return zarr.Array(AsyncArray(metadata=meta, store_path=a.store_path, config=a.config))


def metadata_document(meta: Any) -> bytes:
    """Return the ``zarr.json`` bytes zarr writes for array or group metadata ``meta``."""
    return bytes(meta.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes())


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


def run_all(coros: Sequence[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Run zarr coroutines concurrently in zarr's event loop (one round trip for all)."""

    async def gather() -> list[Any]:
        return list(await asyncio.gather(*coros))

    return list(sync(gather()))


def field_coroutine(
    root: zarr.Group, name: str, *, frames: int, chunk: int, overwrite: bool = False
) -> Coroutine[Any, Any, Any]:
    """Coroutine creating the root array ``name`` of the per-frame table (time chunk ``chunk``)."""
    dtype, fill = STORED_FIELDS.get(name, FRAME_FIELDS[name])
    return root._async_group.create_array(
        name,
        shape=(frames,),
        dtype=dtype,
        chunks=(chunk,),
        fill_value=fill,
        dimension_names=("time",),
        compressors=compressor(),
        config=ARRAY_CONFIG,
        attributes=dict(FIELD_ATTRS[name]),
        overwrite=overwrite,
    )


async def layer_coroutine(
    root: zarr.Group,
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
) -> None:
    """Create one layer's group: activity, nodes and unit coordinates, arrays concurrently."""
    g = await root._async_group.create_group(f"{LAYERS}/{name}", attributes=json_safe(dict(attrs)))
    itemsize = np.dtype(dtype).itemsize
    todo = [
        g.create_array(
            "activity",
            shape=(frames, n_units),
            dtype=dtype,
            chunks=(chunk_frames, unit_chunk(n_units, chunk_frames, itemsize)),
            chunk_key_encoding=FLAT_CHUNK_KEYS,
            fill_value=float("nan"),
            dimension_names=("time", "unit"),
            compressors=compressor(compression, activity=True),
            config=ARRAY_CONFIG,
            attributes={
                "long_name": "unit activity (module output)",
                "units": "a.u.",
                "coordinates": " ".join(UNIT_COORDS),
            },
        ),
        g.create_array(
            "nodes",
            shape=(frames, n_nodes),
            dtype="float32",
            chunks=(chunk_frames, unit_chunk(n_nodes, chunk_frames, 4)),
            chunk_key_encoding=FLAT_CHUNK_KEYS,
            fill_value=float("nan"),
            dimension_names=("time", "node"),
            compressors=compressor(),
            config=ARRAY_CONFIG,
            attributes={
                "long_name": "node activity (channel spatial mean of the module output)",
                "units": "a.u.",
                "cell_methods": "space: mean",
            },
        ),
        g.create_array(
            "node",
            data=np.arange(n_nodes, dtype="int64"),
            dimension_names=("node",),
            compressors=compressor(),
        ),
    ]
    for key in UNIT_COORDS:
        values = np.asarray(unit_coords[key])
        attrs_c: dict[str, Any] = {"units": "um"} if key.startswith("pos_") else {}
        todo.append(
            g.create_array(
                key,
                data=values,
                dimension_names=("unit",),
                attributes=attrs_c,
                compressors=compressor(),  # lz4: zarr's default zstd costs far more CPU
            )
        )
    await asyncio.gather(*todo)


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


async def behaviour_coroutine(
    root: zarr.Group, width: int, *, frames: int, chunk_frames: int
) -> None:
    """Create the behaviour group, then its four arrays concurrently."""
    g = await root._async_group.create_group(BEHAVIOUR)
    opts: dict[str, Any] = {"compressors": compressor(), "config": ARRAY_CONFIG}
    todo = [
        g.create_array(
            "logits",
            shape=(frames, width),
            dtype="float32",
            chunks=(chunk_frames, min(width, 4096)),
            chunk_key_encoding=FLAT_CHUNK_KEYS,
            fill_value=float("nan"),
            dimension_names=("time", "output"),
            attributes={"long_name": "model output (logits)"},
            **opts,
        )
    ]
    for name, dtype, fill, long_name in (
        ("prediction", "int64", -1, "argmax of the output"),
        ("confidence", "float32", float("nan"), "max softmax probability"),
        ("loss", "float32", float("nan"), "cross-entropy to the label (NaN: no label)"),
    ):
        todo.append(
            g.create_array(
                name,
                shape=(frames,),
                dtype=dtype,
                chunks=(chunk_frames,),  # one block per chunk: written directly
                fill_value=fill,
                dimension_names=("time",),
                attributes={"long_name": long_name},
                **opts,
            )
        )
    await asyncio.gather(*todo)
