"""suite2p folders: real v0 data, synthetic v1 and multi-plane folders, round trips, bad input."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from netphys.errors import RecordingFormatError
from netphys.io import read_suite2p, write_suite2p
from netphys.population._calcium import simulate_calcium


@pytest.fixture(scope="module")
def real_folder(shared_data):
    return os.path.join(shared_data, "suite2p_pynapple_a0662", "suite2p")


def _model_activity(rng, n_time=60, n_units=7, frame_rate=20.0):
    """A (time, unit) DataArray built to docs/format.md (what layer_activity returns)."""
    return xr.DataArray(
        rng.standard_normal((n_time, n_units)).astype(np.float32),
        dims=("time", "unit"),
        coords={
            "unit": np.arange(n_units),
            "frame_time": ("time", np.arange(n_time) / frame_rate),
            "layer": ("unit", ["conv1"] * (n_units - 2) + ["fc"] * 2),
            "unit_id": ("unit", rng.permutation(100)[:n_units]),
            "pos_x": ("unit", rng.uniform(0, 1, n_units)),
            "pos_y": ("unit", rng.uniform(0, 1, n_units)),
            "pos_z": ("unit", np.r_[np.zeros(n_units - 2), np.ones(2)]),
        },
        attrs={"frame_rate": frame_rate},
    )


def test_real_folder_matches_readme(real_folder):
    ds = read_suite2p(real_folder)
    assert ds.activity.dims == ("time", "unit")
    assert ds.sizes == {"time": 2000, "unit": 219}
    assert ds.attrs["frame_rate"] == 10.0
    assert ds.attrs["format"] == "suite2p"
    assert ds.attrs["suite2p_generation"] == "v0"
    assert ds.attrs["activity_variable"] == "spks"
    np.testing.assert_allclose(ds.frame_time[[0, -1]], [0.0, 199.9])
    assert int(ds.is_cell.sum()) == 20  # README: 20 of 219 labelled cells
    # README: F mean 26.9, Fneu mean 28.6, spks mean 0.053 (rounded there)
    assert float(ds.F.mean()) == pytest.approx(26.9, abs=0.05)
    assert float(ds.neuropil.mean()) == pytest.approx(28.6, abs=0.05)
    assert float(ds.spks.mean()) == pytest.approx(0.053, abs=0.0005)
    np.testing.assert_array_equal(ds.activity, ds.spks)
    # same folder whichever level is passed
    plane = read_suite2p(os.path.join(real_folder, "plane0"))
    np.testing.assert_array_equal(plane.F, ds.F)
    parent = read_suite2p(os.path.dirname(real_folder))
    assert parent.sizes == ds.sizes


def test_positions_come_from_med_as_y_x(real_folder):
    ds = read_suite2p(real_folder)
    stat = np.load(os.path.join(real_folder, "plane0", "stat.npy"), allow_pickle=True)  # trusted
    med = np.array([s["med"] for s in stat], dtype=float)
    np.testing.assert_array_equal(ds.pos_y, med[:, 0])
    np.testing.assert_array_equal(ds.pos_x, med[:, 1])
    assert (ds.pos_z == 0).all()
    assert (ds.plane == 0).all()


def test_activity_is_selectable(real_folder):
    ds = read_suite2p(real_folder, activity="F")
    np.testing.assert_array_equal(ds.activity, ds.F)
    assert ds.attrs["activity_variable"] == "F"
    with pytest.raises(ValueError, match=r"read_suite2p\(\): `activity`='dff'.*\['F'"):
        read_suite2p(real_folder, activity="dff")


def _write_plane(plane, rng, n_rois, n_frames, *, meta=None, v1=False):
    plane.mkdir(parents=True)
    for name in ("F", "Fneu", "spks"):
        np.save(plane / f"{name}.npy", rng.random((n_rois, n_frames)).astype(np.float32))
    np.save(plane / "iscell.npy", np.c_[rng.integers(0, 2, n_rois), rng.random(n_rois)])
    stat = np.array([{"med": [float(i), float(2 * i)], "npix": 4} for i in range(n_rois)])
    np.save(plane / "stat.npy", stat)
    if v1:
        np.save(plane / "db.npy", {"nframes": n_frames, "Ly": 32, "Lx": 32, "nplanes": 2})
        np.save(plane / "settings.npy", meta or {"fs": 7.5, "tau": 1.25, "diameter": [8, 8]})
    elif meta is not None:
        np.save(plane / "ops.npy", meta)


def test_v1_multiplane_folder(tmp_path, rng):
    root = tmp_path / "suite2p"
    _write_plane(root / "plane0", rng, 3, 50, v1=True)
    _write_plane(root / "plane1", rng, 4, 49, v1=True)  # one frame fewer: cut to 49
    (root / "combined").mkdir()  # ignored
    np.save(root / "plane1" / "redcell.npy", np.c_[np.zeros(4), [0.1, 0.9, 0.2, 0.3]])
    ds = read_suite2p(tmp_path)
    assert ds.attrs["suite2p_generation"] == "v1"
    assert ds.attrs["frame_rate"] == 7.5
    assert ds.attrs["tau"] == 1.25
    assert ds.attrs["n_planes"] == 2
    assert ds.sizes == {"time": 49, "unit": 7}
    np.testing.assert_array_equal(ds.plane, [0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(ds.pos_z, ds.plane)
    np.testing.assert_array_equal(ds.unit_id, [0, 1, 2, 0, 1, 2, 3])
    np.testing.assert_array_equal(ds.pos_x, [0, 2, 4, 0, 2, 4, 6])
    np.testing.assert_array_equal(ds.red_cell_prob[3:], [0.1, 0.9, 0.2, 0.3])
    assert ds.red_cell_prob[:3].isnull().all()
    f1 = np.load(root / "plane1" / "F.npy")
    np.testing.assert_array_equal(ds.F.values[:, 3:], f1[:, :49].T)


def test_nested_fs_in_settings(tmp_path, rng):
    _write_plane(tmp_path / "plane0", rng, 2, 10, v1=True, meta={"run": {"fs": 3.0}})
    assert read_suite2p(tmp_path).attrs["frame_rate"] == 3.0


def test_missing_frame_rate_and_override(tmp_path, rng):
    _write_plane(tmp_path / "plane0", rng, 2, 10)
    with pytest.raises(RecordingFormatError, match=r"no frame rate.*'fs'.*frame_rate="):
        read_suite2p(tmp_path)
    assert read_suite2p(tmp_path, frame_rate=15.0).attrs["frame_rate"] == 15.0


def test_not_a_suite2p_folder(tmp_path):
    (tmp_path / "plane0").mkdir()
    np.save(tmp_path / "plane0" / "spks.npy", np.zeros((2, 3)))
    with pytest.raises(
        RecordingFormatError, match=r"not a suite2p output folder: looked for F\.npy"
    ):
        read_suite2p(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_suite2p(tmp_path / "nope")


def test_mismatched_shapes(tmp_path, rng):
    _write_plane(tmp_path / "plane0", rng, 2, 10, meta={"fs": 1.0})
    np.save(tmp_path / "plane0" / "spks.npy", np.zeros((2, 9), np.float32))
    with pytest.raises(RecordingFormatError, match="disagree in shape"):
        read_suite2p(tmp_path)


def test_truncated_real_files(tmp_path, real_folder):
    src = os.path.join(real_folder, "plane0")
    for name in ("F.npy", "stat.npy", "ops.npy"):
        dst = tmp_path / name.replace(".", "_") / "plane0"
        shutil.copytree(src, dst)
        data = (dst / name).read_bytes()
        (dst / name).write_bytes(data[: len(data) // 3])
        with pytest.raises(RecordingFormatError, match=name.replace(".", r"\.")):
            read_suite2p(dst)


def test_round_trip_model_recording(tmp_path, rng):
    act = _model_activity(rng)
    act_in = act.copy(deep=True)
    plane = write_suite2p(act, tmp_path / "out")
    xr.testing.assert_identical(act, act_in)  # input untouched
    assert plane == tmp_path / "out" / "plane0"
    back = read_suite2p(tmp_path / "out")
    np.testing.assert_array_equal(back.activity, act)
    np.testing.assert_array_equal(back.F, act)
    np.testing.assert_array_equal(back.pos_x, act.pos_x)
    np.testing.assert_array_equal(back.pos_y, act.pos_y)
    np.testing.assert_array_equal(back.pos_z, act.pos_z)
    np.testing.assert_array_equal(back.unit_id, act.unit_id)
    np.testing.assert_allclose(back.frame_time, act.frame_time)
    assert back.attrs["frame_rate"] == 20.0


def test_written_folder_is_what_the_guis_load(tmp_path, rng):
    act = _model_activity(rng, n_units=5)
    plane = write_suite2p(act, tmp_path)
    # the suite2p/rastermap GUIs use plain np.load(allow_pickle=True) on these files
    ops = np.load(plane / "ops.npy", allow_pickle=True).item()
    stat = np.load(plane / "stat.npy", allow_pickle=True)
    iscell = np.load(plane / "iscell.npy")
    for key in ("fs", "nframes", "Ly", "Lx", "meanImg", "max_proj", "Vcorr", "xrange", "yrange"):
        assert key in ops
    assert ops["nframes"] == 60
    assert ops["fs"] == 20.0
    assert iscell.shape == (5, 2)
    for key in (
        "ypix",
        "xpix",
        "lam",
        "med",
        "npix",
        "radius",
        "aspect_ratio",
        "compact",
        "footprint",
        "skew",
        "std",
        "overlap",
        "soma_crop",
        "npix_norm",
    ):
        assert key in stat[0]
    for s in stat:
        assert s["npix"] == len(s["ypix"]) == len(s["xpix"]) == len(s["lam"])
        assert s["ypix"].min() >= 0
        assert s["ypix"].max() < ops["Ly"]
        assert s["xpix"].min() >= 0
        assert s["xpix"].max() < ops["Lx"]
        assert abs(s["med"][0] - s["ypix"].mean()) <= 1
        assert abs(s["med"][1] - s["xpix"].mean()) <= 1
    assert np.load(plane / "F.npy").shape == (5, 60)
    assert np.load(plane / "spks.npy").dtype == np.float32


def test_writer_refuses_existing_and_overwrites(tmp_path, rng):
    act = _model_activity(rng)
    write_suite2p(act, tmp_path)
    with pytest.raises(FileExistsError, match=r"write_suite2p\(\).*overwrite=True"):
        write_suite2p(act, tmp_path)
    write_suite2p(act * 2, tmp_path, overwrite=True)
    np.testing.assert_allclose(read_suite2p(tmp_path).activity, act * 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plane0"]  # no temp folder left


def test_writer_needs_frame_rate_and_right_input(tmp_path):
    bare = xr.DataArray(np.zeros((4, 2)), dims=("time", "unit"))
    with pytest.raises(
        ValueError, match=r"write_suite2p\(\): cannot tell the frame rate.*frame_rate="
    ):
        write_suite2p(bare, tmp_path)
    with pytest.raises(TypeError, match=r"write_suite2p\(\): `recording` must be"):
        write_suite2p(np.zeros((4, 2)), tmp_path)
    plane = write_suite2p(bare, tmp_path, frame_rate=2.0)  # no positions: laid out on a grid
    back = read_suite2p(plane)
    np.testing.assert_array_equal(back.pos_x, [0, 1])


def test_round_trip_calcium_dataset(tmp_path, rng):
    act = _model_activity(rng, n_time=200)
    cal = simulate_calcium(act, tau="GCaMP6f", rng=rng)
    write_suite2p(cal, tmp_path)
    back = read_suite2p(tmp_path)
    for name in ("F", "neuropil", "spks", "activity"):
        np.testing.assert_array_equal(back[name], cal[name])
    np.testing.assert_array_equal(back.pos_x, act.pos_x)


@pytest.mark.property
@settings(max_examples=15, deadline=None)
@given(
    n_time=st.integers(2, 30),
    n_units=st.integers(1, 12),
    scale=st.sampled_from([1e-3, 1.0, 500.0]),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(tmp_path_factory, n_time, n_units, scale, seed):
    g = np.random.default_rng(seed)
    act = xr.DataArray(
        g.standard_normal((n_time, n_units)).astype(np.float32),
        dims=("time", "unit"),
        coords={
            "pos_x": ("unit", g.uniform(-1, 1, n_units) * scale),
            "pos_y": ("unit", g.uniform(-1, 1, n_units) * scale),
        },
        attrs={"frame_rate": 30.0},
    )
    folder = tmp_path_factory.mktemp("prop")
    back = read_suite2p(write_suite2p(act, folder))
    np.testing.assert_array_equal(back.activity, act)
    np.testing.assert_array_equal(back.pos_x, act.pos_x)
    np.testing.assert_array_equal(back.pos_y, act.pos_y)


def test_old_writer_names_are_deprecated_aliases(tmp_path):
    from netphys.io import read_nwb, to_nwb, to_suite2p

    act = xr.DataArray(
        np.ones((6, 2), np.float32), dims=("time", "unit"), attrs={"frame_rate": 4.0}
    )
    with pytest.warns(DeprecationWarning, match=r"to_suite2p\(\) is renamed write_suite2p\(\)"):
        plane = to_suite2p(act, tmp_path / "s2p")
    assert read_suite2p(plane).activity.shape == (6, 2)
    with pytest.warns(DeprecationWarning, match=r"to_nwb\(\) is renamed write_nwb\(\)"):
        path = to_nwb(act, tmp_path / "x.nwb")
    assert read_nwb(path).activity.shape == (6, 2)
