"""Zarr nodes of a recording as metadata objects: built without I/O, written in one pass.

zarr's ``create_array`` / ``create_group`` run every node through its event loop (parent
checks, per-node coroutines and tasks, a store round trip per document): 65 ms of CPU for the
~45 arrays of the demo CNN, and twice that beside a running model (the GIL). The documents
themselves are cheap: the same metadata objects built directly (zarr's own
``ArrayV3Metadata`` / ``GroupMetadata``, its dtype and codec parsing, its chunk partition)
and encoded by zarr (:func:`metadata_document`) take ~9 ms. The helpers used are zarr's
private ones (``_parse_chunk_encoding_v3``, ``_auto_partition``, ``_create_metadata_v3``,
``_build_metadata_v3``), present in zarr 3.1.3 and 3.1.6 (both tested).
:func:`write_nodes` then writes the documents atomically and the coordinate values through
:class:`netphys.io._chunks.ChunkWriter`; :func:`consolidate` reads the store's documents back
without zarr's event loop and writes the consolidated root document once.

Every document is the one zarr writes for the same arguments: ``tests/io/test_nodes.py``
compares them byte for byte with ``create_array`` / ``create_group`` and the consolidated root
with ``zarr.consolidate_metadata`` (a zarr release that changes either fails there).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.array import AsyncArray, _parse_chunk_encoding_v3
from zarr.core.buffer import default_buffer_prototype
from zarr.core.chunk_grids import _auto_partition
from zarr.core.dtype import parse_data_type
from zarr.core.group import ConsolidatedMetadata, GroupMetadata, _build_metadata_v3
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.storage import StorePath

from netphys.io._chunks import ChunkWriter, write_arrays, write_file
from netphys.io._recording_layout import ARRAY_CONFIG

__all__ = [
    "Node",
    "array_node",
    "consolidate",
    "group_node",
    "handle",
    "metadata_document",
    "write_nodes",
]


@dataclass(frozen=True)
class Node:
    """One array or group of a store: its key, its metadata and (arrays) its whole content."""

    key: str
    meta: ArrayV3Metadata | GroupMetadata
    values: np.ndarray | None = None


def metadata_document(meta: Any) -> bytes:
    """Return the ``zarr.json`` bytes zarr writes for array or group metadata ``meta``."""
    return bytes(meta.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes())


def group_node(key: str, attributes: Mapping[str, Any] | None = None) -> Node:
    """Return the group ``key`` with ``attributes`` (what ``create_group`` stores)."""
    return Node(key, GroupMetadata(attributes=dict(attributes or {}), zarr_format=3))


def array_node(
    key: str,
    *,
    shape: Sequence[int] | None = None,
    dtype: Any = None,
    chunks: Sequence[int] | None = None,
    fill_value: Any = None,
    dimension_names: Sequence[str] | None = None,
    compressors: Any = "auto",
    attributes: Mapping[str, Any] | None = None,
    chunk_key_encoding: Mapping[str, Any] | None = None,
    data: np.ndarray | None = None,
) -> Node:
    """Return the array ``key`` as ``create_array`` with the same arguments would store it.

    With ``data``, its shape and dtype are the data's, the chunks zarr's automatic ones
    (unless given) and the fill value the dtype's default; :func:`write_nodes` writes the
    values.
    """
    if data is not None:
        data = np.asarray(data)
        shape, dtype = data.shape, data.dtype
    if shape is None or dtype is None:
        raise ValueError("internal: an array node needs `shape` and `dtype`, or `data`")
    zdtype = parse_data_type(dtype, zarr_format=3)
    shape = tuple(int(s) for s in shape)
    if chunks is None:
        item = int(getattr(zdtype, "item_size", 1))
        _, chunks = _auto_partition(
            array_shape=shape, chunk_shape="auto", shard_shape=None, item_size=item
        )
    filters, serializer, codecs = _parse_chunk_encoding_v3(
        compressors=compressors, filters="auto", serializer="auto", dtype=zdtype
    )
    meta = AsyncArray._create_metadata_v3(
        shape=shape,
        dtype=zdtype,
        chunk_shape=tuple(int(c) for c in chunks),
        fill_value=fill_value,
        chunk_key_encoding=dict(chunk_key_encoding) if chunk_key_encoding else None,
        codecs=(*filters, serializer, *codecs),
        dimension_names=tuple(dimension_names) if dimension_names else None,
        attributes=dict(attributes or {}),
    )
    return Node(key, meta, data)


def handle(store_path: StorePath, meta: Any, *, config: Any = ARRAY_CONFIG) -> zarr.Array:
    """Return a zarr array handle on ``store_path`` that knows ``meta`` (no read)."""
    return zarr.Array(AsyncArray(metadata=meta, store_path=store_path, config=config))


def write_nodes(
    folder: Path, store_path: StorePath, nodes: Sequence[Node], writer: ChunkWriter | None
) -> dict[str, zarr.Array]:
    """Write the documents of ``nodes`` below the store ``folder`` and their values; wait.

    ``store_path`` is the store's root (for the returned handles); ``writer`` writes the
    values' chunks (without one, and for strings and other codecs, zarr writes them). Every
    document is written atomically, parents before children (missing folders are made by
    :func:`netphys.io._chunks.write_file`); a group whose document exists keeps it (its
    attributes stay). Returns a handle per array key.
    """
    handles: dict[str, zarr.Array] = {}
    for node in sorted(nodes, key=lambda n: n.key.count("/")):
        target = folder / node.key / "zarr.json"
        if isinstance(node.meta, GroupMetadata) and target.exists():
            continue
        write_file(target, metadata_document(node.meta), root=folder)
        if isinstance(node.meta, ArrayV3Metadata):
            handles[node.key] = handle(store_path / node.key, node.meta)
    # values through zarr's default config: like create_array(data=...), no all-fill chunks
    valued = [
        (handle(store_path / n.key, n.meta, config=None), n.values)
        for n in nodes
        if n.values is not None and n.values.size
    ]
    write_arrays(writer, valued, 0)
    return handles


def _read_members(folder: Path, prefix: str, out: dict[str, Any]) -> None:
    """Add every node below the group at ``folder`` (key prefix ``prefix``) to ``out``."""
    for name in sorted(os.listdir(folder)):
        doc = folder / name / "zarr.json"
        try:
            text = doc.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            continue  # a file, or a folder that is no node (zarr skips both)
        meta = _build_metadata_v3(json.loads(text))
        key = f"{prefix}{name}"
        if isinstance(meta, GroupMetadata) and meta.consolidated_metadata is None:
            # as zarr.consolidate_metadata marks groups (their members are nested in later)
            meta = dataclasses.replace(meta, consolidated_metadata=ConsolidatedMetadata({}))
        out[key] = meta
        if isinstance(meta, GroupMetadata):
            _read_members(folder / name, f"{key}/", out)


def consolidate(folder: Path, root: GroupMetadata) -> GroupMetadata:
    """Write the root document ``root`` of the store ``folder`` with consolidated metadata.

    What ``zarr.consolidate_metadata`` writes (the members in sorted order), with the root's
    own attributes taken from ``root`` (so a final attribute update and the consolidation
    are one atomic write). Returns the metadata written.
    """
    members: dict[str, Any] = {}
    _read_members(folder, "", members)
    ConsolidatedMetadata._flat_to_nested(members)
    meta = dataclasses.replace(root, consolidated_metadata=ConsolidatedMetadata(metadata=members))
    write_file(folder / "zarr.json", metadata_document(meta), root=folder)
    return meta
