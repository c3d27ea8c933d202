"""Models people use: ResNet blocks, DataLoaders, token models, RNNs, float64, train mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import netphys
from netphys.errors import NetphysWarning
from netphys.recorder._record import spontaneous_inputs
from tests.recorder.models import TinyResNet, TokenModel, capture_calls, mlp


def test_resnet_reused_relu_records_each_call_by_default(tmp_path):
    torch.manual_seed(0)
    model = TinyResNet().eval()
    x = torch.randn(7, 1, 6, 6)
    path = netphys.record(model, x, tmp_path / "r.zarr", batch_size=7, progress=False)
    tree = netphys.open_recording(path)
    layers = tree.attrs["layers"]
    assert layers == [
        "relu",
        "layer1.0.relu:0",
        "layer1.0.relu:1",
        "layer1.1.relu:0",
        "layer1.1.relu:1",
    ]
    calls = capture_calls(model, "layer1.0.relu", x)
    for k in (0, 1):
        got = netphys.layer_activity(tree, f"layer1.0.relu:{k}").values
        np.testing.assert_array_equal(got, calls[k].reshape(7, -1).numpy())
    assert netphys.layer_activity(tree).sizes["unit"] == 5 * 4 * 36
    # a chosen call site by name; the module itself by name is refused with the recipe
    path2 = netphys.record(
        model, x, tmp_path / "s.zarr", layers=["layer1.1.relu:1"], progress=False
    )
    got = netphys.layer_activity(path2).values
    np.testing.assert_array_equal(
        got, capture_calls(model, "layer1.1.relu", x)[1].reshape(7, -1).numpy()
    )
    with pytest.raises(netphys.errors.RecordingError, match=r"ran 2 times.*'layer1.0.relu:0'"):
        netphys.record(model, x, tmp_path / "t.zarr", layers=["layer1.0.relu"], progress=False)
    assert not (tmp_path / "t.zarr").exists()  # failed first forward: nothing left behind


def test_dataloader_is_accepted_and_lists_and_dicts_say_what_to_pass(tmp_path):
    torch.manual_seed(1)
    model = mlp().eval()
    x = torch.randn(10, 6)
    y = torch.arange(10) % 3
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    with pytest.warns(NetphysWarning, match="without `variability`"):  # repeats are identical
        path = netphys.record(model, loader, tmp_path / "r.zarr", layers=["1"], repeats=2,
                              n_spontaneous=3, progress=False)  # fmt: skip
    tree = netphys.open_recording(path)
    assert tree.sizes["time"] == 23
    np.testing.assert_array_equal(tree["stimulus"].values[:20], np.tile(np.arange(10), 2))
    np.testing.assert_array_equal(tree["label"].values[:10], y.numpy())
    np.testing.assert_array_equal(tree["repeat"].values[:20], np.repeat([0, 1], 10))
    with torch.no_grad():  # same batches as the loader (batch-size-dependent kernels)
        expected = torch.cat([torch.relu(model[0](xb)) for xb, _ in loader]).numpy()
    np.testing.assert_array_equal(netphys.layer_activity(tree).values[:10], expected)
    with pytest.raises(TypeError, match=r"got a list: stack the samples.*torch\.stack"):
        netphys.record(model, [x[0], x[1]], tmp_path / "l.zarr", progress=False)
    with pytest.raises(TypeError, match=r"got a dict: .*labels=d\['y'\]"):
        netphys.record(model, {"x": x, "y": y}, tmp_path / "d.zarr", progress=False)


def test_token_model_gets_random_token_spontaneous_frames(tmp_path):
    torch.manual_seed(2)
    model = TokenModel(vocab=11).eval()
    tokens = torch.randint(0, 11, (6, 5))
    path = netphys.record(model, tokens, tmp_path / "r.zarr", n_spontaneous=4, progress=False)
    tree = netphys.open_recording(path)
    assert tree.sizes["time"] == 10
    assert list(tree["condition"].values[-4:]) == ["spontaneous"] * 4
    noise = spontaneous_inputs(tokens, 500, rng=0, model=model)
    assert noise.dtype == torch.long and int(noise.min()) == 0 and int(noise.max()) == 10


def test_rnn_time_steps_as_frames_recipe(tmp_path):
    """Recipe (docs/format.md): one sequence per forward, time first, batch of 1.

    An ``nn.LSTM(batch_first=False)`` given a (T, 1, features) sequence outputs (T, 1, hidden):
    the recorder takes dim 0 as the frames, so each time step is one frame of ``hidden`` units;
    ``stimulus`` holds the sequence index and frames of one stimulus are its time steps.
    """
    torch.manual_seed(3)
    lstm = nn.LSTM(4, 8)
    model = nn.Sequential()
    model.add_module("lstm", lstm)
    seqs = [torch.randn(5, 1, 4), torch.randn(3, 1, 4)]
    path = tmp_path / "r.zarr"
    with netphys.Recorder(model, path, layers=["lstm"]) as rec, torch.no_grad():
        for i, s in enumerate(seqs):
            rec.annotate(stimulus=i)
            model(s)
    tree = netphys.open_recording(path)
    np.testing.assert_array_equal(tree["stimulus"].values, [0] * 5 + [1] * 3)
    with torch.no_grad():
        expected = torch.cat([lstm(s)[0][:, 0] for s in seqs]).numpy()
    np.testing.assert_array_equal(netphys.layer_activity(tree).values, expected)


def test_float64_is_kept_and_train_mode_is_stored(tmp_path):
    torch.manual_seed(4)
    model = mlp().double()
    x = torch.randn(5, 6, dtype=torch.float64)
    path = tmp_path / "r.zarr"
    with netphys.Recorder(model, path, layers=["1"]) as rec:
        model.train()
        model(x)
        model.eval()
        rec.session(1)
        model(x)
    tree = netphys.open_recording(path)
    act = netphys.layer_activity(tree)
    assert act.dtype == np.float64
    np.testing.assert_array_equal(act.values[:5], torch.relu(model[0](x)).detach().numpy())
    np.testing.assert_array_equal(tree["training"].values, [1] * 5 + [0] * 5)
    np.testing.assert_array_equal(
        tree["training"].attrs["flag_meanings"].split(), ["eval", "train"]
    )
    # spontaneous inputs keep the model's dtype
    assert spontaneous_inputs(x, 3, rng=0).dtype == torch.float64
