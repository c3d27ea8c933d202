"""The on-disk format as plain xarray sees it, and version-1 stores still opening."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import netphys
from netphys.errors import NetphysWarning
from netphys.io.recording import FORMAT_VERSION, FRAME_FIELDS

torch = pytest.importorskip("torch")

V1 = Path(__file__).parent / "data" / "format_v1.zarr"


@pytest.fixture(scope="module")
def rec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    path = tmp_path_factory.mktemp("fmt") / "rec.zarr"
    labels = np.array([0, 1, 2, 0, 1, 2])
    with pytest.warns(NetphysWarning, match="without `variability`"):  # noise-free repeats
        netphys.record(
            model, torch.randn(6, 4), path, labels=labels, repeats=2, n_spontaneous=3,
            progress=False,
        )  # fmt: skip
    return path


def test_plain_xarray_reads_frame_table_as_coordinates(rec_path: Path) -> None:
    tree = xr.open_datatree(rec_path, engine="zarr")
    root = tree.to_dataset()
    assert tree.attrs["format_version"] == FORMAT_VERSION == 2
    for name in ("session", "label", "condition", "stimulus", "repeat"):
        assert name in root.coords, name
    assert not root.data_vars
    cond = [str(c) for c in root["condition"].values]
    assert cond == ["stimulus"] * 12 + ["spontaneous"] * 3
    # a stable order: two opens give the same coordinate order
    assert list(root.coords) == list(xr.open_datatree(rec_path, engine="zarr").to_dataset().coords)


def test_layer_groups_inherit_the_frame_table(rec_path: Path) -> None:
    rec = netphys.open_recording(rec_path)
    act = rec["layers/1/activity"]
    assert list(act.session.values) == [0] * 15
    assert act.condition.dtype.kind == "U"
    assert act.sel(condition="spontaneous").sizes["time"] == 3
    assert act.sel(label=2).sizes["time"] == 4  # 2 presentations x 2 repeats
    assert list(rec.to_dataset().coords)[: len(FRAME_FIELDS)] == list(FRAME_FIELDS)
    assert rec["behaviour/prediction"].repeat.values.tolist() == [0] * 6 + [1] * 6 + [0] * 3
    unit_coords = [k for k in act.coords if act[k].dims == ("unit",)]
    assert unit_coords == ["unit_id", "channel", "y", "x", "pos_x", "pos_y", "pos_z"]


def test_version_1_store_opens_with_conditions_decoded() -> None:
    rec = netphys.open_recording(V1)
    assert rec.attrs["format_version"] == 1
    act = rec["layers/1/activity"]
    assert act.sizes == {"time": 20, "unit": 6}
    expected = ["stimulus"] * 10 + ["spontaneous"] * 3 + ["stimulus"] * 5 + ["spontaneous"] * 2
    assert act.condition.values.tolist() == expected
    assert act.session.values.tolist() == [0] * 13 + [1] * 7
    assert "coordinates" not in rec.attrs


def test_append_to_version_1_store_keeps_codes(tmp_path: Path) -> None:
    path = tmp_path / "v1.zarr"
    shutil.copytree(V1, path)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    netphys.record(model, torch.randn(5, 4), path, mode="a", n_spontaneous=2, progress=False)
    rec = netphys.open_recording(path)
    assert rec.attrs["format_version"] == 1
    assert (
        rec.to_dataset()["condition"].values[-7:].tolist() == ["stimulus"] * 5 + ["spontaneous"] * 2
    )
    assert rec.to_dataset()["session"].values[-1] == 2


def test_newer_format_is_refused(tmp_path: Path) -> None:
    import zarr

    path = tmp_path / "v99.zarr"
    shutil.copytree(V1, path)
    zarr.open_group(path, mode="r+", use_consolidated=False).attrs["format_version"] = 99
    with pytest.raises(netphys.errors.RecordingFormatError, match="newer than this netphys"):
        netphys.open_recording(path)


def test_new_conditions_appended_to_version_1_store_keep_their_names(tmp_path: Path) -> None:
    """Each flush that adds a condition name keeps it (no stale metadata template)."""
    path = tmp_path / "v1.zarr"
    shutil.copytree(V1, path)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    chunk = zarr.open_array(path / "session", mode="r").chunks[0]
    n0 = netphys.open_recording(path).sizes["time"]
    names = ["gratings", "blank", "natural"]
    with torch.no_grad(), netphys.Recorder(model, path, mode="a") as rec:
        for name in names:  # one whole block per name: a flush after each
            rec.annotate(condition=name)
            model(torch.randn(chunk, 4))
    meanings = zarr.open_array(path / "condition", mode="r").attrs["flag_meanings"].split()
    assert meanings[-3:] == names
    cond = netphys.open_recording(path).to_dataset()["condition"].values[n0:].tolist()
    assert cond == [n for n in names for _ in range(chunk)]
