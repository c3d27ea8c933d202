"""Recorder: round trips on several architectures, exactness, selection, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import netphys
from netphys.errors import RecordingError, RecordingFormatError
from tests.recorder.models import CNN, DictOut, Residual, Reused, Transformer, Wrapper, capture, mlp


def _flat(t: torch.Tensor, channel_last: bool = False) -> np.ndarray:
    if channel_last:
        t = t.movedim(-1, 1)
    return t.reshape(t.shape[0], -1).numpy()


@pytest.mark.parametrize(
    ("factory", "layers", "shape", "channel_last"),
    [
        (mlp, ["1", "3"], (6,), False),
        (CNN, ["act1", "pool", "fc"], (1, 8, 8), False),
        (Residual, ["act0", "out_act"], (1, 8, 8), False),
        (
            Transformer,
            ["embed", "encoder.layers.0.self_attn", "encoder.layers.0", "encoder.layers.1"],
            (7, 5),
            True,
        ),
    ],
)
def test_round_trip_equals_independent_capture(tmp_path, factory, layers, shape, channel_last):
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(70, *shape)
    netphys.record(
        model, x, tmp_path / "r.zarr", layers=layers, batch_size=16, chunk_frames=32, progress=False
    )
    expected = capture(model, layers, x)
    rec = netphys.open_recording(tmp_path / "r.zarr")
    for name in layers:
        got = netphys.layer_activity(rec, name).values
        # float32 recording is bit-exact
        np.testing.assert_array_equal(got, _flat(expected[name], channel_last))
        nodes = netphys.node_activity(rec, name).values
        t = expected[name].movedim(-1, 1) if channel_last else expected[name]
        ref_nodes = t.reshape(t.shape[0], t.shape[1], -1).float().mean(-1).numpy()
        np.testing.assert_allclose(nodes, ref_nodes, rtol=1e-6, atol=1e-7)
    logits = rec["behaviour"]["logits"].values
    with torch.no_grad():
        np.testing.assert_array_equal(logits, model(x).numpy())


def test_inplace_op_after_recorded_module_does_not_change_stored_values(tmp_path):
    torch.manual_seed(1)
    model = CNN(inplace=True).eval()
    x = torch.randn(20, 1, 8, 8)
    with torch.no_grad():
        pre = model.bn1(model.conv1(x)).clone()  # what bn1 produced, before the in-place ReLU
    assert (pre < 0).any()
    netphys.record(model, x, tmp_path / "r.zarr", layers=["bn1"], progress=False)
    got = netphys.layer_activity(tmp_path / "r.zarr").values
    np.testing.assert_array_equal(got, _flat(pre))


def test_float16_rounds_to_nearest(tmp_path):
    torch.manual_seed(2)
    model = mlp().eval()
    x = torch.randn(40, 6)
    netphys.record(model, x, tmp_path / "r.zarr", layers=["1"], dtype="float16", progress=False)
    got = netphys.layer_activity(tmp_path / "r.zarr").values
    assert got.dtype == np.float16
    ref = capture(model, ["1"], x)["1"].numpy().astype(np.float16)
    np.testing.assert_array_equal(got, ref)


def test_max_units_is_seeded_and_keeps_identity(tmp_path):
    torch.manual_seed(3)
    model = CNN().eval()
    x = torch.randn(30, 1, 8, 8)
    for name in ("a", "b"):
        netphys.record(
            model,
            x,
            tmp_path / f"{name}.zarr",
            layers=["act1"],
            max_units=50,
            rng=7,
            progress=False,
        )
    a = netphys.layer_activity(tmp_path / "a.zarr")
    b = netphys.layer_activity(tmp_path / "b.zarr")
    assert a.sizes["unit"] == 50
    np.testing.assert_array_equal(a.unit_id.values, b.unit_id.values)
    full = capture(model, ["act1"], x)["act1"]  # (30, 4, 8, 8)
    ids = a.unit_id.values
    np.testing.assert_array_equal(ids // 64, a.channel.values)
    np.testing.assert_array_equal((ids % 64) // 8, a.y.values)
    np.testing.assert_array_equal(ids % 8, a.x.values)
    expected = full[:, a.channel.values, a.y.values, a.x.values].numpy()
    np.testing.assert_array_equal(a.values, expected)
    # positions: feature-map position scaled to the field of view, depth in pos_z
    np.testing.assert_allclose(a.pos_x.values, (a.x.values + 0.5) / 8 * 1000.0)
    np.testing.assert_allclose(a.pos_y.values, (a.y.values + 0.5) / 8 * 1000.0)
    assert set(a.pos_z.values) == {0.0}
    c = netphys.record(
        model, x, tmp_path / "c.zarr", layers=["act1"], max_units=50, rng=8, progress=False
    )
    assert not np.array_equal(netphys.layer_activity(c).unit_id.values, ids)


def test_recorder_block_sessions_annotations_and_plain_xarray(tmp_path):
    torch.manual_seed(4)
    model = mlp()
    path = tmp_path / "r.zarr"
    with netphys.Recorder(model, path, layers=["1", "3"], chunk_frames=8) as rec:
        for session in range(2):
            rec.session(epoch=session)
            rec.annotate(stimulus=np.arange(10), label=np.arange(10) % 3, repeat=0)
            model(torch.randn(10, 6))
            rec.annotate(condition="spontaneous")
            model(torch.randn(5, 6))
            with rec.paused():
                model(torch.randn(100, 6))  # not recorded
        model(torch.randn(3, 6))  # bare call: recorded with defaults
    tree = netphys.open_recording(path)
    assert tree.attrs["status"] == "complete"
    assert tree.sizes["time"] == 33
    np.testing.assert_array_equal(tree["session"].values, [0] * 15 + [1] * 18)
    cond = tree["condition"].values
    assert list(cond[:15]) == ["stimulus"] * 10 + ["spontaneous"] * 5
    assert list(cond[-3:]) == ["stimulus"] * 3
    np.testing.assert_array_equal(tree["label"].values[:10], np.arange(10) % 3)
    assert (tree["stimulus"].values[10:15] == -1).all()
    loss = tree["behaviour"]["loss"].values
    assert np.isfinite(loss[:10]).all() and np.isnan(loss[10:15]).all()
    np.testing.assert_allclose(tree["frame_time"].values, np.arange(33) / 30.0)
    # plain xarray, without netphys
    plain = xr.open_datatree(path, engine="zarr")
    assert plain["layers/3"]["activity"].shape == (33, 12)
    assert plain["layers/1"]["activity"].dims == ("time", "unit")


def test_training_with_recorder_gives_same_losses(tmp_path):
    def train(record: bool) -> list[float]:
        torch.manual_seed(0)
        model = CNN()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(64, 1, 8, 8, generator=g)
        y = torch.randint(0, 5, (64,), generator=g)
        losses = []
        ctx = netphys.Recorder(model, tmp_path / f"t{record}.zarr", mode="w") if record else None
        if ctx:
            ctx.open()
        try:
            for epoch in range(3):
                if ctx:
                    ctx.session(epoch)
                for s in range(0, 64, 16):
                    opt.zero_grad()
                    loss = torch.nn.functional.cross_entropy(model(x[s : s + 16]), y[s : s + 16])
                    loss.backward()
                    opt.step()
                    losses.append(loss.item())
        finally:
            if ctx:
                ctx.close()
        return losses

    assert train(True) == train(False)
    assert netphys.open_recording(tmp_path / "tTrue.zarr").sizes["time"] == 3 * 64


def test_hooks_removed_after_exception(tmp_path):
    model = mlp()
    with pytest.raises(RuntimeError, match="boom"), netphys.Recorder(model, tmp_path / "r.zarr"):
        model(torch.randn(4, 6))
        raise RuntimeError("boom")
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    # the frames given before the exception are kept
    assert netphys.open_recording(tmp_path / "r.zarr").sizes["time"] == 4


def test_batches_larger_than_a_chunk_and_append_mode(tmp_path):
    torch.manual_seed(5)
    model = mlp().eval()
    x = torch.randn(50, 6)
    path = tmp_path / "r.zarr"
    netphys.record(model, x, path, layers=["1"], batch_size=23, chunk_frames=4, progress=False)
    netphys.record(model, x * 2, path, layers=["1"], mode="a", progress=False)
    tree = netphys.open_recording(path)
    assert tree.sizes["time"] == 100
    np.testing.assert_array_equal(np.unique(tree["session"].values), [0, 1])
    got = netphys.layer_activity(tree).values
    np.testing.assert_array_equal(got[:50], capture(model, ["1"], x)["1"].numpy())
    np.testing.assert_array_equal(got[50:], capture(model, ["1"], x * 2)["1"].numpy())


def test_graph_weights_stored_per_session(tmp_path):
    pytest.importorskip("netphys.recorder.graph")
    torch.manual_seed(6)
    model = mlp()
    path = tmp_path / "r.zarr"
    with netphys.Recorder(model, path, layers=["1", "3"]) as rec:
        for s in range(2):
            rec.session(s)
            model(torch.randn(4, 6))
            with torch.no_grad():
                model[2].weight.mul_(2.0)
    tree = netphys.open_recording(path)
    w = tree["graph/1--3"]["weight"].values
    assert w.shape == (2, 12, 16)
    np.testing.assert_allclose(w[1], 2 * w[0], rtol=1e-6)


# -- bad input ------------------------------------------------------------------------------
def test_wrong_layer_name_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match=r"not modules of CNN.*Valid names.*'conv1'"):
        netphys.Recorder(CNN(), tmp_path / "r.zarr", layers=["conv9"])


def test_empty_data_and_label_mismatch(tmp_path):
    with pytest.raises(ValueError, match="`data` is empty"):
        netphys.record(mlp(), torch.zeros(0, 6), tmp_path / "r.zarr")
    with pytest.raises(ValueError, match="`labels` has shape"):
        netphys.record(mlp(), torch.zeros(5, 6), tmp_path / "r.zarr", labels=[0, 1])
    model = mlp()
    with netphys.Recorder(model, tmp_path / "s.zarr") as rec:
        rec.annotate(label=[0, 1])
        with pytest.raises(ValueError, match="`label` has shape"):
            model(torch.zeros(5, 6))


def test_existing_path_refused_unless_asked(tmp_path):
    path = tmp_path / "r.zarr"
    netphys.record(mlp(), torch.randn(4, 6), path, progress=False)
    with pytest.raises(FileExistsError, match="mode='w'"):
        netphys.record(mlp(), torch.randn(4, 6), path, progress=False)
    netphys.record(mlp(), torch.randn(6, 6), path, mode="w", progress=False)
    assert netphys.open_recording(path).sizes["time"] == 6


def test_module_called_twice_and_dict_and_non_tensor_outputs(tmp_path):
    model = Reused()
    with netphys.Recorder(model, tmp_path / "a.zarr", layers=["act"]):
        with pytest.raises(RecordingError, match="ran 2 times"):
            model(torch.randn(2, 4))
    w = Wrapper()
    with netphys.Recorder(w, tmp_path / "b.zarr", layers=["inner"]):
        with pytest.raises(RecordingError, match="returns a dict with keys"):
            w(torch.randn(2, 4))
    # a dict-returning model: layers are recorded, behaviour is skipped
    d = DictOut()
    with netphys.Recorder(d, tmp_path / "c.zarr", layers=["fc"]):
        d(torch.randn(3, 4))
    assert netphys.open_recording(tmp_path / "c.zarr").sizes["time"] == 3


def test_bad_options(tmp_path):
    with pytest.raises(ValueError, match=r"`dtype` must be"):
        netphys.Recorder(mlp(), tmp_path / "r.zarr", dtype="int8")
    with pytest.raises(ValueError, match=r"`max_units` names layers"):
        netphys.Recorder(mlp(), tmp_path / "r.zarr", layers=["1"], max_units={"3": 4})
    with pytest.raises(TypeError, match=r"must be a torch\.nn\.Module"):
        netphys.Recorder("model", tmp_path / "r.zarr")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        netphys.record(mlp(), torch.randn(3, 6), tmp_path / "missing" / "r.zarr")


def test_open_non_recording(tmp_path):
    import zarr

    zarr.open_group(tmp_path / "x.zarr", mode="w", zarr_format=3)
    with pytest.raises(RecordingFormatError, match="not a netphys recording"):
        netphys.open_recording(tmp_path / "x.zarr")
    with pytest.raises(FileNotFoundError):
        netphys.open_recording(tmp_path / "nothing.zarr")
    with pytest.raises(ValueError, match="recorded layers are"):
        netphys.record(mlp(), torch.randn(3, 6), tmp_path / "r.zarr", progress=False)
        netphys.layer_activity(tmp_path / "r.zarr", "nope")


def test_unwritable_path(tmp_path):
    import os

    if os.geteuid() == 0:
        target = "/proc/netphys-test.zarr"  # not writable even for root
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = str(ro / "r.zarr")
    with pytest.raises(
        (PermissionError, OSError), match=r"(?i)cannot write|permission|not permitted|No such"
    ):
        netphys.record(mlp(), torch.randn(3, 6), target, progress=False)


def test_disk_full_gives_clear_error_not_hang(tmp_path, monkeypatch):
    import errno

    from netphys.io.recording import RecordingWriter

    real = RecordingWriter.write
    calls = {"n": 0}

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(RecordingWriter, "write", failing)
    model = mlp()
    with pytest.raises(RecordingError, match="No space left"):
        with netphys.Recorder(model, tmp_path / "r.zarr", chunk_frames=4) as rec:
            for _ in range(50):
                rec.annotate(condition="stimulus")
                model(torch.randn(4, 6))
    for m in model.modules():
        assert not m._forward_hooks
    # the first chunk made it to disk and stays readable
    assert netphys.open_recording(tmp_path / "r.zarr").sizes["time"] == 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_recording_is_exact(tmp_path):
    torch.manual_seed(7)
    model = CNN().cuda().eval()
    x = torch.randn(300, 1, 8, 8)
    netphys.record(
        model,
        x,
        tmp_path / "g.zarr",
        layers=["act1", "pool"],
        batch_size=64,
        chunk_frames=128,
        progress=False,
    )
    expected = capture(model, ["act1", "pool"], x.cuda())
    for name in ("act1", "pool"):
        got = netphys.layer_activity(tmp_path / "g.zarr", name).values
        np.testing.assert_array_equal(got, expected[name].cpu().reshape(300, -1).numpy())


def test_host_memory_cap_bounds_staging(tmp_path):
    torch.manual_seed(8)
    model = CNN().eval()
    x = torch.randn(200, 1, 8, 8)
    # 4*64 + 6*16 units (float32) ~ 1.5 kB per frame: a 32 kB cap leaves 4 frames per block
    # (5 blocks' room: 3 staging, 2 for the writer's copies; tracemalloc: test_memory_cap.py)
    rec = netphys.Recorder(
        model, tmp_path / "r.zarr", layers=["act1", "pool"], max_host_memory=32_000
    )
    with rec, torch.no_grad():
        for s in range(0, 200, 3):
            model(x[s : s + 3])
        capacity = rec._pool.capacity
        n_blocks = rec._pool.n_blocks
    assert capacity * (n_blocks + 2) * (4 * 64 + 6 * 16) * 4 <= 32_000
    got = netphys.layer_activity(tmp_path / "r.zarr", "act1").values
    np.testing.assert_array_equal(got, capture(model, ["act1"], x)["act1"].reshape(200, -1).numpy())
