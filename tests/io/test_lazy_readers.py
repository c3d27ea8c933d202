"""Lazy NWB and MATLAB v7.3 reading: dask arrays over HDF5 chunks, equal to the eager read.

The files are written with h5py, chunked and compressed, with the layouts the readers meet:
(time, roi) and (roi, time) ROI series with ``conversion``/``offset``, two planes, a v7.3
``Fsp`` and a ``stim.spont``. One test computes the lazy arrays on a 2-worker
dask.distributed LocalCluster (processes), so each worker reopens the file itself.
"""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import xarray as xr

from netphys.errors import RecordingFormatError
from netphys.io import read_nwb, read_stringer_mat, read_suite2p
from netphys.io._hdf5_lazy import HDF5ArrayView
from netphys.io.suite2p import _NpyView

MAT_HEADER = b"MATLAB 7.3 MAT-file".ljust(116) + b"\x00" * 8 + b"\x00\x02IM"


def _ophys(path, planes, *, rois_first=False, conversion=1.0, offset=0.0):
    """An ophys NWB layout with one Fluorescence series per plane (list of (time, roi) arrays)."""
    with h5py.File(path, "w") as f:
        f.attrs["nwb_version"] = "2.7.0"
        ophys = f.create_group("processing/ophys")
        for i, data in enumerate(planes):
            ps = ophys.create_group(f"ImageSegmentation/Plane{i}")
            ps.attrs["neurodata_type"] = "PlaneSegmentation"
            ps.create_dataset("id", data=np.arange(data.shape[1]) + 100 * i)
            series = ophys.create_group(f"Fluorescence/Series{i}")
            series.attrs["neurodata_type"] = "RoiResponseSeries"
            stored = data.T if rois_first else data
            chunks = (2, 16) if rois_first else (16, 2)
            dset = series.create_dataset("data", data=stored, chunks=chunks, compression="gzip")
            dset.attrs["conversion"], dset.attrs["offset"] = conversion, offset
            series["rois"] = np.arange(data.shape[1])
            series["rois"].attrs["table"] = ps.ref
            series.create_dataset("timestamps", data=np.arange(data.shape[0]) / 7.0)
    return path


def _mat73(path, **variables):
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, value in variables.items():
            chunks = (16, 4) if np.ndim(value) == 2 and min(np.shape(value)) >= 4 else None
            f.create_dataset(key, data=value, chunks=chunks)
    with open(path, "r+b") as fp:
        fp.write(MAT_HEADER)
    return path


@pytest.mark.parametrize("rois_first", [False, True])
def test_nwb_lazy_equals_eager(tmp_path, rng, rois_first):
    planes = [rng.standard_normal((50, 5)).astype(np.float32), rng.random((50, 3)) * 1e3]
    path = _ophys(tmp_path / "a.nwb", planes, rois_first=rois_first, conversion=0.5, offset=2.0)
    eager = read_nwb(path, chunks=None)
    assert isinstance(eager.activity.data, np.ndarray)
    for chunks, frames in (("auto", (50,)), (20, (32, 18)), (1, (16, 16, 16, 2))):
        lazy = read_nwb(path, chunks=chunks)
        assert lazy.activity.chunks[0] == frames  # whole stored chunks of 16 frames
        assert lazy.activity.chunks[1] == (5, 3)  # every unit of a plane in one chunk
        xr.testing.assert_identical(lazy.compute(), eager)
    expected = np.concatenate([p.astype(np.float64) * 0.5 + 2.0 for p in planes], axis=1)
    np.testing.assert_array_equal(eager.activity.values, expected)


def test_mat_v73_lazy_equals_eager(tmp_path, rng):
    fsp = rng.random((6, 40))  # MATLAB neurons x time; h5py sees the transpose
    path = _mat73(tmp_path / "a.mat", Fsp=fsp.T, VIDEOfs=np.array([[3.0]]))
    eager = read_stringer_mat(path, chunks=None)
    lazy = read_stringer_mat(path, chunks=20)
    assert lazy.activity.chunks == ((32, 8), (6,))
    xr.testing.assert_identical(lazy.compute(), eager)
    np.testing.assert_array_equal(eager.activity.values, fsp.T.astype(np.float32))
    spont = rng.random((40, 6))  # stim.spont is MATLAB time x neurons
    path = tmp_path / "spont.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("stim/spont", data=spont.T, chunks=(3, 16))
    with open(path, "r+b") as fp:
        fp.write(MAT_HEADER)
    lazy = read_stringer_mat(path, frame_rate=2.0)
    assert lazy.activity.chunks == ((40,), (6,))
    xr.testing.assert_identical(
        lazy.compute(), read_stringer_mat(path, frame_rate=2.0, chunks=None)
    )


@pytest.mark.parametrize("chunks", [0, -3, 2.5, True, "big", [10]])
def test_chunks_argument_is_checked(tmp_path, rng, chunks):
    path = _ophys(tmp_path / "a.nwb", [rng.random((20, 2))])
    with pytest.raises(ValueError, match=r"read_nwb\(\): `chunks` must be 'auto'.*positive int"):
        read_nwb(path, chunks=chunks)
    with pytest.raises(ValueError, match=r"read_stringer_mat\(\): `chunks` must be 'auto'"):
        read_stringer_mat(path, chunks=chunks)
    with pytest.raises(ValueError, match=r"read_suite2p\(\): `chunks` must be 'auto'"):
        read_suite2p(tmp_path, chunks=chunks)


def test_view_pickles_without_its_file_handle(tmp_path, rng):
    data = rng.random((30, 4))
    path = _ophys(tmp_path / "a.nwb", [data])
    name = "/processing/ophys/Fluorescence/Series0/data"
    view = HDF5ArrayView(str(path), name, (30, 4), np.float64, trusted=False, max_bytes=None,
                         func="read_nwb")  # fmt: skip
    np.testing.assert_array_equal(view[2:5], data[2:5])  # opens and caches a handle
    blob = pickle.dumps(view)
    assert b"h5py" not in blob and len(blob) < 1000
    np.testing.assert_array_equal(pickle.loads(blob)[:, 1], data[:, 1])


@pytest.mark.parametrize("dtype", ["<f4", ">f8", "<i2"])
def test_suite2p_positioned_reads_equal_numpy(tmp_path, rng, dtype):
    x = (rng.standard_normal((7, 50)) * 100).astype(dtype)
    np.save(tmp_path / "F.npy", x)
    np.save(tmp_path / "Ff.npy", np.asfortranarray(x))  # Fortran order: the memory-map path
    for name in ("F.npy", "Ff.npy"):
        mm = np.load(tmp_path / name, mmap_mode="r")
        offset = int(mm.offset) if mm.flags.c_contiguous else -1
        view = _NpyView(tmp_path / name, x.shape, x.dtype, offset)
        for index in [
            (slice(None), slice(3, 17)),
            (slice(2, 5), slice(None)),
            (slice(None), slice(None)),
            (slice(6, 2), slice(0, 4)),
            (slice(None), slice(0, 50, 2)),  # a step: the memory-map path
            (1, slice(4, 9)),
        ]:
            got = view[index]
            assert got.dtype == x.dtype
            np.testing.assert_array_equal(got, x[index])
    ds = read_suite2p(tmp_path, frame_rate=5.0)
    np.testing.assert_array_equal(ds.F.values, x.T)
    assert read_suite2p(tmp_path, frame_rate=5.0, chunks=20).F.chunks == ((20, 20, 10), (7,))
    eager = read_suite2p(tmp_path, frame_rate=5.0, chunks=None)
    assert isinstance(eager.F.data, np.ndarray)
    xr.testing.assert_identical(ds.compute(), eager)
    (tmp_path / "F.npy").write_bytes((tmp_path / "F.npy").read_bytes()[:200])
    with pytest.raises(RecordingFormatError, match=r"F\.npy ended at byte \d+ .*truncated"):
        ds.F.values  # noqa: B018


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, memory_limit="600MB",
        dashboard_address=None,
    )  # fmt: skip
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.mark.slow
def test_lazy_arrays_compute_on_distributed_workers(tmp_path, rng, client):
    distributed = pytest.importorskip("distributed")
    planes = [rng.random((64, 5)), rng.random((64, 3))]
    nwb = read_nwb(_ophys(tmp_path / "a.nwb", planes), chunks=16)
    mat = read_stringer_mat(_mat73(tmp_path / "a.mat", Fsp=planes[0], fs=np.array([[5.0]])))
    np.save(tmp_path / "F.npy", planes[1].T.astype(np.float32))  # suite2p: (ROI, frame)
    s2p = read_suite2p(tmp_path, frame_rate=5.0)
    assert nwb.activity.data.npartitions == 8  # 4 frame chunks x 2 planes
    with distributed.get_task_stream(client) as ts:
        got = client.compute([nwb.activity, mat.activity, s2p.activity], sync=True)
    reads = [t for t in ts.data if "hdf5-" in str(t["key"])]  # some reads fuse with casts
    assert len(reads) >= 8  # the NWB file's chunks were read in the worker processes
    assert {t["worker"] for t in ts.data} <= set(client.scheduler_info()["workers"])
    np.testing.assert_array_equal(got[0].values, np.concatenate(planes, axis=1))
    np.testing.assert_array_equal(got[1].values, planes[0].astype(np.float32))
    np.testing.assert_array_equal(got[2].values, planes[1].astype(np.float32))
