"""Direct chunk writes produce exactly the chunks zarr writes, and zarr/xarray read them."""

from __future__ import annotations

import errno
import json
import os
import threading

import numpy as np
import pytest
import zarr

from netphys.io import _chunks
from netphys.io._recording_layout import compressor as _compressor


def _o_direct_works(folder) -> bool:
    """Whether this OS and file system take an O_DIRECT write (tmpfs and macOS do not)."""
    buf = _chunks.aligned_buffer(threading.local(), 1)
    return _chunks.write_direct(folder / "probe", buf, 1)


@pytest.mark.parametrize("dtype", ["float16", "float32", "int64"])
@pytest.mark.parametrize("compression", ["lz4", "zstd", "none"])
@pytest.mark.parametrize("direct_io", [True, False])
def test_direct_chunks_equal_zarr_chunks(tmp_path, monkeypatch, dtype, compression, direct_io):
    monkeypatch.setattr(_chunks, "DIRECT_MIN", 1)  # every chunk through O_DIRECT if on
    calls = []
    real = _chunks.write_direct
    monkeypatch.setattr(_chunks, "write_direct", lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = np.random.default_rng(0)
    values = (rng.standard_normal((13, 37)) * 100).astype(dtype)  # edge chunks on both axes
    arrays = {}
    for name in ("zarr", "direct"):
        arrays[name] = zarr.create_array(
            tmp_path / f"{name}.zarr", shape=(13, 37), chunks=(5, 16), dtype=dtype,
            fill_value=0, compressors=_compressor(compression), zarr_format=3,
            config={"write_empty_chunks": True},
        )  # fmt: skip
    for t0 in range(0, 13, 5):
        arrays["zarr"][t0 : t0 + 5] = values[t0 : t0 + 5]
    writer = _chunks.ChunkWriter(tmp_path / "direct.zarr", direct_io=direct_io)
    _chunks.write_arrays(writer, [(arrays["direct"], values[:10])], 0)  # two chunks at once
    _chunks.write_arrays(writer, [(arrays["direct"], values[10:])], 10)  # a partial last one
    writer.close()
    got = zarr.open_array(tmp_path / "direct.zarr", mode="r")[:]
    np.testing.assert_array_equal(got, values)
    files = sorted(
        p.relative_to(tmp_path / "zarr.zarr") for p in (tmp_path / "zarr.zarr").rglob("c/*/*")
    )
    assert len(files) == 3 * 3
    for f in files:
        assert (tmp_path / "direct.zarr" / f).read_bytes() == (
            tmp_path / "zarr.zarr" / f
        ).read_bytes()
    # O_DIRECT was tried for every chunk when on (and kept where the file system takes it)
    assert len(calls) == (9 if direct_io and writer.direct_io else 1 if direct_io else 0)
    assert not list((tmp_path / "direct.zarr").rglob("*.partial"))


def test_o_direct_writes_exact_files_through_an_aligned_buffer(tmp_path):
    if not _o_direct_works(tmp_path):
        pytest.skip("this file system refuses O_DIRECT (the fallback is tested below)")
    local = threading.local()
    rng = np.random.default_rng(1)
    for n in (1, 4095, 4096, 4097, (1 << 20) + 3):
        data = rng.integers(0, 256, n, dtype=np.uint8)
        buf = _chunks.aligned_buffer(local, n)
        assert buf.ctypes.data % 4096 == 0 and len(buf) % 4096 == 0 and len(buf) >= n
        buf[:n] = data
        assert _chunks.write_direct(tmp_path / f"f{n}", buf, n)
        assert (tmp_path / f"f{n}").read_bytes() == data.tobytes()  # truncated to n bytes
    assert _chunks.aligned_buffer(local, 10).ctypes.data == buf.ctypes.data  # reused
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["probe"] + [f"f{n}" for n in (1, 4095, 4096, 4097, (1 << 20) + 3)]
    )


def _refuse_o_direct(monkeypatch, err: int):
    real_open = os.open

    def fake_open(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(err, os.strerror(err), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(_chunks.os, "open", fake_open)
    monkeypatch.setattr(_chunks, "_O_DIRECT", 0o40000)  # as on Linux, also where it is absent


def test_refused_o_direct_falls_back_to_the_page_cache(tmp_path, monkeypatch):
    _refuse_o_direct(monkeypatch, errno.EINVAL)
    monkeypatch.setattr(_chunks, "DIRECT_MIN", 1)
    a = zarr.create_array(
        tmp_path / "a.zarr", shape=(8, 6), chunks=(4, 3), dtype="float32", zarr_format=3,
        compressors=None,
    )  # fmt: skip
    values = np.arange(48, dtype="float32").reshape(8, 6)
    writer = _chunks.ChunkWriter(tmp_path / "a.zarr", direct_io=True)
    assert writer.direct_io
    _chunks.write_arrays(writer, [(a, values)], 0)
    writer.close()
    assert not writer.direct_io  # refused once: ordinary writes from then on
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr", mode="r")[:], values)
    assert not list((tmp_path / "a.zarr").rglob("*.partial"))


def test_o_direct_errors_other_than_refusal_are_raised(tmp_path, monkeypatch):
    _refuse_o_direct(monkeypatch, errno.EACCES)
    buf = _chunks.aligned_buffer(threading.local(), 10)
    with pytest.raises(PermissionError):
        _chunks.write_direct(tmp_path / "f", buf, 10)
    assert not list(tmp_path.iterdir())


def test_unaligned_start_goes_through_zarr(tmp_path):
    a = zarr.create_array(
        tmp_path / "a.zarr", shape=(10,), chunks=(4,), dtype="float32", zarr_format=3
    )
    writer = _chunks.ChunkWriter(tmp_path / "a.zarr")
    _chunks.write_arrays(writer, [(a, np.arange(4, dtype="float32"))], 0)
    _chunks.write_arrays(writer, [(a, np.arange(4, 10, dtype="float32"))], 4)
    _chunks.write_arrays(writer, [(a, np.full(3, 7, "float32"))], 5)  # mid-chunk: zarr's path
    writer.close()
    np.testing.assert_array_equal(a[:], [0, 1, 2, 3, 4, 7, 7, 7, 8, 9])


def test_block_larger_than_a_chunk_is_refused(tmp_path):
    a = zarr.create_array(
        tmp_path / "a.zarr",
        shape=(8, 3),
        chunks=(4, 3),
        dtype="float32",
        zarr_format=3,
        compressors=None,
    )
    writer = _chunks.ChunkWriter(tmp_path / "a.zarr")
    spec = writer.spec(a)
    assert spec is not None
    with pytest.raises(ValueError, match="does not fit chunk"):
        writer.write([(spec, np.zeros((5, 3), "float32"), 0)])
    writer.close()


def test_other_codecs_keep_zarrs_write_path(tmp_path):
    a = zarr.create_array(tmp_path / "a.zarr", shape=(4,), chunks=(4,), dtype="float32")
    assert _chunks.direct_spec(tmp_path / "a.zarr", a) is None  # zarr's default zstd codec


def test_recorder_writes_whole_chunks_directly_before_growing_shapes(tmp_path, monkeypatch):
    """The writer's flushes go through the direct path, never resize, and commit by shape.

    Also across ``mode="w"``: the new store is written beside the old one and swapped in at its
    first commit, after which direct writes must land in the swapped-in store.
    """
    import torch

    import netphys

    path = tmp_path / "r.zarr"
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU()).eval()

    def run(scale: float) -> None:
        with netphys.Recorder(model, path, layers=["1"], chunk_frames=16, writer="inline",
                              mode="w", store_weights=False) as rec:  # fmt: skip
            for k in range(3):
                rec.annotate(stimulus=torch.arange(k * 16, k * 16 + 16))
                with torch.no_grad():
                    model(torch.ones(16, 6) * scale * torch.arange(k * 16, k * 16 + 16)[:, None])

    run(1.0)
    seen: list[tuple[int, int]] = []
    real_chunks = _chunks.ChunkWriter.write

    def chunks_before_shape(self, items):
        for spec, _, _ in items:  # the stored shape has not grown yet when chunks are written
            meta = json.loads((spec.folder / "zarr.json").read_text())
            if meta["dimension_names"][0] == "time":  # (not the coordinates' values)
                seen.append((meta["shape"][0], spec.chunks[0]))
        return real_chunks(self, items)

    monkeypatch.setattr(_chunks.ChunkWriter, "write", chunks_before_shape)
    run(2.0)
    assert seen and {s for s, _ in seen} == {0, 16, 32} and {c for _, c in seen} == {16}
    tree = netphys.open_recording(path)
    x = torch.ones(48, 6) * 2.0 * torch.arange(48)[:, None]
    with torch.no_grad():
        np.testing.assert_array_equal(netphys.layer_activity(tree).values, model(x).numpy())
    assert zarr.open_array(path / "session", mode="r").chunks == (16,)  # one block per chunk
    assert not list(tmp_path.glob(".r.zarr.netphys-new-*"))  # the new store was swapped in
    assert not list(tmp_path.glob(".r.zarr.netphys-old-*"))


def test_grown_metadata_is_what_zarr_writes(tmp_path):
    """Lengths committed from metadata templates: each zarr.json byte-equal to zarr's own."""
    import torch

    import netphys
    from tests.recorder.models import CNN

    model = CNN().eval()
    path = tmp_path / "g.zarr"
    with torch.no_grad(), netphys.Recorder(model, path, layers=["act1", "act2"], chunk_frames=8):
        for _ in range(5):
            model(torch.randn(7, 1, 8, 8))
    proto = zarr.core.buffer.default_buffer_prototype()
    found = 0
    for doc in path.rglob("zarr.json"):
        node = zarr.open(doc.parent, mode="r", zarr_format=3, use_consolidated=False)
        if isinstance(node, zarr.Array) and node.metadata.dimension_names[0] == "time":
            want = node.metadata.to_buffer_dict(proto)["zarr.json"].to_bytes()
            assert doc.read_bytes() == want, doc
            assert node.shape[0] == 35
            found += 1
    assert found >= 2 * 2 + 4 + 9  # activity + nodes per layer, behaviour, the frame table


def test_o_direct_write_makes_folders_below_the_store_but_never_the_store(tmp_path):
    if not _o_direct_works(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    buf = _chunks.aligned_buffer(threading.local(), 5)
    buf[:5] = np.frombuffer(b"chunk", np.uint8)
    root = tmp_path / "store.zarr"
    root.mkdir()
    assert _chunks.write_direct(root / "a" / "c" / "0", buf, 5, root=root)
    assert (root / "a" / "c" / "0").read_bytes() == b"chunk"
    gone = tmp_path / "deleted.zarr"  # a store deleted under the writer is not recreated
    with pytest.raises(FileNotFoundError):
        _chunks.write_direct(gone / "a" / "c" / "0", buf, 5, root=gone)
    assert not gone.exists()


def _exchange_works(folder) -> bool:
    """Whether renameat2(RENAME_EXCHANGE) works here (Linux, glibc >= 2.28, ext4/xfs/tmpfs...)."""
    a = folder / "probe"
    a.write_bytes(b"a")
    return _chunks.exchange_file(a, b"b") and a.read_bytes() == b"b"


def _inodes(folder) -> set[int]:
    return {os.stat(f).st_ino for f in folder.iterdir()}


def test_replace_files_swaps_documents_without_new_inodes(tmp_path):
    if not _exchange_works(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    folder = tmp_path / "store" / "arr"
    folder.mkdir(parents=True)
    doc = folder / "zarr.json"
    doc.write_bytes(b'{"shape": [0]}')
    writer = _chunks.ChunkWriter(tmp_path / "store")
    writer.replace_files([(doc, b'{"shape": [8]}')])  # makes the spare: the last new inode
    assert doc.read_bytes() == b'{"shape": [8]}'
    spare = _chunks.spare_of(doc)
    assert spare.read_bytes() == b'{"shape": [0]}'  # the spare holds the previous document
    before = _inodes(folder)
    for n in (16, 24, 1000):
        writer.replace_files([(doc, f'{{"shape": [{n}]}}'.encode())])
        assert json.loads(doc.read_bytes()) == {"shape": [n]}
        assert _inodes(folder) == before  # swapped, nothing created or deleted
    assert writer.exchange
    writer.close()
    assert not spare.exists()  # the writer's spares go when it closes
    assert json.loads(doc.read_bytes()) == {"shape": [1000]}


def test_replace_files_falls_back_where_the_exchange_is_refused(tmp_path, monkeypatch):
    import ctypes

    def refuse(*args):
        ctypes.set_errno(errno.EINVAL)  # e.g. a file system without RENAME_EXCHANGE
        return -1

    monkeypatch.setattr(_chunks, "_renameat2", refuse)
    folder = tmp_path / "store" / "arr"
    folder.mkdir(parents=True)
    doc = folder / "zarr.json"
    doc.write_bytes(b"old")
    writer = _chunks.ChunkWriter(tmp_path / "store")
    writer.exchange = True
    writer.replace_files([(doc, b"new"), (doc, b"newer")])
    assert doc.read_bytes() == b"newer"
    assert not writer.exchange  # refused once: atomic rename from then on
    assert sorted(f.name for f in folder.iterdir()) == ["zarr.json"]  # no spare, no partial
    writer.close()


def test_exchange_errors_other_than_refusal_are_raised(tmp_path, monkeypatch):
    import ctypes

    def denied(*args):
        ctypes.set_errno(errno.EACCES)
        return -1

    monkeypatch.setattr(_chunks, "_renameat2", denied)
    doc = tmp_path / "zarr.json"
    doc.write_bytes(b"old")
    with pytest.raises(PermissionError):
        _chunks.exchange_file(doc, b"new")
    assert doc.read_bytes() == b"old"
    assert not _chunks.spare_of(doc).exists()


def test_recording_uses_flat_chunk_keys_and_leaves_no_spares(tmp_path):
    """2-D arrays along time keep chunks as ``c.<t>.<u>`` files (no folder per time chunk)."""
    import torch
    import xarray as xr

    import netphys
    from tests.recorder.models import CNN

    model = CNN().eval()
    path = tmp_path / "flat.zarr"
    x = torch.randn(40, 1, 8, 8)
    with torch.no_grad(), netphys.Recorder(model, path, layers=["act1", "act2"], chunk_frames=8):
        for s in range(0, 40, 10):
            model(x[s : s + 10])
    act = path / "layers" / "act1" / "activity"
    names = sorted(f.name for f in act.iterdir())
    assert "c" not in names and {"c.0.0", "c.4.0"} <= set(names)
    for arr in [
        *path.glob("layers/*/activity"),
        *path.glob("layers/*/nodes"),
        path / "behaviour/logits",
    ]:
        assert not (arr / "c").exists(), arr  # no folder per time chunk
    assert not list(path.rglob(f"*{_chunks.SPARE_SUFFIX}"))
    with torch.no_grad():
        want = model.act1(model.bn1(model.conv1(x))).flatten(1).numpy()
    plain = xr.open_datatree(path, engine="zarr")  # without netphys
    np.testing.assert_array_equal(plain["layers/act1"]["activity"].values, want)  # float32 exact


def test_append_to_a_store_with_nested_chunk_keys(tmp_path, monkeypatch):
    """Stores written with zarr's default ``c/<t>/<u>`` keys keep them when appended to."""
    import torch

    import netphys
    from netphys.io import _recording_arrays
    from tests.recorder.models import CNN

    model = CNN().eval()
    path = tmp_path / "nested.zarr"
    x = torch.randn(32, 1, 8, 8)
    nested = {"name": "default", "configuration": {"separator": "/"}}
    with monkeypatch.context() as m:
        m.setattr(_recording_arrays, "FLAT_CHUNK_KEYS", nested)  # as netphys <= 0.1 wrote
        with torch.no_grad(), netphys.Recorder(model, path, layers=["act1"], chunk_frames=8):
            model(x[:16])
    with torch.no_grad(), netphys.Recorder(model, path, layers=["act1"], mode="a") as rec:
        rec.session(1)
        model(x[16:])
    act = path / "layers" / "act1" / "activity"
    assert sorted(f.name for f in (act / "c").iterdir()) == ["0", "1", "2", "3"]
    assert not [f for f in act.iterdir() if f.name.startswith("c.")]
    with torch.no_grad():
        want = model.act1(model.bn1(model.conv1(x))).flatten(1).numpy()
    tree = netphys.open_recording(path)
    np.testing.assert_array_equal(netphys.layer_activity(tree, "act1").values, want)


def test_exchange_never_writes_through_a_planted_symlink(tmp_path):
    if not _exchange_works(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep me")
    doc = tmp_path / "zarr.json"
    doc.write_bytes(b"old")
    _chunks.spare_of(doc).symlink_to(victim)
    with pytest.raises(OSError, match="Too many levels of symbolic links") as info:
        _chunks.exchange_file(doc, b"new")
    assert info.value.errno == errno.ELOOP  # O_NOFOLLOW refused the link
    assert victim.read_bytes() == b"keep me"
    assert doc.read_bytes() == b"old"


@pytest.mark.parametrize("separator", ["/", "."])
def test_rank_finalize_drops_uncommitted_time_chunks_in_either_key_encoding(tmp_path, separator):
    from netphys.io._ranks_finalize import _drop_uncommitted_chunks

    arr = zarr.create_array(
        tmp_path / "a", shape=(40, 6), chunks=(10, 3), dtype="float32", zarr_format=3,
        fill_value=float("nan"),
        chunk_key_encoding={"name": "default", "configuration": {"separator": separator}},
    )  # fmt: skip
    arr[:] = np.arange(240, dtype="float32").reshape(40, 6)
    removed = _drop_uncommitted_chunks(tmp_path / "a", arr, slots={0, 2})  # 1 and 3 uncommitted
    assert removed == (2 if separator == "/" else 4)  # a folder per time chunk, or 2 files each
    values = zarr.open_array(tmp_path / "a", mode="r")[:]
    np.testing.assert_array_equal(values[:10], arr[:10])
    np.testing.assert_array_equal(values[20:30], np.arange(120, 180).reshape(10, 6))
    assert np.isnan(values[10:20]).all() and np.isnan(values[30:]).all()  # dropped: fill value


def test_replacing_a_recording_leaves_no_spares(tmp_path):
    """``mode="w"`` over a recording swaps the new store in at its first flush: spares go too."""
    import torch

    import netphys
    from tests.recorder.models import CNN

    model = CNN().eval()
    path = tmp_path / "r.zarr"
    x = torch.randn(12, 1, 8, 8)
    netphys.record(model, x, path, progress=False)
    netphys.record(model, x, path, mode="w", progress=False)  # one flush, then close
    assert not list(path.rglob(f"*{_chunks.SPARE_SUFFIX}"))
    assert netphys.open_recording(path).sizes["time"] == 12


@pytest.mark.parametrize(("dtype", "fill"), [("float32", np.nan), ("int64", -1), ("float16", 0)])
def test_chunks_of_only_the_fill_value_are_not_written(tmp_path, dtype, fill):
    """Same objects as zarr's default (``write_empty_chunks=False``), same values read back."""
    values = np.full((30, 3), fill, dtype=dtype)
    values[8:16] = np.arange(24).reshape(8, 3)  # chunk 1: data
    values[21, 2] = 7  # chunk 2: one value that is not the fill
    arrays = {}
    for name in ("zarr", "direct"):
        arrays[name] = zarr.create_array(
            tmp_path / f"{name}.zarr", shape=(30, 3), chunks=(8, 3), dtype=dtype,
            fill_value=fill, compressors=_compressor("lz4"), zarr_format=3,
            config={"write_empty_chunks": False},
        )  # fmt: skip
    arrays["zarr"][:] = values
    writer = _chunks.ChunkWriter(tmp_path / "direct.zarr")
    _chunks.write_arrays(writer, [(arrays["direct"], values)], 0)  # 3 whole chunks + 6 rows
    writer.close()

    def objects(name):
        return sorted(p.name for p in (tmp_path / name / "c").iterdir())

    assert objects("zarr.zarr") == objects("direct.zarr") == ["1", "2"]
    got = zarr.open_array(tmp_path / "direct.zarr", mode="r")[:]
    np.testing.assert_array_equal(got, values)


def test_fill_value_chunks_are_told_by_their_bits(tmp_path):
    """-0.0 against a 0.0 fill and a NaN with another payload are data, kept bit for bit."""
    arr = zarr.create_array(
        tmp_path / "a.zarr", shape=(8,), chunks=(4,), dtype="float32", fill_value=0.0,
        compressors=_compressor("lz4"), zarr_format=3,
    )  # fmt: skip
    values = np.zeros(8, np.float32)
    values[:4] = -0.0
    writer = _chunks.ChunkWriter(tmp_path / "a.zarr")
    _chunks.write_arrays(writer, [(arr, values)], 0)
    writer.close()
    assert sorted(p.name for p in (tmp_path / "a.zarr" / "c").iterdir()) == ["0"]
    got = zarr.open_array(tmp_path / "a.zarr", mode="r")[:]
    assert got.tobytes() == values.tobytes()  # the sign bits of chunk 0 survive
    nan = np.full(4, np.nan, np.float32)
    other = nan.view(np.uint32) | 1  # a NaN whose payload differs from the fill's
    assert _chunks._all_fill(nan, np.asarray(np.nan, np.float32))
    assert not _chunks._all_fill(other.view(np.float32), np.asarray(np.nan, np.float32))


def test_a_stale_object_at_a_fill_value_chunk_is_deleted(tmp_path):
    """A chunk rewritten as all fill (a frame rewritten after a crash) reads back as fill."""
    arr = zarr.create_array(
        tmp_path / "a.zarr", shape=(8,), chunks=(4,), dtype="int64", fill_value=-1,
        compressors=_compressor("lz4"), zarr_format=3,
    )  # fmt: skip
    writer = _chunks.ChunkWriter(tmp_path / "a.zarr")
    _chunks.write_arrays(writer, [(arr, np.arange(8))], 0)
    assert (tmp_path / "a.zarr" / "c" / "0").exists()
    _chunks.write_arrays(writer, [(arr, np.full(4, -1))], 0)
    writer.close()
    assert not (tmp_path / "a.zarr" / "c" / "0").exists()
    np.testing.assert_array_equal(
        zarr.open_array(tmp_path / "a.zarr", mode="r")[:], [-1] * 4 + [4, 5, 6, 7]
    )


def test_recording_without_labels_writes_no_label_chunks(tmp_path):
    """Frame-table columns left at their fill value cost no file, and read back as the fill."""
    import torch

    import netphys
    from tests.recorder.models import CNN

    model = CNN().eval()
    path = tmp_path / "nolabels.zarr"
    x = torch.randn(40, 1, 8, 8)
    with torch.no_grad(), netphys.Recorder(model, path, layers=["act1"], chunk_frames=8) as rec:
        for s in range(0, 40, 10):
            rec.annotate(stimulus=np.arange(s, s + 10))
            model(x[s : s + 10])
    for column in ("label", "repeat", "step", "epoch"):
        assert not (path / column / "c").exists() or not any((path / column / "c").iterdir())
    assert len(list((path / "stimulus" / "c").iterdir())) == 5
    assert len(list((path / "session" / "c").iterdir())) == 5  # the reader's forgery check
    ds = netphys.open_recording(path)
    np.testing.assert_array_equal(ds["layers/act1"]["label"].values, -1)
    np.testing.assert_array_equal(ds["layers/act1"]["stimulus"].values, np.arange(40))
