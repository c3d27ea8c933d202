"""netphys.anatomy on a model, on per-session weights and on a recording; WeightWatcher check."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import netphys  # noqa: E402
from netphys.experiments.anatomy import anatomy_report, session_means  # noqa: E402
from netphys.population import weight_spectra, weight_spectrum  # noqa: E402
from netphys.recorder import layer_weights  # noqa: E402


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 24, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(24 * 4 * 4, 40), torch.nn.ReLU(), torch.nn.Linear(40, 5),
    )  # fmt: skip


def test_model_rows_match_reshaped_weights() -> None:
    net = _net()
    ds = netphys.anatomy(net)
    assert ds["layer"].values.tolist() == ["0", "3", "5"]
    conv = net[0].weight.detach().double().numpy()
    direct = weight_spectrum(conv.reshape(24, 27))  # out x in*k*k, written out by hand
    np.testing.assert_allclose(
        ds["eigenvalue"].sel(layer="0").values[:24], direct["eigenvalue"].values, rtol=1e-12
    )
    assert int(ds["n_rows"].sel(layer="0")) == 24 and int(ds["n_cols"].sel(layer="0")) == 27
    # PyTorch's uniform initialisation is a random matrix: nothing above the MP edge
    assert int(ds["n_spikes"].sum()) == 0
    # a recorded activation stands for the weighted module that feeds it
    assert list(layer_weights(net, ["1", "4"])) == ["0", "3"]
    assert netphys.anatomy(net, layers="4")["layer"].values.tolist() == ["3"]


def test_recording_weights_per_session(tmp_path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(30, 40), torch.nn.ReLU(), torch.nn.Linear(40, 25), torch.nn.ReLU()
    ).eval()
    path = tmp_path / "r.zarr"
    x = torch.randn(20, 30)
    with netphys.Recorder(net, path, layers=["1", "3"]) as rec:
        for s in range(2):
            rec.session(s)
            with torch.no_grad():
                net(x)
                net[2].weight.mul_(2.0)  # the next session's weights differ
    ds = netphys.anatomy(path)
    assert ds["layer"].values.tolist() == ["1->3"]
    assert ds["session"].values.tolist() == [0, 1]
    stored = netphys.open_recording(path)["graph/1--3"].to_dataset()["weight"].values
    direct = weight_spectra({s: {"1->3": stored[i]} for i, s in enumerate([0, 1])})
    np.testing.assert_allclose(ds["eigenvalue"].values, direct["eigenvalue"].values)
    # doubling the weights quadruples the scale, leaves the shape of the spectrum
    np.testing.assert_allclose(
        ds["sigma2"].sel(session=1).values, 4 * ds["sigma2"].sel(session=0).values, rtol=1e-5
    )


def test_report_section(tmp_path) -> None:
    rng = np.random.default_rng(0)
    import xarray as xr

    act = xr.DataArray(
        np.maximum(rng.standard_normal((40, 12)), 0),
        dims=("time", "unit"),
        coords={
            "session": ("time", np.repeat([0, 1], 20)),
            "condition": ("time", ["stimulus"] * 40),
            "layer": ("unit", np.repeat(["a", "b"], 6)),
        },
    )
    w = {s: {"fc": rng.standard_normal((60, 30)) * (s + 1)} for s in (0, 1)}
    res = anatomy_report(act, w, tmp_path, prefix="x_")
    assert set(res["figures"]) == {"weight_spectra", "anatomy_sessions"}
    for name in res["figures"].values():
        assert (tmp_path / name).stat().st_size > 0
    assert set(res["sparseness"]["1"]) == {"a", "b"}
    stored = xr.open_zarr(tmp_path / res["weight_spectra_store"], consolidated=False)
    np.testing.assert_allclose(
        stored["eigenvalue"].sel(session=1, layer="fc").values,
        weight_spectrum(w[1]["fc"])["eigenvalue"].values,
    )
    means = session_means(res, 1)
    assert means["population_sparseness"] == pytest.approx(
        np.mean([res["sparseness"]["1"][k]["population_sparseness"] for k in "ab"])
    )
    assert means["weight_alpha"] == pytest.approx(res["weights"]["1"]["fc"]["alpha"])


def test_bad_input(tmp_path) -> None:
    with pytest.raises(TypeError, match=r"anatomy\(\): `source` must be a torch model"):
        netphys.anatomy(42)
    with pytest.raises(ValueError, match="`layers` applies to a model only"):
        netphys.anatomy({"a": np.eye(3)}, layers=["a"])
    with pytest.raises(ValueError, match=r"`layers` entry 'nope' is not a module"):
        layer_weights(_net(), ["nope"])
    with pytest.raises(ValueError, match="has no Linear or Conv layer"):
        layer_weights(torch.nn.ReLU())
    with pytest.raises(TypeError, match=r"must be a torch\.nn\.Module"):
        layer_weights(np.eye(3))
    net = _net()
    with torch.no_grad():
        net[3].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"weights\['3'\]` holds 1 NaN"):
        netphys.anatomy(net)
    path = tmp_path / "r.zarr"
    lin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    netphys.record(lin, torch.randn(5, 3), path, progress=False)  # one layer: no graph weights
    with pytest.raises(ValueError, match="holds no per-session weights"):
        netphys.anatomy(path)


@pytest.mark.slow
def test_alpha_agrees_with_weightwatcher() -> None:
    """Linear layers: the same eigenvalues (up to WeightWatcher's missing 1/N) and the same
    Clauset MLE with KS-chosen xmin, so alpha and D agree. Conv layers differ on purpose:
    WeightWatcher pools the ESDs of the k*k (out x in) slices, we reshape to out x in*k*k."""
    ww = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(120, 300), torch.nn.ReLU(), torch.nn.Linear(300, 150))
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight.copy_(torch.distributions.StudentT(3.0).sample(layer.weight.shape))
    ours = netphys.anatomy(net)
    theirs = ww.WeightWatcher(model=net).analyze()
    for (_, row), name in zip(theirs.iterrows(), ["0", "2"], strict=True):
        assert float(ours["alpha"].sel(layer=name)) == pytest.approx(row["alpha"], rel=1e-6)
        assert float(ours["ks_distance"].sel(layer=name)) == pytest.approx(row["D"], rel=1e-6)
        n = max(row["N"], row["M"])
        assert float(ours["xmin"].sel(layer=name)) == pytest.approx(row["xmin"] / n, rel=1e-6)
