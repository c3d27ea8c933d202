"""NWB: the real suite2p twin and head-direction units files, synthetic variants, round trips."""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from netphys.errors import RecordingFormatError
from netphys.io import read_nwb, read_suite2p, write_nwb

pynwb = pytest.importorskip("pynwb")


@pytest.fixture(scope="module")
def twin(shared_data):
    base = os.path.join(shared_data, "suite2p_pynapple_a0662")
    return os.path.join(base, "nwb", "2022_08_08.nwb"), os.path.join(base, "suite2p")


@pytest.fixture(scope="module")
def hd_path(shared_data):
    return os.path.join(shared_data, "adn_ca1_headdirection_a2929", "A2929-200711.nwb")


def test_suite2p_twin_identical_fluorescence(twin):
    nwb_path, folder = twin
    a, b = read_nwb(nwb_path), read_suite2p(folder)
    assert a.sizes == b.sizes == {"time": 2000, "unit": 219}
    for name in ("F", "neuropil", "spks", "activity"):
        np.testing.assert_array_equal(a[name].values, b[name].values)  # README: exact match
    np.testing.assert_allclose(a.frame_time, b.frame_time, atol=1e-9)
    assert a.attrs["frame_rate"] == 10.0
    np.testing.assert_array_equal(a.is_cell, b.is_cell)
    np.testing.assert_array_equal(a.cell_prob, b.cell_prob)


def test_suite2p_twin_consistent_positions(twin):
    nwb_path, folder = twin
    a, b = read_nwb(nwb_path), read_suite2p(folder)
    assert a.attrs["xy_swapped"] is True  # suite2p export writes ypix into `x`
    # the NWB pixel masks are stat.npy's pixels: their weighted centroids agree exactly
    stat = np.load(os.path.join(folder, "plane0", "stat.npy"), allow_pickle=True)  # trusted
    cx = [np.average(s["xpix"], weights=s["lam"]) for s in stat]
    cy = [np.average(s["ypix"], weights=s["lam"]) for s in stat]
    np.testing.assert_allclose(a.pos_x, cx)
    np.testing.assert_allclose(a.pos_y, cy)
    # and sit where suite2p's `med` (read from the folder) is, up to the ROI's shape
    dist = np.hypot(a.pos_x - b.pos_x, a.pos_y - b.pos_y).values
    radius = np.array([s["radius"] for s in stat])
    assert np.median(dist) < 2.0  # measured 1.37 px
    assert np.mean(dist < radius) > 0.9  # measured 0.95 (elongated / fragmented ROIs differ)
    assert np.max(dist[b.is_cell.values]) < 8.0  # measured 6.0 px for the 20 cells
    unswapped = read_nwb(nwb_path, swap_xy=False)
    dist_wrong = np.hypot(unswapped.pos_x - b.pos_x, unswapped.pos_y - b.pos_y).values
    assert np.median(dist_wrong) > 50  # the pitfall the reader avoids


def test_activity_choice(twin):
    ds = read_nwb(twin[0], activity="F")
    np.testing.assert_array_equal(ds.activity, ds.F)
    with pytest.raises(
        ValueError, match=r"read_nwb\(\): `activity`='dff'.*\['F', 'neuropil', 'spks'\]"
    ):
        read_nwb(twin[0], activity="dff")


def test_head_direction_units_binned(hd_path):
    ds = read_nwb(hd_path, bin_width=0.1)
    assert ds.attrs["modality"] == "units"
    assert ds.attrs["frame_rate"] == pytest.approx(10.0)
    assert ds.sizes["unit"] == 15
    assert ds.sizes["time"] == 12000  # 0 .. 1199.97 s at 100 ms
    # README: spikes per unit
    np.testing.assert_array_equal(
        ds.counts.sum("time").values,
        [
            8764,
            6879,
            9743,
            8014,
            12925,
            13205,
            19819,
            2636,
            2419,
            1282,
            4702,
            3970,
            1313,
            1535,
            1588,
        ],
    )
    assert list(ds.location.values) == ["adn"] * 7 + ["ca1"] * 8
    np.testing.assert_allclose(np.diff(ds.frame_time.values), 0.1)
    # behaviour: head direction nearest-sampled to bins, NaN before tracking starts (670.6 s)
    hd = ds.behaviour.sel(behaviour_var="CompassDirection/ry")
    tracked = ds.frame_time > 671
    assert bool(hd.where(~tracked).isnull().sel(time=ds.frame_time.values < 670).all())
    assert float(hd[tracked.values].min()) >= 0
    assert float(hd[tracked.values].max()) <= 2 * np.pi
    # ripples are irregular events, not a sampled variable
    assert "sleep_ripples" not in list(ds.behaviour_var.values)
    epochs = ds.interval_table == "epochs"
    np.testing.assert_array_equal(ds.interval_start[epochs.values], [0, 600])
    assert list(ds.interval_tags[epochs.values].values) == ["sleep", "wake"]
    assert int((ds.interval_table == "sleep_ripples").sum()) == 594
    # a finer bin width gives more bins and the same total
    fine = read_nwb(hd_path, bin_width=0.02, t_start=600.0, t_stop=1200.0)
    assert fine.sizes["time"] == 30000
    assert float(fine.frame_time[0]) == pytest.approx(600.01)


def _nwbfile():
    return pynwb.NWBFile(
        session_description="t",
        identifier="t",
        session_start_time=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
    )


def _ophys_file(path, *, image_masks=False, n_planes=1, timestamps=None, dff=True):
    from pynwb.ophys import DfOverF, Fluorescence, ImageSegmentation, OpticalChannel

    nwb = _nwbfile()
    dev = nwb.create_device(name="scope")
    ophys = nwb.create_processing_module(name="ophys", description="o")
    seg = ImageSegmentation()
    ophys.add(seg)
    container = DfOverF(name="DfOverF") if dff else Fluorescence(name="Fluorescence")
    ophys.add(container)
    truth = {}
    for k in range(n_planes):
        chan = OpticalChannel(name="ch", description="c", emission_lambda=500.0)
        plane = nwb.create_imaging_plane(
            name=f"plane{k}",
            optical_channel=chan,
            imaging_rate=5.0,
            description="p",
            device=dev,
            excitation_lambda=900.0,
            indicator="GCaMP6s",
            location="V1",
        )
        ps = seg.create_plane_segmentation(
            name=f"PlaneSegmentation{k}", description="hand made", imaging_plane=plane
        )
        if image_masks == "box":
            for col in ("x", "y", "width", "height"):
                ps.add_column(name=col, description=col)
        n = 3 + k
        centres = [(2 + 3 * i, 5 + i) for i in range(n)]  # (x = column, y = row)
        for x, y in centres:
            if image_masks == "voxel":
                ps.add_roi(voxel_mask=[(x, y, k, 1.0), (x + 1, y, k, 0.5), (x - 1, y, k, 0.5)])
            elif image_masks == "box":
                ps.add_roi(pixel_mask=[(0, 0, 0.0)], x=x - 1, y=y - 2, width=2, height=4)
            elif image_masks:
                img = np.zeros((20, 20))  # NWB image_mask is (x, y)
                img[x - 1 : x + 2, y] = 1.0
                ps.add_roi(image_mask=img)
            else:
                ps.add_roi(pixel_mask=[(x, y, 0.5), (x + 1, y, 0.25), (x - 1, y, 0.25)])
        region = ps.create_roi_table_region(region=list(range(n)), description="all")
        data = np.random.default_rng(k).random((40, n)).astype(np.float32)
        timing = (
            {"timestamps": timestamps}
            if timestamps is not None
            else {"rate": 5.0, "starting_time": 2.0}
        )
        container.create_roi_response_series(
            name=f"plane{k}", data=data, rois=region, unit="a.u.", **timing
        )
        truth[k] = (data, np.array(centres, dtype=float))
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return truth


@pytest.mark.parametrize("image_masks", [False, True, "voxel"])
def test_dff_multiplane_with_timestamps(tmp_path, image_masks):
    ts = np.sort(np.random.default_rng(0).uniform(0, 10, 40))
    truth = _ophys_file(tmp_path / "a.nwb", image_masks=image_masks, n_planes=2, timestamps=ts)
    ds = read_nwb(tmp_path / "a.nwb")
    assert list(ds.data_vars) == ["dff", "activity"]
    assert ds.attrs["activity_variable"] == "dff"
    assert ds.sizes == {"time": 40, "unit": 7}
    np.testing.assert_array_equal(ds.frame_time, ts)
    np.testing.assert_array_equal(ds.dff.values[:, :3], truth[0][0])
    np.testing.assert_array_equal(ds.dff.values[:, 3:], truth[1][0])
    np.testing.assert_array_equal(ds.plane, [0, 0, 0, 1, 1, 1, 1])
    centres = np.concatenate([truth[0][1], truth[1][1]])
    np.testing.assert_allclose(ds.pos_x, centres[:, 0])
    np.testing.assert_allclose(ds.pos_y, centres[:, 1])
    expected_z = [0, 0, 0, 1, 1, 1, 1]  # voxel z, or the plane index
    np.testing.assert_allclose(ds.pos_z, expected_z)
    assert ds.attrs["xy_swapped"] is False


def test_allen_style_box_columns(tmp_path):
    truth = _ophys_file(tmp_path / "box.nwb", image_masks="box")
    ds = read_nwb(tmp_path / "box.nwb")
    np.testing.assert_allclose(ds.pos_x, truth[0][1][:, 0])
    np.testing.assert_allclose(ds.pos_y, truth[0][1][:, 1])
    assert "width" in ds.coords  # other table columns come along as unit coords


def test_starting_time_and_rate(tmp_path):
    _ophys_file(tmp_path / "b.nwb", dff=False)
    ds = read_nwb(tmp_path / "b.nwb")
    assert ds.attrs["activity_variable"] == "F"
    np.testing.assert_allclose(ds.frame_time, 2.0 + np.arange(40) / 5.0)
    assert ds.attrs["frame_rate"] == 5.0


def test_no_neural_data(tmp_path):
    nwb = _nwbfile()
    nwb.add_acquisition(pynwb.TimeSeries(name="speed", data=np.ones(10), unit="m/s", rate=1.0))
    with pynwb.NWBHDF5IO(str(tmp_path / "c.nwb"), "w") as io:
        io.write(nwb)
    with pytest.raises(RecordingFormatError, match=r"no neural data.*RoiResponseSeries.*/units"):
        read_nwb(tmp_path / "c.nwb")
    with pytest.raises(ValueError, match=r"`modality` must be"):
        read_nwb(tmp_path / "c.nwb", modality="ephys")


@pytest.mark.parametrize("fraction", [0.001, 0.5, 0.95])
def test_truncated_real_files(tmp_path, twin, hd_path, fraction):
    for src in (twin[0], hd_path):
        data = Path(src).read_bytes()
        bad = tmp_path / os.path.basename(src)
        bad.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(RecordingFormatError, match=r"read_nwb\(\).*(truncated|corrupted)"):
            read_nwb(bad)


def test_corrupted_file(tmp_path, hd_path):
    bad = tmp_path / "corrupt.nwb"
    shutil.copy(hd_path, bad)
    with h5py.File(hd_path, "r") as f:
        offset = f["units/spike_times"].id.get_offset()
    with open(bad, "r+b") as fp:  # overwrite the HDF5 superblock, then the spike data
        fp.write(b"\x00" * 64)
        fp.seek(offset)
        fp.write(b"\xff" * 4096)
    with pytest.raises(RecordingFormatError, match=r"corrupt\.nwb"):
        read_nwb(bad)
    garbage = tmp_path / "garbage.nwb"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(RecordingFormatError, match="not a readable HDF5"):
        read_nwb(garbage)


def _model_activity(rng, n_time=50, n_units=6, irregular=False):
    t = np.arange(n_time) / 25.0
    if irregular:
        t = np.cumsum(rng.uniform(0.01, 0.07, n_time))
    return xr.DataArray(
        rng.standard_normal((n_time, n_units)).astype(np.float32),
        dims=("time", "unit"),
        coords={
            "frame_time": ("time", t),
            "unit_id": ("unit", np.arange(10, 10 + n_units)),
            "pos_x": ("unit", rng.uniform(0, 3, n_units)),
            "pos_y": ("unit", rng.uniform(-2, 0, n_units)),
            "pos_z": ("unit", np.arange(n_units) // 2 * 1.0),
            "layer": ("unit", ["a"] * n_units),
            "stimulus": ("time", rng.permutation(n_time)),
            "label": ("time", np.arange(n_time) % 3),
            "condition": ("time", np.array(["stimulus"] * (n_time - 5) + ["spontaneous"] * 5)),
        },
        attrs={"frame_rate": 25.0},
    )


@pytest.mark.parametrize("irregular", [False, True])
def test_round_trip_and_pynwb_validation(tmp_path, rng, irregular):
    act = _model_activity(rng, irregular=irregular)
    path = write_nwb(act, tmp_path / "model.nwb")
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwbf = io.read()
        ps = nwbf.processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert len(ps) == 6
        series = nwbf.processing["ophys"]["Deconvolved"]["Deconvolved"]
        assert series.data.shape == (50, 6)
    assert list(pynwb.validate(path=str(path))) == []
    back = read_nwb(path)
    np.testing.assert_array_equal(back.activity, act)
    np.testing.assert_array_equal(back.F, act)
    np.testing.assert_allclose(back.frame_time, act.frame_time)
    for c in ("pos_x", "pos_y", "pos_z", "unit_id"):
        np.testing.assert_array_equal(back[c], act[c])
    assert back.attrs["xy_swapped"] is False
    # the per-frame table comes back as the 'presentations' interval table
    rows = back.interval_table == "presentations"
    np.testing.assert_allclose(back.interval_start[rows.values], act.frame_time)
    np.testing.assert_array_equal(back.interval_stimulus[rows.values], act.stimulus)
    np.testing.assert_array_equal(back.interval_label[rows.values], act.label)
    np.testing.assert_array_equal(back.interval_condition[rows.values], act.condition)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.nwb"]  # no temp file left
    with pytest.raises(FileExistsError, match=r"write_nwb\(\).*overwrite=True"):
        write_nwb(act, path)


def test_round_trip_calcium_dataset(tmp_path, rng):
    from netphys.population._calcium import simulate_calcium

    cal = simulate_calcium(_model_activity(rng, n_time=100), tau=0.5, rng=rng)
    back = read_nwb(write_nwb(cal, tmp_path / "cal.nwb"))
    for name in ("F", "neuropil", "spks", "activity"):
        np.testing.assert_array_equal(back[name], cal[name])
