"""open_dataset dispatches on what it finds: folders, NWB, .mat, .npz, model recordings."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from netphys.errors import RecordingFormatError
from netphys.io import open_dataset


@pytest.mark.parametrize(
    ("relpath", "fmt", "n_units", "kwargs"),
    [
        ("suite2p_pynapple_a0662/suite2p", "suite2p", 219, {}),
        ("suite2p_pynapple_a0662/suite2p/plane0", "suite2p", 219, {}),
        ("suite2p_pynapple_a0662/nwb/2022_08_08.nwb", "nwb", 219, {}),
        ("adn_ca1_headdirection_a2929/A2929-200711.nwb", "nwb", 15, {"bin_width": 0.5}),
        ("songbird_hvc_mackevicius/MackeviciusData.mat", "mat", 75, {}),
        ("ibl_brainbox_289units/spikes.npz", "npz", 289, {"bin_width": 0.1}),
    ],
)
def test_dispatch_on_real_data(shared_data, relpath, fmt, n_units, kwargs):
    ds = open_dataset(os.path.join(shared_data, relpath), **kwargs)
    assert ds.attrs["format"] == fmt
    assert ds.activity.dims == ("time", "unit")
    assert ds.sizes["unit"] == n_units
    for coord in ("frame_time", "unit_id", "pos_x", "pos_y", "pos_z", "is_cell"):
        assert coord in ds.coords, coord
    assert ds.attrs["frame_rate"] > 0
    assert ds.frame_time.attrs["units"] == "s"


def test_dispatch_ignores_file_names(tmp_path, shared_data):
    # a .mat renamed .dat and an NWB file renamed .h5 are still recognised by their bytes
    src = os.path.join(shared_data, "songbird_hvc_mackevicius", "MackeviciusData.mat")
    shutil.copy(src, tmp_path / "neural.dat")
    assert open_dataset(tmp_path / "neural.dat").attrs["format"] == "mat"


def test_options_a_reader_does_not_take_are_refused_unless_not_strict(shared_data):
    folder = os.path.join(shared_data, "suite2p_pynapple_a0662", "suite2p")
    with pytest.raises(
        TypeError, match=r"read_suite2p\(\), which does not take `bin_width`.*accepts activity"
    ):
        open_dataset(folder, bin_width=0.1, activity="F")
    ds = open_dataset(folder, bin_width=0.1, activity="F", strict=False)
    assert ds.attrs["activity_variable"] == "F"
    mat = os.path.join(shared_data, "songbird_hvc_mackevicius", "MackeviciusData.mat")
    with pytest.raises(TypeError, match=r"read_stringer_mat\(\).*`swap_xy`"):
        open_dataset(mat, swap_xy=True)


def test_unknown_inputs(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(
        RecordingFormatError, match=r"open_dataset\(\).*looked for a zip.*MATLAB.*HDF5"
    ):
        open_dataset(tmp_path / "notes.txt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(
        RecordingFormatError, match=r"neither a netphys recording.*nor a suite2p output"
    ):
        open_dataset(tmp_path / "folder")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_dataset(tmp_path / "missing.nwb")


def _write_model_recording(path, rng):
    """A tiny recording written with the recording module's writer (no torch needed)."""
    recording = pytest.importorskip("netphys.io.recording")
    writer_cls = getattr(recording, "RecordingWriter", None)
    if writer_cls is None:
        pytest.skip("netphys.io.recording.RecordingWriter not available")
    writer = writer_cls(path, chunk_frames=16, attrs={"frame_rate": 30.0})
    n_units, n_frames = 6, 32
    coords = {
        "unit_id": np.arange(n_units),
        "channel": np.arange(n_units) % 2,
        "y": np.arange(n_units) // 2,
        "x": np.zeros(n_units, int),
        "pos_x": np.arange(n_units, dtype=float),
        "pos_y": np.zeros(n_units),
        "pos_z": np.ones(n_units),
    }
    writer.add_layer("layer1", unit_coords=coords, n_nodes=2, dtype="float32", attrs={})
    act = rng.random((n_frames, n_units)).astype(np.float32)
    table = {
        "frame_time": np.arange(n_frames) / 30.0,
        "session": np.zeros(n_frames, int),
        "stimulus": np.arange(n_frames),
        "label": np.zeros(n_frames, int),
        "condition": np.zeros(n_frames, np.int16),
        "repeat": np.zeros(n_frames, int),
        "epoch": -np.ones(n_frames, int),
        "step": -np.ones(n_frames, int),
    }
    writer.condition_code("stimulus")
    writer.write(0, table, {"layer1": (act, act[:, :2])})
    writer.close()
    return act, coords


def test_model_recording(tmp_path, rng):
    path = tmp_path / "rec.zarr"
    act, coords = _write_model_recording(path, rng)
    ds = open_dataset(path)
    assert ds.attrs["format"] == "netphys"
    assert ds.attrs["frame_rate"] == 30.0
    np.testing.assert_array_equal(ds.activity.values, act)
    np.testing.assert_array_equal(ds.pos_x, coords["pos_x"])


def test_writers_accept_a_recording_tree(tmp_path, rng):
    from netphys.io import open_recording, read_nwb, read_suite2p, write_nwb, write_suite2p

    path = tmp_path / "rec.zarr"
    act, coords = _write_model_recording(path, rng)
    tree = open_recording(path)
    back = read_suite2p(write_suite2p(tree, tmp_path / "s2p"))
    np.testing.assert_array_equal(back.activity, act)
    np.testing.assert_array_equal(back.pos_x, coords["pos_x"])
    assert back.attrs["frame_rate"] == 30.0
    pytest.importorskip("pynwb")
    back = read_nwb(write_nwb(tree, tmp_path / "rec.nwb"))
    np.testing.assert_array_equal(back.activity, act)
    np.testing.assert_array_equal(back.unit_id, coords["unit_id"])
