"""Hostile NWB and MATLAB v7.3 (HDF5) files: no reads outside the file, no bombs, no cycles.

A FIFO stands in for "a file elsewhere on the machine": opening it for reading blocks until a
writer comes, so a reader that so much as opens it hangs and the isolated run times out.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from netphys.errors import RecordingFormatError, ResourceLimitError, UnsafeFileError
from netphys.io import read_nwb, read_stringer_mat
from netphys.io._guard import check_store_confined
from tests.adversarial._readers_isolated import run_isolated

SENTINEL = b"SENTINEL-outside-the-input-"


def _nwb(path, n_rois=3, n_frames=20, *, data=None, rate=10.0, **dset_kwargs):
    """A minimal ophys NWB layout: one RoiResponseSeries and its PlaneSegmentation."""
    with h5py.File(path, "w") as f:
        f.attrs["nwb_version"] = "2.7.0"
        ophys = f.create_group("processing/ophys")
        fl = ophys.create_group("Fluorescence")
        fl.attrs["neurodata_type"] = "Fluorescence"
        series = fl.create_group("RoiResponseSeries")
        series.attrs["neurodata_type"] = "RoiResponseSeries"
        if data is None and "shape" not in dset_kwargs:
            data = np.arange(n_frames * n_rois, dtype=np.float32).reshape(n_frames, n_rois)
        series.create_dataset("data", data=data, **dset_kwargs)
        st = series.create_dataset("starting_time", data=0.0)
        st.attrs["rate"] = rate
        ps = ophys.create_group("ImageSegmentation/PlaneSegmentation")
        ps.attrs["neurodata_type"] = "PlaneSegmentation"
        ps.create_dataset("id", data=np.arange(n_rois))
    return path


def _secret(tmp_path, n_bytes=240):
    path = tmp_path / "elsewhere" / "secret.bin"
    path.parent.mkdir()
    path.write_bytes((SENTINEL * 20)[:n_bytes])
    return path


def test_external_raw_storage_is_refused_and_trusted_opts_in(tmp_path):
    secret = _secret(tmp_path)
    path = _nwb(tmp_path / "ext.nwb", shape=(20, 3), dtype="u1", external=[(str(secret), 0, 60)])
    with pytest.raises(UnsafeFileError, match=r"external files.*secret\.bin.*trusted=True") as e:
        read_nwb(path)
    assert SENTINEL.decode() not in str(e.value)
    ds = read_nwb(path, trusted=True)  # the opt-in reads the other file: the check can fail
    assert bytes(ds.activity.values.astype(np.uint8).ravel()[: len(SENTINEL)]) == SENTINEL


def test_external_storage_on_a_fifo_is_never_opened(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    path = _nwb(tmp_path / "fifo.nwb", shape=(20, 3), dtype="u1", external=[(str(fifo), 0, 60)])
    out = run_isolated(
        f"""
        from netphys.errors import UnsafeFileError
        from netphys.io import open_dataset
        try:
            open_dataset({str(path)!r})
        except UnsafeFileError as exc:
            print("refused")
        """,
        timeout=60,
    )
    assert out.strip() == "refused"


@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_external_links_are_refused(tmp_path, target):
    other = tmp_path / "elsewhere" / "other.h5"
    other.parent.mkdir()
    with h5py.File(other, "w") as f:
        f.create_dataset("data", data=np.frombuffer(SENTINEL * 2, np.uint8).reshape(-1, 2))
    (tmp_path / "sub").mkdir()
    path = _nwb(tmp_path / "sub" / "link.nwb")
    name = str(other) if target == "absolute" else "../elsewhere/other.h5"
    with h5py.File(path, "a") as f:
        del f["processing/ophys/Fluorescence/RoiResponseSeries/data"]
        f["processing/ophys/Fluorescence/RoiResponseSeries/data"] = h5py.ExternalLink(name, "/data")
    with pytest.raises(UnsafeFileError, match=r"external link to .*other\.h5"):
        read_nwb(path)


def test_virtual_datasets_are_refused(tmp_path):
    secret = tmp_path / "elsewhere.h5"
    with h5py.File(secret, "w") as f:
        f.create_dataset("x", data=np.frombuffer(SENTINEL * 3, np.uint8)[:60].reshape(20, 3))
    path = _nwb(tmp_path / "vds.nwb")
    layout = h5py.VirtualLayout(shape=(20, 3), dtype="u1")
    layout[:] = h5py.VirtualSource(str(secret), "x", shape=(20, 3))
    with h5py.File(path, "a") as f:
        grp = f["processing/ophys/Fluorescence/RoiResponseSeries"]
        del grp["data"]
        grp.create_virtual_dataset("data", layout)
    with pytest.raises(UnsafeFileError, match=r"virtual.*elsewhere\.h5"):
        read_nwb(path)


def test_mat_v73_external_storage_is_refused(tmp_path):
    secret = _secret(tmp_path)
    path = tmp_path / "ext.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("Fsp", shape=(20, 3), dtype="u1", external=[(str(secret), 0, 60)])
    with open(path, "r+b") as fp:
        fp.write(b"MATLAB 7.3 MAT-file".ljust(116) + b"\x00" * 8 + b"\x00\x02IM")
    with pytest.raises(UnsafeFileError, match=r"read_stringer_mat\(\).*external files"):
        read_stringer_mat(path)


def test_hard_link_cycles_are_errors_not_recursion(tmp_path):
    path = _nwb(tmp_path / "cycle.nwb")
    with h5py.File(path, "a") as f:
        f["processing/ophys/loop"] = f["processing"]
    with pytest.raises(RecordingFormatError, match="link cycle"):
        read_nwb(path)
    mat = tmp_path / "cycle.mat"
    with h5py.File(mat, "w", userblock_size=512) as f:
        g = f.create_group("beh")
        g["back"] = g
        f.create_dataset("Fsp", data=np.ones((20, 3)))
    with open(mat, "r+b") as fp:
        fp.write(b"MATLAB 7.3 MAT-file".ljust(116) + b"\x00" * 8 + b"\x00\x02IM")
    with pytest.raises(RecordingFormatError, match="link cycle"):
        read_stringer_mat(mat, frame_rate=10.0)


def test_declared_but_never_written_dataset_fails_fast(tmp_path):
    # 20 MB of file declares 1.7 GB of ROI traces; nothing was written
    path = _nwb(
        tmp_path / "empty.nwb", n_rois=3, shape=(150_000_000, 3), dtype="f4", chunks=(10_000, 3)
    )
    assert path.stat().st_size < 100_000
    with pytest.raises(
        RecordingFormatError,
        match=r"declares shape \(150000000, 3\).*only 0 bytes of it was ever written",
    ):
        read_nwb(path)


def test_gzip_bomb_is_refused_from_its_declared_size(tmp_path):
    data = np.zeros((20_000, 200), np.float32)  # 16 MB of zeros, a few KB gzipped
    path = _nwb(tmp_path / "gz.nwb", n_rois=200, data=data, compression="gzip", chunks=(2000, 200))
    assert path.stat().st_size < 200_000
    with pytest.raises(ResourceLimitError, match=r"ROI series.*shape \(20000, 200\).*max_bytes"):
        read_nwb(path, max_bytes=2**20)
    assert read_nwb(path).sizes["unit"] == 200  # the default limit lets it through


def test_thousands_of_empty_image_masks(tmp_path):
    # 5000 ROIs whose image masks were never written (fill value 0) but one pixel
    n = 5000
    path = _nwb(tmp_path / "masks.nwb", n_rois=n, n_frames=4)
    with h5py.File(path, "a") as f:
        ps = f["processing/ophys/ImageSegmentation/PlaneSegmentation"]
        mask = ps.create_dataset("image_mask", shape=(n, 16, 16), dtype="f4", chunks=(100, 16, 16))
        mask[7, 10, 12] = 2.0
    assert path.stat().st_size < 500_000  # declares 5 MB of masks, stores one chunk
    ds = read_nwb(path)
    assert ds.pos_x.values[7] == 10 and ds.pos_y.values[7] == 12
    assert int(np.isfinite(ds.pos_x.values).sum()) == 1  # empty masks have no position


def test_thousands_of_empty_pixel_masks(tmp_path):
    n = 20_000
    path = _nwb(tmp_path / "pix.nwb", n_rois=n, n_frames=4)
    pix = np.zeros(3, dtype=[("x", "<u4"), ("y", "<u4"), ("weight", "<f4")])
    pix[:] = [(4, 6, 1.0), (6, 6, 1.0), (9, 9, 0.0)]
    index = np.zeros(n, np.int64)
    index[2:] = 2  # ROI 2 holds two pixels, every other ROI is empty...
    index[-1] = 3  # ...except the last, whose only pixel has zero weight
    with h5py.File(path, "a") as f:
        ps = f["processing/ophys/ImageSegmentation/PlaneSegmentation"]
        ps.create_dataset("pixel_mask", data=pix)
        ps.create_dataset("pixel_mask_index", data=index)
    ds = read_nwb(path)
    assert (ds.pos_x.values[2], ds.pos_y.values[2]) == (5.0, 6.0)
    assert int(np.isfinite(ds.pos_x.values).sum()) == 1


def test_string_data_is_not_activity(tmp_path):
    text = np.array([[b"a", b"b", b"c"]] * 20, dtype="S1")
    path = _nwb(tmp_path / "text.nwb", data=text)
    with pytest.raises(RecordingFormatError, match=r"non-numeric data \(dtype \|S1\).*activity"):
        read_nwb(path)


def test_complex_data_is_not_silently_made_real(tmp_path):
    path = _nwb(tmp_path / "complex.nwb", data=np.ones((20, 3), np.complex64) * 1j)
    with pytest.raises(RecordingFormatError, match=r"complex data \(dtype complex64\)"):
        read_nwb(path)


@pytest.mark.parametrize("rate", [0.0, -5.0, np.inf, np.nan])
def test_rate_zero_or_invalid_is_a_clear_error_not_inf_times(tmp_path, rate):
    path = _nwb(tmp_path / "rate.nwb", rate=rate)
    with pytest.raises(RecordingFormatError, match=r"rate of .*starting_time is .*finite and > 0"):
        read_nwb(path)


def test_spike_time_of_1e12_seconds_is_refused_before_binning(tmp_path):
    path = tmp_path / "units.nwb"
    with h5py.File(path, "w") as f:
        units = f.create_group("units")
        units.create_dataset("spike_times", data=np.array([0.1, 0.2, 1e12]))
        units.create_dataset("spike_times_index", data=np.array([2, 3]))
        units.create_dataset("id", data=np.array([0, 1]))
    with pytest.raises(
        ResourceLimitError, match=r"spike counts \(2e\+13 bins.*1000000000000\.0 s.*146 TiB"
    ):
        read_nwb(path)


def test_mat_v73_reads_only_what_it_needs(tmp_path):
    path = tmp_path / "big.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("Fsp", data=np.ones((30, 4)))  # stored (time, neurons) = MATLAB 4 x 30
        f.create_dataset("VIDEOfs", data=np.array([[20.0]]))
        f.create_dataset(  # 16 GB declared, a few KB on disk, never used by the reader
            "unused", shape=(2**17, 2**14), dtype="f8", chunks=(1024, 1024), compression="gzip"
        )
    with open(path, "r+b") as fp:
        fp.write(b"MATLAB 7.3 MAT-file".ljust(116) + b"\x00" * 8 + b"\x00\x02IM")
    ds = read_stringer_mat(path)
    assert ds.activity.shape == (30, 4) and ds.attrs["frame_rate"] == 20.0


def test_store_confinement_guard(tmp_path):
    store = tmp_path / "rec.zarr"
    (store / "layer" / "c").mkdir(parents=True)
    (store / "layer" / "c" / "0").write_bytes(b"chunk")
    os.symlink(store / "layer" / "c" / "0", store / "layer" / "c" / "1")  # inside: fine
    check_store_confined(store)
    secret = _secret(tmp_path)
    os.symlink(secret, store / "layer" / "c" / "2")
    with pytest.raises(UnsafeFileError, match=r"c/2 is a symlink to .*secret\.bin, outside"):
        check_store_confined(store)
    os.remove(store / "layer" / "c" / "2")
    os.symlink(tmp_path / "elsewhere", store / "layer" / "d")  # a directory link out
    with pytest.raises(UnsafeFileError, match=r"layer/d is a symlink"):
        check_store_confined(store, func="recover")
