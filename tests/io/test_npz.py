""".npz readers: IBL spike times (binned), rastermap-style matrices, unsafe and broken files."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from netphys.errors import RecordingFormatError, UnsafeFileError
from netphys.io import read_npz


@pytest.fixture(scope="module")
def ibl(shared_data):
    return os.path.join(shared_data, "ibl_brainbox_289units", "spikes.npz")


def test_ibl_spikes_binned(ibl):
    raw = np.load(ibl)
    ds = read_npz(ibl, bin_width=0.05)
    assert ds.attrs["modality"] == "units"
    assert ds.attrs["frame_rate"] == 20.0
    assert ds.sizes["unit"] == 289
    assert ds.sizes["time"] == 2400  # README: 120 s at 50 ms
    assert float(ds.counts.sum()) == raw["spike_times"].size  # every spike lands in a bin
    np.testing.assert_array_equal(ds.unit_id, np.unique(raw["spike_clusters"]))
    per_unit = np.bincount(np.searchsorted(ds.unit_id.values, raw["spike_clusters"]), minlength=289)
    np.testing.assert_array_equal(ds.counts.sum("time").values, per_unit)
    rates = ds.counts.sum("time").values / 120.0
    assert np.median(rates) == pytest.approx(0.98, abs=0.05)  # README: median 0.98 Hz
    np.testing.assert_array_equal(ds.interval_start, raw["event_times"])
    np.testing.assert_array_equal(ds.interval_group, raw["event_groups"])
    coarse = read_npz(ibl, bin_width=0.5)
    assert coarse.sizes["time"] == 240
    np.testing.assert_allclose(coarse.counts.sum(), ds.counts.sum())


def test_matrix_layout(tmp_path, rng):
    spks = rng.random((5, 30))
    path = tmp_path / "rast.npz"
    np.savez(
        path,
        spks=spks,
        xpos=np.arange(5.0),
        ypos=-np.arange(5.0),
        tneural=np.arange(30) * 0.1 + 1.0,
        run=rng.random(30),
    )
    ds = read_npz(path)
    np.testing.assert_array_equal(ds.activity.values, spks.T)
    np.testing.assert_array_equal(ds.pos_y, -np.arange(5.0))
    np.testing.assert_allclose(ds.frame_time[0], 1.0)
    assert ds.attrs["frame_rate"] == pytest.approx(10.0)
    assert list(ds.behaviour_var.values) == ["run"]
    path2 = tmp_path / "rast2.npz"
    np.savez(path2, sp=spks, xyz=rng.random((5, 3)))
    with pytest.raises(RecordingFormatError, match=r"no frame times or rate.*frame_rate="):
        read_npz(path2)
    assert read_npz(path2, frame_rate=3.0).attrs["frame_rate"] == 3.0


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_object_member_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    np.savez(path, spks=np.zeros((2, 3)), meta=np.array([_RunsCode(str(marker))], dtype=object))
    with pytest.raises(UnsafeFileError, match=r"evil\.npz::meta\.npy"):
        read_npz(path)
    assert not marker.exists()


def test_bad_input(tmp_path, ibl):
    path = tmp_path / "other.npz"
    np.savez(path, foo=np.ones(3))
    with pytest.raises(
        RecordingFormatError,
        match=r"no recognisable neural data: looked for.*spike_times.*\['foo'\]",
    ):
        read_npz(path)
    data = Path(ibl).read_bytes()
    for cut in (100, len(data) // 2):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(RecordingFormatError, match=rf"read_npz\(\).*cut{cut}\.npz"):
            read_npz(bad)
    # corrupt a compressed member inside an intact zip directory
    corrupt = tmp_path / "corrupt.npz"
    blob = bytearray(data)
    with zipfile.ZipFile(ibl) as zf:
        info = zf.getinfo("spike_times.npy")
    start = info.header_offset + 30 + len(info.filename) + 100
    blob[start : start + 2000] = os.urandom(2000)
    corrupt.write_bytes(bytes(blob))
    with pytest.raises(RecordingFormatError, match=r"corrupt\.npz"):
        read_npz(corrupt)
    with pytest.raises(ValueError, match="bin_width"):
        read_npz(ibl, bin_width=0)
