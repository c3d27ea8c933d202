"""Hostile NWB and MATLAB v7.3 files on both read paths: lazy (dask) and eager (``chunks=None``).

``test_readers_hdf5.py`` runs each hostile case with the default (lazy) path; here every case
runs with ``chunks=None`` and with an explicit frame count, and each must be refused *at open*
with the same error. Cases only the lazy path has: a file truncated inside its data, one
stored chunk larger than ``max_bytes``, a file changed between open and compute, and a read
through the picklable view past ``max_bytes``.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from netphys.errors import RecordingFormatError, ResourceLimitError, UnsafeFileError
from netphys.io import read_nwb, read_stringer_mat
from netphys.io._hdf5_lazy import HDF5ArrayView
from tests.adversarial.test_readers_hdf5 import SENTINEL, _nwb, _secret

MODES = [None, 8]
DATA = "/processing/ophys/Fluorescence/RoiResponseSeries/data"
MAT_HEADER = b"MATLAB 7.3 MAT-file".ljust(116) + b"\x00" * 8 + b"\x00\x02IM"


def _as_mat(path):
    with open(path, "r+b") as fp:
        fp.write(MAT_HEADER)
    return path


@pytest.mark.parametrize("chunks", MODES)
def test_external_storage_links_and_virtual_refused_on_both_paths(tmp_path, chunks):
    secret = _secret(tmp_path)
    ext = _nwb(tmp_path / "ext.nwb", shape=(20, 3), dtype="u1", external=[(str(secret), 0, 60)])
    with pytest.raises(UnsafeFileError, match=r"external files.*secret\.bin.*trusted=True") as e:
        read_nwb(ext, chunks=chunks)
    assert SENTINEL.decode() not in str(e.value)
    link = _nwb(tmp_path / "link.nwb")
    with h5py.File(link, "a") as f:
        del f[DATA]
        f[DATA] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/data")
    with pytest.raises(UnsafeFileError, match=r"external link to .*other\.h5"):
        read_nwb(link, chunks=chunks)
    src = tmp_path / "src.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("x", data=np.frombuffer(SENTINEL * 3, np.uint8)[:60].reshape(20, 3))
    vds = _nwb(tmp_path / "vds.nwb")
    layout = h5py.VirtualLayout(shape=(20, 3), dtype="u1")
    layout[:] = h5py.VirtualSource(str(src), "x", shape=(20, 3))
    with h5py.File(vds, "a") as f:
        del f[DATA]
        f[os.path.dirname(DATA)].create_virtual_dataset("data", layout)
    with pytest.raises(UnsafeFileError, match=r"virtual.*src\.h5"):
        read_nwb(vds, chunks=chunks)
    # the opt-in reads the other files on either path, lazily through the view
    got = read_nwb(ext, chunks=chunks, trusted=True).activity.values.astype(np.uint8)
    assert bytes(got.ravel()[: len(SENTINEL)]) == SENTINEL
    got = read_nwb(vds, chunks=chunks, trusted=True).activity.values.astype(np.uint8)
    assert bytes(got.ravel()[: len(SENTINEL)]) == SENTINEL


@pytest.mark.parametrize("chunks", MODES)
def test_cycles_unwritten_and_bombs_refused_on_both_paths(tmp_path, chunks):
    cycle = _nwb(tmp_path / "cycle.nwb")
    with h5py.File(cycle, "a") as f:
        f["processing/ophys/loop"] = f["processing"]
    with pytest.raises(RecordingFormatError, match="link cycle"):
        read_nwb(cycle, chunks=chunks)
    empty = _nwb(
        tmp_path / "empty.nwb", n_rois=3, shape=(150_000_000, 3), dtype="f4", chunks=(10_000, 3)
    )
    with pytest.raises(RecordingFormatError, match=r"declares shape .*only 0 bytes .*written"):
        read_nwb(empty, chunks=chunks)
    zeros = np.zeros((20_000, 200), np.float32)  # 16 MB declared, a few KB stored
    gz = _nwb(tmp_path / "gz.nwb", n_rois=200, data=zeros, compression="gzip", chunks=(500, 200))
    with pytest.raises(ResourceLimitError, match=r"ROI series.*shape \(20000, 200\).*max_bytes"):
        read_nwb(gz, chunks=chunks, max_bytes=2**20)
    mat = tmp_path / "gz.mat"
    with h5py.File(mat, "w", userblock_size=512) as f:
        f.create_dataset("Fsp", data=zeros, compression="gzip", chunks=(500, 200))
    with pytest.raises(ResourceLimitError, match=r"variable 'Fsp'.*\(20000, 200\).*max_bytes"):
        read_stringer_mat(_as_mat(mat), frame_rate=1.0, chunks=chunks, max_bytes=2**20)


def test_lazy_bomb_message_names_the_compression(tmp_path):
    zeros = np.zeros((20_000, 200), np.float32)
    gz = _nwb(tmp_path / "gz.nwb", n_rois=200, data=zeros, compression="gzip", chunks=(500, 200))
    with pytest.raises(ResourceLimitError, match=r"compressed \d+-fold"):
        read_nwb(gz, max_bytes=2**20)


def test_honest_compressed_data_opens_lazily_beyond_max_bytes(tmp_path, rng):
    # 1.5 MB of random data compress about 1.1-fold: nothing is read at open, each chunk
    # (256 KB) fits the 1 MiB limit, and the values come back exactly
    data = rng.random((3000, 128)).astype(np.float32) + np.arange(128, dtype=np.float32)
    path = _nwb(tmp_path / "ok.nwb", n_rois=128, data=data, compression="gzip", chunks=(500, 128))
    ds = read_nwb(path, max_bytes=2**20)
    assert max(ds.activity.chunks[0]) * 128 * 4 <= 2**20
    np.testing.assert_array_equal(ds.activity.values, data)
    with pytest.raises(ResourceLimitError, match=r"ROI series.*max_bytes"):
        read_nwb(path, max_bytes=2**20, chunks=None)  # the eager read takes all 1.5 MB at once


def test_stored_chunk_larger_than_max_bytes_is_refused_at_open(tmp_path, rng):
    data = rng.random((4000, 100)).astype(np.float32)  # one stored chunk of 1.6 MB
    path = _nwb(tmp_path / "big.nwb", n_rois=100, data=data, chunks=(4000, 100))
    with pytest.raises(ResourceLimitError, match=r"each stored chunk of the ROI series.*max_bytes"):
        read_nwb(path, max_bytes=2**20)


def _cut(path, keep, *, forge_eof):
    raw = bytearray(path.read_bytes()[:keep])
    if forge_eof:  # superblock v0 keeps the end-of-file address at byte 40: HDF5 then opens it
        assert raw[8] == 0
        raw[40:48] = len(raw).to_bytes(8, "little")
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("layout", ["chunked", "contiguous"])
@pytest.mark.parametrize("forge_eof", [False, True])
def test_truncated_file_is_refused_at_open(tmp_path, rng, layout, forge_eof):
    kw = {"chunks": (500, 20)} if layout == "chunked" else {}
    path = _nwb(tmp_path / "cut.nwb", n_rois=20, data=rng.random((5000, 20)), **kw)
    with h5py.File(path, "r") as f:
        start = f[DATA].id.get_offset() if layout == "contiguous" else None
    _cut(path, start + 1000 if start is not None else -20_000, forge_eof=forge_eof)
    # forged: a damaged object header is a clear error, not h5py's SystemError
    with pytest.raises(RecordingFormatError, match=r"read_nwb\(\).*(truncated|corrupted)"):
        read_nwb(path)


@pytest.mark.parametrize("chunks", MODES)
def test_chunks_stored_past_the_end_are_refused_at_open(tmp_path, rng, chunks):
    path = _nwb(tmp_path / "cut.nwb", n_rois=20, shape=(5000, 20), dtype="f8", chunks=(500, 20))
    with h5py.File(path, "a") as f:  # chunk data written last: it ends the file
        f[DATA][...] = rng.random((5000, 20))
    _cut(path, -20_000, forge_eof=True)  # every header intact, the last chunk cut short
    match = r"stored up to byte \d+ but the file has" if chunks else r"truncated|corrupted"
    with pytest.raises(RecordingFormatError, match=match):
        read_nwb(path, chunks=chunks)


def test_file_changed_after_open_is_refused_at_compute(tmp_path, rng):
    path = _nwb(tmp_path / "a.nwb", n_rois=4, data=rng.random((40, 4)), chunks=(10, 4))
    ds = read_nwb(path, chunks=10)
    assert float(ds.activity[:10].sum()) > 0  # reads fine while unchanged
    secret = _secret(tmp_path)
    os.replace(
        _nwb(tmp_path / "swap.nwb", shape=(40, 4), dtype="u1", external=[(str(secret), 0, 160)]),
        path,
    )
    with pytest.raises(RecordingFormatError, match=r"a\.nwb: the file changed .*Open it again"):
        ds.activity.values  # noqa: B018
    os.remove(path)
    with pytest.raises(RecordingFormatError, match=r"changed \(or went\)"):
        ds.activity[10:20].values  # noqa: B018


def test_view_refuses_a_read_past_max_bytes(tmp_path, rng):
    path = _nwb(tmp_path / "a.nwb", n_rois=4, data=rng.random((1000, 4)))
    view = HDF5ArrayView(str(path), DATA, (1000, 4), np.float64, trusted=False,
                         max_bytes=8000, func="read_nwb")  # fmt: skip
    assert view[:250].shape == (250, 4)  # 8000 bytes: at the limit
    with pytest.raises(ResourceLimitError, match=r"a read of .*data \(251, 4\).*max_bytes"):
        view[:251]
