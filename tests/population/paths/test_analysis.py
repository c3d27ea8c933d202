"""The whole concept analysis: numpy and torch entry points, the trained-net check (4.3)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from netphys.population.paths import concept_summary
from tests.population.paths.planted import MLP_LAYERS, WIDTH, PlantedMLP, inputs, weights


def _digits_mlp(torch_seed: int, train: bool, x_tr, y_tr) -> nn.Module:
    torch.manual_seed(torch_seed)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                        nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))  # fmt: skip
    if train:
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        xt, yt = torch.tensor(x_tr), torch.tensor(y_tr)
        for _ in range(300):  # full batch, as in the spec
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt), yt).backward()
            opt.step()
    return net.eval()


@pytest.mark.slow
def test_trained_digits_mlp_beats_untrained():
    """paths.md 4.3: flow_seed='activity', K=64, theta=0.9, support>=5, tau_c=0.7; 3 seeds + control."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from netphys.experiments import concept_analysis as model_concept_analysis

    digits = load_digits()
    x = (digits.data / 16).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, digits.target, test_size=0.5, stratify=digits.target, random_state=0
    )
    layers = ["1", "3", "5"]
    kw = {"layers": layers, "labels": y_te, "k": 64, "theta": 0.9, "min_support": 5,
              "distance_threshold": 0.7, "n_permutations": 100, "progress": False}  # fmt: skip
    untrained = concept_summary(
        model_concept_analysis(_digits_mlp(0, False, x_tr, y_tr), x_te, **kw)
    )
    lines = [f"untrained: {_fmt(untrained)}"]
    trained, nets = [], []
    for torch_seed in (0, 1, 2):
        net = _digits_mlp(torch_seed, True, x_tr, y_tr)
        nets.append(net)
        acc = float((net(torch.tensor(x_te)).argmax(1).numpy() == y_te).mean())
        s = concept_summary(model_concept_analysis(net, x_te, **kw))
        s["accuracy"] = acc
        trained.append(s)
        lines.append(f"seed {torch_seed}: {_fmt(s)}")
    report = "\n".join(lines)
    for s in trained:
        assert s["accuracy"] > 0.9, report
        assert s["weighted_jaccard_rho"] >= 0.3, report
        assert s["weighted_jaccard_p"] < 0.01, report
        assert s["nmi"] >= 0.35, report
        assert s["nmi"] >= untrained["nmi"] + 0.15, report
        assert s["purity"] >= untrained["purity"] + 0.1, report
        assert s["n_paths"] == 32768
    # diffuse flow (median coverage < 0.3): the edge-level variant is run as the spec asks
    assert trained[0]["coverage_median"] < 0.3, report
    edge = concept_summary(model_concept_analysis(nets[0], x_te, rows="edge", **kw))
    msg = f"edge level: {_fmt(edge)}\n{report}"
    assert edge["n_concepts"] >= 2, msg
    assert edge["nmi"] > untrained["nmi"], msg


def _fmt(s: dict) -> str:
    keys = (
        "accuracy",
        "nmi",
        "purity",
        "jaccard_rho",
        "weighted_jaccard_rho",
        "weighted_jaccard_p",
        "n_eff_median",
        "coverage_median",
        "certified_fraction",
        "n_concepts",
    )
    return ", ".join(f"{k}={s[k]:.3g}" for k in keys if k in s)


def test_concept_analysis_tree_saves_and_errors(tmp_path):
    from netphys.experiments import concept_analysis as model_concept_analysis

    gen = np.random.default_rng(0)
    ws, wo = weights(gen, False)
    x, y = inputs(gen, False, n_per_class=10)
    model = PlantedMLP(ws, wo).double().eval()
    tree = model_concept_analysis(model, x, layers=MLP_LAYERS, labels=y, k=32, kernel=True,
                            n_permutations=20, progress=False)  # fmt: skip
    assert tree["flow_kernel"].shape == (40, 40)
    assert tree["flow"]["layer_1"]["class_edge_flow"].shape == (4, WIDTH, WIDTH)
    s = concept_summary(tree)
    assert s["n_concepts"] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fixed-width-string or consolidation warning
        tree.to_zarr(tmp_path / "concepts.zarr", consolidated=False)
        back = xr.open_datatree(tmp_path / "concepts.zarr", engine="zarr", consolidated=False)
    np.testing.assert_array_equal(
        back["concepts"]["concept"].values, tree["concepts"]["concept"].values
    )
    with pytest.raises(ValueError, match="one entry per sample"):
        model_concept_analysis(model, x, layers=MLP_LAYERS, labels=y[:5], progress=False)
    with pytest.raises(ValueError, match="`layers` is empty"):
        model_concept_analysis(model, x, layers=[], progress=False)
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        model_concept_analysis(model, x, layers=MLP_LAYERS, k=0, progress=False)


def test_numpy_concept_analysis_layout_and_deprecated_names():
    """Results are layered trees; `seed=` / `unit=` still work for one release, with a warning."""
    from netphys.population.paths import concept_analysis, layer_names
    from netphys.population.paths._synthetic import relu_mlp_contributions

    c = relu_mlp_contributions(n_samples=60, widths=(6, 5, 4), n_outputs=3, rng=3)
    y = np.arange(60) % 3
    kw = {"labels": y, "k": 8, "min_support": 2, "n_permutations": 20}
    new = concept_analysis(c, flow_seed="pred", rows="edge", **kw)
    assert layer_names(new["flow"]) == ["layer_0", "layer_1", "layer_2"]
    flow1 = new["flow"]["layer_1"]
    assert flow1["edge_flow"].dims == ("sample", "node", "pre")
    assert flow1["class_edge_flow"].dims == ("category", "node", "pre")
    # the class flows are the edge flows summed over each class's samples
    np.testing.assert_allclose(
        flow1["class_edge_flow"].sel(category=1).values,
        flow1["edge_flow"].values[y == 1].sum(0),
        rtol=1e-12,
    )
    assert (new.attrs["flow_seed"], new.attrs["rows"]) == ("pred", "edge")
    with pytest.warns(DeprecationWarning, match="is deprecated") as rec:
        old = concept_analysis(c, seed="pred", unit="edge", **kw)
    messages = sorted(str(w.message) for w in rec)
    assert len(messages) == 2, messages
    assert "`seed` is deprecated" in messages[0]
    assert "`unit` is deprecated" in messages[1]
    xr.testing.assert_identical(old, new)
    with pytest.raises(ValueError, match="`rows` must be one of 'path', 'edge'"):
        concept_analysis(c, rows="unit", **kw)
    with pytest.raises(ValueError, match="one entry per sample"):
        concept_analysis(c, labels=y[:5])


def test_saved_concept_tree_round_trips_without_warnings(tmp_path):
    """String labels and layer names are written as variable-length strings (Zarr v3 spec)."""
    from netphys.experiments import concept_analysis as model_concept_analysis

    gen = np.random.default_rng(1)
    ws, wo = weights(gen, False)
    x, y = inputs(gen, False, n_per_class=10)
    names = np.array(["cat", "dog", "emu", "fox"])[y]  # numpy fixed-width '<U3' labels
    model = PlantedMLP(ws, wo).double().eval()
    tree = model_concept_analysis(model, x, layers=MLP_LAYERS, labels=names, k=16,
                                  n_permutations=5, progress=False)  # fmt: skip
    fixed = [
        (node.path, name)
        for node in tree.subtree
        for name, v in node.to_dataset(inherit=False).variables.items()
        if v.dtype.kind == "U"
    ]
    assert fixed == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tree.to_zarr(tmp_path / "c.zarr", consolidated=False)
        back = xr.open_datatree(tmp_path / "c.zarr", engine="zarr", consolidated=False).load()
    assert {node.path for node in back.subtree} == {node.path for node in tree.subtree}
    for node in tree.subtree:
        mine, read = node.to_dataset(inherit=False), back[node.path].to_dataset(inherit=False)
        assert set(read.variables) == set(mine.variables), node.path
        for name, var in mine.variables.items():
            assert read[name].dims == var.dims
            assert read[name].values.tolist() == var.values.tolist(), (node.path, name)
    assert back["selectivity"]["category"].values.tolist() == ["cat", "dog", "emu", "fox"]
    assert back["top"]["layer"].values.tolist() == list(MLP_LAYERS)
