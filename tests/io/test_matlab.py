"""MATLAB .mat readers: the songbird HVC file, Stringer-style files, v7.3, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from netphys.errors import NetphysWarning, RecordingFormatError
from netphys.io import read_stringer_mat


@pytest.fixture(scope="module")
def songbird(shared_data):
    return os.path.join(shared_data, "songbird_hvc_mackevicius", "MackeviciusData.mat")


def test_songbird_with_frame_rate(songbird):
    ds = read_stringer_mat(songbird)
    raw = scipy.io.loadmat(songbird)
    assert ds.sizes["time"] == 666
    assert ds.sizes["unit"] == 75
    assert ds.attrs["frame_rate"] == 30.0  # VIDEOfs
    assert ds.attrs["frame_rate_known"] is True
    np.testing.assert_allclose(ds.frame_time[-1], 665 / 30)
    np.testing.assert_array_equal(ds.activity.values, raw["NEURAL"].T.astype(np.float32))
    assert ds.attrs["activity_variable"] == "spks"
    # song spectrogram on its own 200 Hz time base, aligned with the neural frames (22.2 s)
    assert ds.song.dims == ("song_time", "song_freq")
    assert ds.song.shape == (4440, 141)
    assert ds.attrs["song_rate"] == 200.0
    assert float(ds.song_time[-1]) == pytest.approx(float(ds.frame_time[-1]), abs=0.05)
    # README: 93% zeros
    assert float((ds.activity == 0).mean()) == pytest.approx(0.93, abs=0.01)


def test_stringer_layout(tmp_path, rng):
    n, t = 6, 40
    stat = np.array(
        [{"npix": 10, "redcell": float(i == 2), "iplane": i % 3} for i in range(n)], dtype=object
    )
    path = tmp_path / "spont_M1.mat"
    scipy.io.savemat(
        path,
        {
            "Fsp": rng.random((n, t)),
            "med": rng.random((n, 3)) * 100,
            "stat": stat,
            "db": {"nplanes": 3, "mouse_name": "M1"},
            "beh": {
                "runSpeed": rng.random(t),
                "face": {"motionSVD": rng.random((t, 50))},
                "pupil": {"area": rng.random(t)},
            },
            "stim": {"resp": rng.random((7, n)), "istim": np.arange(7) + 1},
        },
    )
    with pytest.warns(NetphysWarning, match=r"no frame rate.*frame_rate="):
        ds = read_stringer_mat(path)
    assert ds.attrs["frame_rate_known"] is False
    ds = read_stringer_mat(path, frame_rate=3.0)
    raw = scipy.io.loadmat(path, simplify_cells=True)
    np.testing.assert_allclose(ds.spks.values, raw["Fsp"].T.astype(np.float32))
    np.testing.assert_allclose(ds.frame_time[1], 1 / 3.0)
    np.testing.assert_array_equal(ds.pos_x, raw["med"][:, 0])
    np.testing.assert_array_equal(ds.pos_z, raw["med"][:, 2])
    np.testing.assert_array_equal(ds.is_cell, [True, True, False, True, True, True])
    np.testing.assert_array_equal(ds.plane, [0, 1, 2, 0, 1, 2])
    assert ds.behaviour.shape == (t, 12)  # runSpeed, pupil area, 10 face SVD components
    assert "runSpeed" in list(ds.behaviour_var.values)
    assert ds.stim_resp.dims == ("stimulus", "unit")
    np.testing.assert_array_equal(ds.istim, np.arange(7) + 1)


def test_spont_only_layout_is_time_by_neurons(tmp_path, rng):
    spont = rng.random((30, 4))  # natimg files: time x neurons
    path = tmp_path / "natimg.mat"
    scipy.io.savemat(path, {"stim": {"spont": spont}, "fs": 2.5})
    ds = read_stringer_mat(path)
    np.testing.assert_allclose(ds.activity.values, spont.astype(np.float32))
    assert ds.attrs["frame_rate"] == 2.5


def test_v73_mat_via_h5py(tmp_path, rng):
    path = tmp_path / "v73.mat"
    neural = rng.random((5, 20))
    with h5py.File(path, "w", userblock_size=512) as f:
        f["NEURAL"] = neural.T  # MATLAB writes column-major: h5py sees the transpose
        f["VIDEOfs"] = np.array([[15.0]])
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as fp:
        fp.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")
    ds = read_stringer_mat(path)
    assert ds.attrs["frame_rate"] == 15.0
    np.testing.assert_allclose(ds.activity.values, neural.T.astype(np.float32))


def test_unrecognised_keys(tmp_path):
    path = tmp_path / "other.mat"
    scipy.io.savemat(path, {"foo": np.ones((3, 3)), "label": "x"})
    with pytest.raises(
        RecordingFormatError,
        match=r"no recognisable neural activity: looked for.*Fsp.*\['foo', 'label'\]",
    ):
        read_stringer_mat(path)


@pytest.mark.parametrize("fraction", [0.0005, 0.3, 0.9])
def test_truncated_real_file(tmp_path, songbird, fraction):
    data = Path(songbird).read_bytes()
    bad = tmp_path / "cut.mat"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(RecordingFormatError, match=r"read_stringer_mat\(\).*cut\.mat"):
        read_stringer_mat(bad)
