"""Nodes built as metadata objects: the documents, chunks and consolidation zarr itself writes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from zarr.storage import LocalStore, MemoryStore, StorePath

import netphys
from netphys.experiments._models import DemoCNN
from netphys.io import _nodes
from netphys.io._chunks import ChunkWriter
from netphys.io._recording_arrays import behaviour_nodes, field_node, layer_nodes
from netphys.io._recording_layout import FLAT_CHUNK_KEYS, FRAME_FIELDS, UNIT_COORDS, compressor

ARRAYS = {  # create_array's arguments, as the recorder passes them
    "activity": {
        "shape": (0, 3000),
        "dtype": "float16",
        "chunks": (512, 1024),
        "fill_value": float("nan"),
        "dimension_names": ("time", "unit"),
        "compressors": compressor("lz4", activity=True),
        "chunk_key_encoding": FLAT_CHUNK_KEYS,
        "attributes": {"long_name": "unit activity", "units": "a.u."},
    },
    "table": {
        "shape": (0,),
        "dtype": "int64",
        "chunks": (1024,),
        "fill_value": -1,
        "dimension_names": ("time",),
        "compressors": compressor(),
        "attributes": {"long_name": "label"},
    },
    "uncompressed": {
        "shape": (7, 5),
        "dtype": "float32",
        "chunks": (7, 5),
        "fill_value": 0.0,
        "dimension_names": ("time", "output"),
        "compressors": None,
    },
}
ARRAYS["zstd"] = {  # activity in another dtype and codec
    **ARRAYS["activity"],
    "shape": (0, 10),
    "dtype": "float64",
    "chunks": (64, 10),
    "compressors": compressor("zstd", activity=True),
}

VALUES = {  # create_array(data=...) for the coordinates: zarr picks chunks and fill value
    "small int": np.arange(37, dtype="int64"),
    "float": np.linspace(-1, 1, 300, dtype="float32"),
    "all zero": np.zeros(50, "int64"),  # one chunk of the fill value: no chunk object
    "large": np.arange(600_000, dtype="int64") % 7,  # zarr splits it into several chunks
}


def _zarr_store(create) -> dict[str, bytes]:
    store: dict = {}
    root = zarr.open_group(MemoryStore(store), mode="w", zarr_format=3)
    create(root)
    return {k: v.to_bytes() for k, v in store.items() if k != "zarr.json"}


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() != "zarr.json"
    }


def _write(tmp_path: Path, nodes: list, *, direct: bool) -> dict[str, bytes]:
    folder = tmp_path / "s.zarr"
    folder.mkdir()
    (folder / "zarr.json").write_bytes(_nodes.metadata_document(_nodes.group_node("").meta))
    writer = ChunkWriter(folder) if direct else None
    try:
        _nodes.write_nodes(folder, StorePath(LocalStore(folder)), nodes, writer)
    finally:
        if writer is not None:
            writer.close()
    return _files(folder)


@pytest.mark.parametrize("name", list(ARRAYS))
def test_array_documents_are_the_ones_zarr_writes(name):
    kwargs = ARRAYS[name]
    expected = _zarr_store(lambda root: root.create_array("a", **kwargs))
    node = _nodes.array_node("a", **kwargs)
    assert _nodes.metadata_document(node.meta) == expected["a/zarr.json"]


@pytest.mark.parametrize("direct", [True, False], ids=["chunk writer", "zarr"])
@pytest.mark.parametrize("name", list(VALUES))
def test_arrays_with_values_are_stored_as_zarr_stores_them(tmp_path, name, direct):
    values = VALUES[name]
    opts = {"dimension_names": ("unit",), "compressors": compressor(), "attributes": {"u": 1}}
    expected = _zarr_store(lambda root: root.create_array("c", data=values, **opts))
    got = _write(tmp_path, [_nodes.array_node("c", data=values, **opts)], direct=direct)
    assert got == expected  # the document and every chunk object, byte for byte
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "s.zarr" / "c")[:], values)


def test_a_layer_is_stored_as_zarr_creates_it(tmp_path):
    rng = np.random.default_rng(0)
    coords = {k: rng.integers(0, 9, 200) for k in UNIT_COORDS}
    coords["pos_x"] = rng.random(200).astype("float32")
    attrs = {"module": "features.0", "shape": [2, 10, 10]}
    nodes = layer_nodes("L", coords, 200, 2, "float16", attrs, frames=0, chunk_frames=64,
                        compression="lz4")  # fmt: skip

    def reference(root):  # the slow, obvious way: one zarr call per node
        g = root.create_group("layers/L", attributes=attrs)
        for node in nodes[1:]:
            name = node.key.rsplit("/", 1)[1]
            if node.values is not None:
                g.create_array(
                    name,
                    data=node.values,
                    dimension_names=node.meta.dimension_names,
                    attributes=node.meta.attributes,
                    compressors=compressor(),
                )
                continue
            g.create_array(
                name,
                shape=node.meta.shape,
                dtype=node.meta.dtype.to_native_dtype(),
                chunks=node.meta.chunks,
                fill_value=node.meta.fill_value,
                dimension_names=node.meta.dimension_names,
                compressors=compressor("lz4", activity=name == "activity"),
                chunk_key_encoding=FLAT_CHUNK_KEYS,
                attributes=node.meta.attributes,
            )

    expected = {k: v for k, v in _zarr_store(reference).items() if k != "layers/zarr.json"}
    assert _write(tmp_path, nodes, direct=True) == expected
    assert {n.key.rsplit("/", 1)[1] for n in nodes[1:]} == {"activity", "nodes", "node", *coords}


def test_table_and_behaviour_nodes_match_their_zarr_documents():
    for name in FRAME_FIELDS:
        node = field_node(name, frames=0, chunk=256)
        kw = {
            "shape": (0,),
            "dtype": node.meta.dtype.to_native_dtype(),
            "chunks": (256,),
            "fill_value": node.meta.fill_value,
            "dimension_names": ("time",),
            "compressors": compressor(),
            "attributes": node.meta.attributes,
        }
        expected = _zarr_store(lambda root, kw=kw, name=name: root.create_array(name, **kw))
        assert _nodes.metadata_document(node.meta) == expected[f"{name}/zarr.json"], name
    group, *arrays = behaviour_nodes(10, frames=0, chunk_frames=256)
    expected = _zarr_store(lambda root: root.create_group("behaviour"))
    assert _nodes.metadata_document(group.meta) == expected["behaviour/zarr.json"]
    assert [a.meta.shape for a in arrays] == [(0, 10), (0,), (0,), (0,)]


def _record(path: Path, frames: int = 48) -> None:
    torch.manual_seed(0)
    model = DemoCNN().eval()
    with torch.no_grad(), netphys.Recorder(model, path, chunk_frames=16, mode="w") as rec:
        for s in range(0, frames, 16):
            rec.annotate(stimulus=np.arange(s, s + 16))
            model(torch.randn(16, 1, 8, 8))


def test_consolidation_is_zarrs(tmp_path):
    path = tmp_path / "r.zarr"
    _record(path)
    ours = json.loads((path / "zarr.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: consolidated metadata is outside the v3 spec
        zarr.consolidate_metadata(path)
    theirs = json.loads((path / "zarr.json").read_text())
    assert ours == theirs  # zarr lists members in the order they load; netphys sorts them
    members = ours["consolidated_metadata"]["metadata"]
    assert "layers/act1/activity" in members and members["session"]["shape"] == [48]
    assert ours["attributes"]["status"] == "complete"
    assert ours["attributes"]["frames_committed"] == 48
    tree = xr.open_datatree(path, engine="zarr")  # plain xarray, through the consolidated doc
    assert tree["layers/act1"]["activity"].shape[0] == 48


def test_consolidation_skips_what_is_no_node(tmp_path):
    folder = tmp_path / "s.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a node")
    (folder / "empty").mkdir()
    store = StorePath(LocalStore(folder))
    root = _nodes.group_node("", {"a": 1})
    nodes = [_nodes.group_node("g", {"b": 2}), _nodes.array_node("g/x", data=np.arange(4))]
    _nodes.write_nodes(folder, store, nodes, None)
    meta = _nodes.consolidate(folder, root.meta)
    assert set(meta.consolidated_metadata.metadata) == {"g"}  # nested: g holds x
    doc = json.loads((folder / "zarr.json").read_text())
    assert set(doc["consolidated_metadata"]["metadata"]) == {"g", "g/x"}
    assert doc["attributes"] == {"a": 1}
    group = zarr.open_group(folder, mode="r")  # zarr reads the consolidated members
    np.testing.assert_array_equal(group["g/x"][:], np.arange(4))


def test_an_array_node_without_shape_or_data_is_refused():
    with pytest.raises(ValueError, match=r"shape.*dtype.*data"):
        _nodes.array_node("a", dtype="int64")
