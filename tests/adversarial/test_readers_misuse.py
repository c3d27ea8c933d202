"""Reader misuse and small hostile inputs: stale planes, bad rates, spike bombs, stray options."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from netphys.errors import RecordingFormatError, ResourceLimitError
from netphys.io import open_dataset, read_npz, read_suite2p, write_suite2p


def _act(n_time=30, n_unit=4, value=1.0):
    return xr.DataArray(
        np.full((n_time, n_unit), value, np.float32),
        dims=("time", "unit"),
        attrs={"frame_rate": 10.0},
    )


def test_overwrite_removes_a_stale_plane1_instead_of_merging_it(tmp_path):
    old = tmp_path / "plane1"
    old.mkdir()
    np.save(old / "F.npy", np.full((7, 30), 9.0, np.float32))
    np.save(old / "ops.npy", {"fs": 10.0})
    with pytest.raises(FileExistsError, match=r"plane1 already exists.*overwrite=True"):
        write_suite2p(_act(), tmp_path)
    assert (old / "F.npy").is_file()  # refused: nothing touched
    write_suite2p(_act(), tmp_path, overwrite=True)
    back = read_suite2p(tmp_path)
    assert back.sizes["unit"] == 4 and back.attrs["n_planes"] == 1
    assert float(back.activity.max()) == 1.0  # no 9.0 from the stale plane
    assert not old.exists()


def test_overwrite_keeps_unrelated_folders(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "plane7").mkdir()  # no F.npy: not a suite2p plane
    write_suite2p(_act(), tmp_path)
    write_suite2p(_act(value=2.0), tmp_path, overwrite=True)
    assert (tmp_path / "notes").is_dir() and (tmp_path / "plane7").is_dir()
    assert float(read_suite2p(tmp_path).activity.max()) == 2.0


@pytest.mark.parametrize("fs", [0.0, -1.0, np.inf, np.nan])
def test_suite2p_rate_zero_is_a_clear_error(tmp_path, fs):
    plane = tmp_path / "plane0"
    plane.mkdir()
    np.save(plane / "F.npy", np.zeros((2, 10), np.float32))
    np.save(plane / "ops.npy", {"fs": fs})
    with pytest.raises(RecordingFormatError, match=r"fs is .*finite and > 0.*frame_rate="):
        read_suite2p(tmp_path)
    assert np.isfinite(read_suite2p(tmp_path, frame_rate=5.0).frame_time).all()
    with pytest.raises(ValueError, match=r"read_suite2p\(\): `frame_rate` must be finite and > 0"):
        read_suite2p(tmp_path, frame_rate=0.0)


def test_npz_rate_zero_and_complex_matrix(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, spks=np.ones((3, 20)), fs=0.0)
    with pytest.raises(RecordingFormatError, match=r"`fs` is 0\.0.*finite and > 0"):
        read_npz(path)
    np.savez(path, spike_times=np.array([0.1 + 1j, 0.2]), spike_clusters=np.array([0, 1]))
    with pytest.raises(RecordingFormatError, match=r"`spike_times` holds complex data"):
        read_npz(path)


def test_npz_spike_time_of_1e12_seconds_is_refused(tmp_path):
    path = tmp_path / "spikes.npz"
    np.savez(path, spike_times=np.array([0.1, 1e12]), spike_clusters=np.array([0, 1]))
    with pytest.raises(ResourceLimitError, match=r"spike counts.*max_bytes"):
        read_npz(path)
    np.savez(path, spike_times=np.array([0.1, np.nan]), spike_clusters=np.array([0, 1]))
    with pytest.raises(RecordingFormatError, match=r"1 spike times are NaN or infinite"):
        read_npz(path)


def test_max_bytes_argument_is_checked(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, spike_times=np.array([0.1]), spike_clusters=np.array([0]))
    with pytest.raises(TypeError, match=r"read_npz\(\): `max_bytes` must be an int"):
        read_npz(path, max_bytes=True)
    with pytest.raises(ValueError, match=r"`max_bytes` must be > 0"):
        read_npz(path, max_bytes=0)
    assert read_npz(path, max_bytes=None).sizes["unit"] == 1


def test_open_dataset_refuses_options_the_reader_does_not_take(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, spike_times=np.array([0.1]), spike_clusters=np.array([0]))
    with pytest.raises(
        TypeError,
        match=r"read_npz\(\), which does not take `swap_xy`; it accepts activity, frame_rate",
    ):
        open_dataset(path, swap_xy=True)
    assert open_dataset(path, swap_xy=True, strict=False).attrs["format"] == "npz"
    assert open_dataset(path, max_bytes=2**20).attrs["format"] == "npz"


def test_values_near_1e160_warn_on_read_and_are_refused_by_the_check(tmp_path):
    from netphys._validation import check_magnitude
    from netphys.errors import NetphysWarning

    path = tmp_path / "huge.npz"
    spks = np.ones((3, 20))
    spks[1, 4] = -1e160
    np.savez(path, spks=spks, fs=10.0)
    with pytest.warns(NetphysWarning, match=r"huge\.npz.*values up to 1e\+160.*NaN.*Rescale"):
        ds = read_npz(path)
    assert float(ds.activity.min()) == -1e160  # read unchanged, with the warning
    with pytest.raises(ValueError, match=r"corr\(\): `x` holds values up to 1e\+160"):
        check_magnitude(spks, func="corr", name="x")
    # the check is right about the danger: the square overflows
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.isfinite(np.corrcoef(spks)[1, 1])
    assert check_magnitude(np.array([1e149, np.inf, np.nan]), func="f") == 1e149


def test_complex_activity_is_refused_not_made_real():
    from netphys._validation import check_population

    with pytest.raises(TypeError, match=r"f\(\): `activity`.*complex dtype complex128.*np\.abs"):
        check_population(np.ones((4, 3)) * (1 + 2j), func="f")


def test_mat_rate_zero_is_a_clear_error(tmp_path):
    import scipy.io

    from netphys.io import read_stringer_mat

    path = tmp_path / "r.mat"
    scipy.io.savemat(path, {"Fsp": np.ones((3, 20)), "VIDEOfs": 0.0})
    with pytest.raises(RecordingFormatError, match=r"VIDEOfs is 0\.0.*finite and > 0"):
        read_stringer_mat(path)
    assert np.isfinite(read_stringer_mat(path, frame_rate=3.0).frame_time).all()
