"""Misuse of the Recorder: failed forwards, incompatible appends, two recorders, bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from torch import nn

import netphys
from netphys.errors import RecordingError
from tests.recorder.models import CNN, capture, mlp


class Flaky(nn.Module):
    """An MLP whose forward raises after its first layer when ``fail`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()
        self.fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net[1](self.net[0](x))
        if self.fail:
            raise RuntimeError("caught by the user")
        return self.net[4](self.net[3](self.net[2](h)))


# -- item 5: one failed forward must not brick the recorder ----------------------------------
def test_caught_exception_empty_batch_and_shape_change_do_not_brick(tmp_path):
    torch.manual_seed(0)
    model = Flaky().eval()
    xs = [torch.randn(3, 6) for _ in range(4)]
    path = tmp_path / "r.zarr"
    with netphys.Recorder(model, path, layers=["net.1", "net.3"], chunk_frames=4) as rec:
        model(xs[0])
        model.fail = True
        for _ in range(2):  # also before and after a block is full
            with pytest.raises(RuntimeError, match="caught by the user"):
                model(torch.randn(5, 6))
        model.fail = False
        model(xs[1])
        model(torch.zeros(0, 6))  # an empty batch records nothing
        with pytest.raises(RecordingError, match="per-sample shape"):
            model(torch.randn(2, 3, 6))  # another input shape: refused, then recording goes on
        model(xs[2])
        rec.annotate(stimulus=[7, 8, 9])
        model(xs[3])
    tree = netphys.open_recording(path)
    assert tree.sizes["time"] == 12
    expected = torch.cat([capture(model, ["net.3"], x)["net.3"] for x in xs]).numpy()
    np.testing.assert_array_equal(netphys.layer_activity(tree, "net.3").values, expected)
    np.testing.assert_array_equal(tree["stimulus"].values[-3:], [7, 8, 9])
    assert (tree["stimulus"].values[:9] == -1).all()  # annotations of failed calls dropped


# -- issue 13: a failed first forward leaves nothing in the way of a rerun -------------------
def test_failed_first_forward_leaves_no_store_and_keeps_replaced_one(tmp_path):
    model = Flaky().eval()
    model.fail = True
    path = tmp_path / "r.zarr"
    with pytest.raises(RuntimeError, match="caught"):
        netphys.record(model, torch.randn(4, 6), path, layers=["net.1"], progress=False)
    assert not path.exists()
    model.fail = False
    netphys.record(model, torch.randn(4, 6), path, layers=["net.1"], progress=False)
    model.fail = True
    with pytest.raises(RuntimeError, match="caught"):
        netphys.record(model, torch.randn(9, 6), path, mode="w", layers=["net.1"], progress=False)
    assert netphys.open_recording(path).sizes["time"] == 4  # the old recording is intact
    assert [p.name for p in tmp_path.iterdir()] == ["r.zarr"]  # no temp or lock left


# -- item 7: mode="w" replaces only recordings, and only once the new one exists ------------
def test_mode_w_refuses_non_recordings(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(FileExistsError, match=r"not a netphys recording.*only replaces"):
        netphys.record(mlp(), torch.randn(3, 6), folder, mode="w", progress=False)
    assert (folder / "cat.jpg").read_bytes() == b"meow"
    plain = tmp_path / "other.zarr"
    zarr.open_group(plain, mode="w", zarr_format=3).create_array("x", shape=(3,), dtype="f4")
    with pytest.raises(FileExistsError, match="not a netphys recording"):
        netphys.record(mlp(), torch.randn(3, 6), plain, mode="w", progress=False)
    assert "x" in zarr.open_group(plain, mode="r")
    afile = tmp_path / "notes.txt"
    afile.write_text("keep")
    with pytest.raises(FileExistsError, match="a file"):
        netphys.record(mlp(), torch.randn(3, 6), afile, mode="w", progress=False)
    assert afile.read_text() == "keep"


def test_mode_w_keeps_old_recording_until_the_new_one_commits(tmp_path):
    path = tmp_path / "r.zarr"
    model = mlp().eval()
    netphys.record(model, torch.randn(5, 6), path, layers=["1"], progress=False)
    with netphys.Recorder(model, path, layers=["1"], mode="w", chunk_frames=4) as rec:
        with torch.no_grad():
            model(torch.randn(2, 6))  # staged, not yet written
        assert netphys.open_recording(path).sizes["time"] == 5
        with torch.no_grad():
            model(torch.randn(2, 6))  # fills the first chunk: the new store takes the path
        assert rec.frames == 4
    tree = netphys.open_recording(path)
    assert tree.sizes["time"] == 4
    assert tree.attrs["status"] == "complete"


# -- item 6: incompatible appends are refused ------------------------------------------------
def test_append_refuses_other_units_layers_dtype(tmp_path):
    torch.manual_seed(1)
    model = CNN().eval()
    x = torch.randn(6, 1, 8, 8)
    path = tmp_path / "r.zarr"
    netphys.record(model, x, path, layers=["act1", "act2"], max_units=20, rng=1, progress=False)
    with pytest.raises(RecordingError, match=r"other units.*`rng`"):
        netphys.record(model, x, path, layers=["act1", "act2"], max_units=20, rng=2, mode="a",
                       progress=False)  # fmt: skip
    with pytest.raises(RecordingError, match=r"same layers.*layers=\['act1', 'act2'\]"):
        netphys.record(model, x, path, layers=["act1"], max_units=20, rng=1, mode="a",
                       progress=False)  # fmt: skip
    with pytest.raises(RecordingError, match="dtype"):
        netphys.record(model, x, path, layers=["act1", "act2"], max_units=20, rng=1, mode="a",
                       dtype="float16", progress=False)  # fmt: skip
    tree = netphys.open_recording(path)
    assert tree.sizes["time"] == 6 and tree.attrs["status"] == "complete"
    netphys.record(model, x, path, layers=["act1", "act2"], max_units=20, rng=1, mode="a",
                   progress=False)  # fmt: skip
    assert netphys.open_recording(path).sizes["time"] == 12


def test_reused_session_id_with_new_weights_is_refused(tmp_path):
    torch.manual_seed(2)
    model = mlp().eval()
    path = tmp_path / "r.zarr"
    x = torch.randn(4, 6)
    netphys.record(model, x, path, layers=["1", "3"], session=0, progress=False)
    netphys.record(model, x, path, layers=["1", "3"], session=0, mode="a", progress=False)
    with torch.no_grad():
        model[2].weight.mul_(3.0)
    with pytest.raises(RecordingError, match="session 0 already has other node weights"):
        netphys.record(model, x, path, layers=["1", "3"], session=0, mode="a", progress=False)
    netphys.record(model, x, path, layers=["1", "3"], session=1, mode="a", progress=False)
    tree = netphys.open_recording(path)
    np.testing.assert_array_equal(tree["session"].values, [0] * 8 + [1] * 4)
    w = tree["graph/1--3"]["weight"].values
    np.testing.assert_allclose(w[1], 3 * w[0], rtol=1e-6)


# -- item 8: two recorders, stateful models ---------------------------------------------------
def test_two_recorders_do_not_record_each_others_probe_and_probe_keeps_state(tmp_path):
    torch.manual_seed(3)
    model = CNN().train()  # BatchNorm in train mode: every forward moves running stats
    reference = CNN().train()
    reference.load_state_dict(model.state_dict())
    xs = [torch.randn(5, 1, 8, 8) for _ in range(3)]
    with (
        netphys.Recorder(model, tmp_path / "a.zarr", layers=["act1", "act2"]) as a,
        netphys.Recorder(model, tmp_path / "b.zarr", layers=["act2"]) as b,
    ):
        for s in range(2):
            a.session(s)
            b.session(s)
            with torch.no_grad():
                model(xs[s])
        with torch.no_grad():
            model(xs[2])
    with torch.no_grad():
        for x in xs:
            reference(x)
    for name in ("a", "b"):
        tree = netphys.open_recording(tmp_path / f"{name}.zarr")
        assert tree.sizes["time"] == 15
        assert (tree["training"].values == 1).all()
    torch.testing.assert_close(model.bn1.running_mean, reference.bn1.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(model.bn1.running_var, reference.bn1.running_var, rtol=0, atol=0)
    assert int(model.bn1.num_batches_tracked) == 3
    assert "graph" in xr.open_datatree(tmp_path / "a.zarr", engine="zarr").children


# -- item 10: bad arguments get clear errors --------------------------------------------------
def test_bad_arguments_get_clear_errors(tmp_path):
    p = tmp_path / "r.zarr"
    with pytest.raises(TypeError, match=r"record\(\): `labels` must hold integers.*0\.2"):
        netphys.record(mlp(), torch.randn(4, 6), p, labels=[0.2, 0.9, 1.5, 2.7], progress=False)
    with pytest.raises(TypeError, match=r"`batch_size` must be an int; got bool"):
        netphys.record(mlp(), torch.randn(4, 6), p, batch_size=True, progress=False)
    with pytest.raises(TypeError, match=r"`max_units` must be an int; got bool"):
        netphys.Recorder(mlp(), p, max_units=True)
    with pytest.raises(TypeError, match=r"`chunk_frames` must be an int; got bool"):
        netphys.Recorder(mlp(), p, chunk_frames=True)
    with pytest.raises(ValueError, match=r"`frame_rate` must be finite and > 0; got inf"):
        netphys.Recorder(mlp(), p, frame_rate=float("inf"))
    with pytest.raises(TypeError, match=r"`store_weights` must be True or False"):
        netphys.Recorder(mlp(), p, store_weights="yes")
    with pytest.raises(ValueError, match=r"`mode` must be one of"):
        netphys.Recorder(mlp(), p, mode="x")
    with pytest.raises(TypeError, match=r"`rng` must be None, an int seed or a numpy"):
        netphys.Recorder(mlp(), p, rng="seven")
    assert not p.exists()
    with netphys.Recorder(mlp(), p) as rec:
        with pytest.raises(
            TypeError, match=r"Recorder.session\(\): `session` must be an int; got str"
        ):
            rec.session("first")
        with pytest.raises(TypeError, match=r"`session` must be an int; got float 1.7"):
            rec.session(1.7)
        with pytest.raises(ValueError, match=r"`session` must be >= 0"):
            rec.session(-1)
    with pytest.warns(FutureWarning, match="`seed=` is deprecated"):
        rec = netphys.Recorder(mlp(), p, seed=3, mode="w")
    assert rec.seed == 3


def test_wrong_layer_names_close_matches_first_and_how_to_list_all(tmp_path):
    with pytest.raises(ValueError, match=r"Did you mean 'act1'\?.*closest first\): 'act1'"):
        netphys.Recorder(CNN(), tmp_path / "r.zarr", layers=["act_1"])
    big = nn.Sequential(*[nn.Sequential(nn.Linear(2, 2), nn.ReLU()) for _ in range(20)])
    with pytest.raises(ValueError, match=r"list them with `netphys.recorder.list_layers") as err:
        netphys.Recorder(big, tmp_path / "r.zarr", layers=["7.2"])
    assert "...." not in str(err.value) and "'7.1'" in str(err.value)
    assert len(netphys.recorder.list_layers(big)) == 60
