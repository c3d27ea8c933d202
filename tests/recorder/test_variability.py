"""Trial-to-trial variability while recording: planted truths, exactness, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import netphys
from netphys.errors import NetphysWarning
from netphys.population import cvpca, repeat_responses
from netphys.variability import Dropout, InputNoise, Jitter, Poisson, parse_variability


def _layer(path, name="0"):
    return netphys.layer_activity(netphys.open_recording(path), name)


def test_no_variability_repeats_are_bit_identical_and_warned(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
    x = torch.randn(30, 6)
    with pytest.warns(NetphysWarning, match="without `variability`"):
        netphys.record(model, x, tmp_path / "r.zarr", layers=["1"], repeats=2, progress=False)
    act = _layer(tmp_path / "r.zarr", "1").values
    np.testing.assert_array_equal(act[:30], act[30:])
    np.testing.assert_array_equal(act[:30], model(x).detach().numpy())
    tree = netphys.open_recording(tmp_path / "r.zarr")
    assert tree.attrs.get("variability") is None
    with pytest.warns(NetphysWarning, match="repeats are identical"):
        cvpca(repeat_responses(_layer(tmp_path / "r.zarr", "1")), n_shuffles=0)


def test_poisson_units_give_the_analytic_signal_fraction(tmp_path) -> None:
    # planted: rectified activity a (stimulus x unit), counts ~ Poisson(g a), value counts / g;
    # signal variance per unit var_s(a), noise variance mean_s(a) / g
    rng = np.random.default_rng(0)
    a = rng.gamma(2.0, 0.5, size=(300, 600)).astype("float32")
    spec = Poisson(rate=20.0, frame_time=0.1)  # g = 2 spikes per frame at activity 1
    netphys.record(
        nn.Sequential(nn.ReLU()), a, tmp_path / "p.zarr", repeats=2, variability=spec,
        progress=False,
    )  # fmt: skip
    act = _layer(tmp_path / "p.zarr")
    counts = act.values * spec.gain
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)  # whole spike counts
    res = cvpca(repeat_responses(act), n_shuffles=0)
    var_s = a.astype(float).var(axis=0, ddof=0).sum()
    analytic = var_s / (var_s + a.astype(float).mean(axis=0).sum() / spec.gain)
    assert abs(float(res["signal_fraction"]) / analytic - 1) < 0.02
    assert 0.4 < analytic < 0.6  # gamma(2, 0.5): var 0.5, mean 1, g = 2 -> 0.5, far from 1


def test_input_noise_at_a_known_snr_gives_the_expected_reliable_fraction(tmp_path) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 1, 10, 40)).astype("float32")
    netphys.record(
        nn.Sequential(nn.Flatten()), x, tmp_path / "n.zarr", layers=["0"], repeats=2,
        variability=InputNoise(snr=4.0), progress=False,
    )  # fmt: skip
    tree = netphys.open_recording(tmp_path / "n.zarr")
    stored = tree.attrs["variability"]
    sigma = stored["sources"][0]["signal_std"]
    np.testing.assert_allclose(sigma, x.std(), rtol=1e-5)
    res = cvpca(repeat_responses(_layer(tmp_path / "n.zarr")), n_shuffles=0)
    var_s = x.reshape(300, -1).astype(float).var(axis=0).sum()
    expected = var_s / (var_s + 400 * sigma**2 / 4.0)  # about snr / (1 + snr) = 0.8
    assert abs(float(res["signal_fraction"]) - expected) < 0.02
    assert abs(expected - 0.8) < 0.02


def test_dropout_jitter_seed_and_attrs(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Identity(), nn.ReLU())
    before = [p.clone() for p in model.parameters()]
    x = torch.rand(40, 1, 6, 6) + 0.5  # positive: ReLU passes every pixel
    specs = [Jitter(pixels=1), Dropout(p=0.25, layers=["1"])]
    for name in ("a.zarr", "b.zarr"):
        netphys.record(
            model, x, tmp_path / name, layers=["1"], repeats=2, variability=specs, rng=3,
            progress=False,
        )  # fmt: skip
    a, b = _layer(tmp_path / "a.zarr", "1").values, _layer(tmp_path / "b.zarr", "1").values
    np.testing.assert_array_equal(a, b)  # same seed, same noise
    assert not np.array_equal(a[:40], a[40:])  # each repeat draws fresh noise
    assert abs((a == 0).mean() - 0.25) < 0.03
    # every kept value is a (shifted) pixel scaled by 1 / (1 - p)
    padded = np.pad(x.numpy()[:, 0], ((0, 0), (1, 1), (1, 1)), mode="edge")
    for i in range(40):
        frame = a[i].reshape(6, 6)
        kept = frame != 0
        ok = any(
            np.allclose(frame[kept], padded[i, 1 - dy : 7 - dy, 1 - dx : 7 - dx][kept] / 0.75)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        )
        assert ok, i
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True))
    stored = netphys.open_recording(tmp_path / "a.zarr").attrs["variability"]
    assert stored["seed"] == 3
    assert json.loads(json.dumps(stored)) == stored
    assert parse_variability(stored["sources"]) == specs


def test_info_shows_variability(tmp_path, capsys) -> None:
    from netphys.cli import main

    netphys.record(
        nn.Sequential(nn.ReLU()), torch.rand(5, 4), tmp_path / "r.zarr", repeats=1,
        variability="poisson", progress=False,
    )  # fmt: skip
    main(["info", str(tmp_path / "r.zarr")])
    assert "variability: poisson(rate=10.0, frame_time=0.1), seed 0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("gaussian", ValueError, r"unknown kind 'gaussian'; known kinds are 'input_noise'"),
        ({"kind": "poisson", "rate": -1}, ValueError, r"`rate` must be finite and > 0; got -1"),
        ({"kind": "input_noise", "snr": -2}, ValueError, r"`snr` must be finite and > 0"),
        ({"kind": "dropout", "p": 1.0}, ValueError, r"dropout `p` must be in \(0, 1\)"),
        ({"kind": "jitter", "px": 1}, ValueError, r"'jitter' has no option\(s\) \['px'\]"),
        (["dropout", Dropout(0.2)], ValueError, "given more than once"),
        (3.0, TypeError, "each source must be a spec"),
    ],
)
def test_bad_variability_is_rejected(value, error, match) -> None:
    with pytest.raises(error, match=match):
        parse_variability(value)


def test_bad_layer_and_non_image_jitter(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(ValueError, match=r"names modules \['nope'\]"):
        netphys.Recorder(model, tmp_path / "x.zarr", variability=Dropout(layers=["nope"]))
    with pytest.raises(ValueError, match="'jitter' needs image inputs"):
        netphys.record(model, torch.rand(5, 4), tmp_path / "y.zarr", variability=Jitter(),
                       progress=False)  # fmt: skip


def test_variability_on_call_sites_and_with_a_generator_rng(tmp_path) -> None:
    """A reused module recorded per call site gets the unit noise; a Generator seeds it."""
    from tests.recorder.models import TinyResNet

    torch.manual_seed(0)
    model, x = TinyResNet().eval(), torch.rand(6, 1, 8, 8)
    spec = Poisson(rate=10, frame_time=0.1)
    paths = [
        netphys.record(model, x, tmp_path / f"r{k}.zarr", repeats=2, variability=spec,
                       rng=np.random.default_rng(4), progress=False)
        for k in range(2)
    ]  # fmt: skip
    tree = netphys.open_recording(paths[0])
    assert "layer1.0.relu:1" in tree.attrs["layers"]
    seed = tree.attrs["variability"]["seed"]
    assert isinstance(seed, int) and seed == netphys.open_recording(paths[1]).attrs[
        "variability"]["seed"]  # fmt: skip
    act = _layer(paths[0], "layer1.0.relu:1").values
    assert not np.array_equal(act[:6], act[6:])  # fresh noise on the second repeat
    np.testing.assert_array_equal(act, _layer(paths[1], "layer1.0.relu:1").values)
    counts = act * spec.gain  # Poisson counts over the gain: integers
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
