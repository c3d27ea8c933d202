"""Exports of a model recording: NWB (layer column, behaviour, presentations) and pynapple."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pynwb = pytest.importorskip("pynwb")

import netphys  # noqa: E402
from netphys.errors import NetphysWarning  # noqa: E402
from netphys.io import to_pynapple, write_nwb  # noqa: E402


@pytest.fixture(scope="module")
def rec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 5), torch.nn.ReLU(),
        torch.nn.Linear(5, 3),
    )  # fmt: skip
    path = tmp_path_factory.mktemp("exp") / "rec.zarr"
    with pytest.warns(NetphysWarning, match="without `variability`"):  # noise-free repeats
        netphys.record(model, torch.randn(8, 4), path, labels=np.arange(8) % 3, repeats=2,
                       n_spontaneous=4, progress=False)  # fmt: skip
    return path


def test_nwb_has_layers_behaviour_and_presentations(rec_path: Path, tmp_path: Path) -> None:
    rec = netphys.open_recording(rec_path)
    out = write_nwb(rec, tmp_path / "m.nwb")
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        rois = nwb.processing["ophys"]["ImageSegmentation"]["PlaneSegmentation"]
        assert list(rois["layer"].data[:]) == ["1"] * 6 + ["3"] * 5
        beh = nwb.processing["behavior"]["BehavioralTimeSeries"]
        logits = rec["behaviour/logits"].values
        np.testing.assert_array_equal(beh["logits"].data[:], logits)
        np.testing.assert_array_equal(beh["prediction"].data[:], logits.argmax(1))
        assert beh["logits"].rate == pytest.approx(rec.attrs["frame_rate"])
        table = nwb.intervals["presentations"]
        cond = [str(c) for c in table["condition"].data[:]]
        assert cond == ["stimulus"] * 16 + ["spontaneous"] * 4
        assert list(table["label"].data[:16]) == list(np.tile(np.arange(8) % 3, 2))
    back = netphys.io.read_nwb(out)  # the reader still opens it
    assert back.sizes["unit"] == 11


def test_to_pynapple_activity_and_frame_table(rec_path: Path) -> None:
    nap = pytest.importorskip("pynapple")
    rec = netphys.open_recording(rec_path)
    frames = to_pynapple(rec)
    assert isinstance(frames, nap.TsdFrame)
    act = netphys.layer_activity(rec)
    np.testing.assert_array_equal(np.asarray(frames.values), act.values)
    np.testing.assert_allclose(frames.t, rec["frame_time"].values)
    assert list(frames.metadata["layer"]) == ["1"] * 6 + ["3"] * 5
    np.testing.assert_array_equal(frames.metadata["unit_id"], act["unit_id"].values)
    only = to_pynapple(rec_path, "3")
    assert only.shape == (20, 5)
    table = to_pynapple(rec, frame_table=True)
    assert list(table.columns)[:4] == ["session", "stimulus", "label", "condition"]
    cond = np.asarray(table["condition"].values)
    meaning = dict(kv.split("=") for kv in table.metadata.loc["condition", "meaning"].split())
    assert [meaning[str(c)] for c in cond] == ["stimulus"] * 16 + ["spontaneous"] * 4


def test_to_pynapple_without_pynapple(monkeypatch: pytest.MonkeyPatch, rec_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pynapple", None)
    with pytest.raises(netphys.errors.MissingDependencyError, match=r"netphys\[pynapple\]"):
        to_pynapple(rec_path)
