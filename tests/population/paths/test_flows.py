"""Tests of transitions, flows and top-K paths: exact summaries against brute force (4.1)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import xarray as xr

from netphys.population.paths import (
    flow_kernel,
    layer_names,
    path_flow,
    path_transitions,
    top_paths,
)


def _tree(layers: list[dict], root: dict | None = None, output: dict | None = None):
    """A layered DataTree from per-layer variable dicts (the layout of edge_contributions)."""
    nodes = {"/": xr.Dataset(root or {})}
    nodes.update({f"layer_{li}": xr.Dataset(data) for li, data in enumerate(layers)})
    if output is not None:
        nodes["output"] = xr.Dataset(output)
    return xr.DataTree.from_dict(nodes)


def _random_contributions(
    rng: np.random.Generator, n: int = 6, widths=(5, 5, 5), dead: bool = True
):
    """Random contributions with some negative entries and a dead-end node."""
    layers = []
    for li, w in enumerate(widths):
        data = {"activity": (("sample", "node"), rng.uniform(-0.2, 1, (n, w)))}
        if li > 0:
            c = rng.gamma(0.5, 1.0, (n, w, widths[li - 1])) * rng.choice(
                [1.0, 1.0, 1.0, -1.0], size=(n, w, widths[li - 1])
            )
            if dead:
                c[0, 0, :] = -1.0  # dead end: mass is lost
            data["contribution"] = (("sample", "node", "pre"), c)
            data["bias"] = (("sample", "node"), rng.normal(0, 0.3, (n, w)))
        layers.append(data)
    return _tree(layers)


def _transition(tr: xr.DataTree, li: int) -> np.ndarray:
    return tr[f"layer_{li}"]["transition"].values


def _brute(tr: xr.DataTree):
    """All paths with their flow, by enumeration. Returns list of (flow, nodes) per sample."""
    n_layers = len(layer_names(tr))
    widths = [tr[f"layer_{i}"].sizes["node"] for i in range(n_layers)]
    r = tr[f"layer_{n_layers - 1}"]["seed_mass"].values
    out = []
    for t in range(r.shape[0]):
        paths = []
        for p in itertools.product(*[range(w) for w in widths]):
            f = r[t, p[-1]]
            for li in range(1, n_layers):
                f *= _transition(tr, li)[t, p[li], p[li - 1]]
            pid = sum(p[i] * int(np.prod(widths[:i])) for i in range(n_layers))
            paths.append((f, pid, p))
        out.append(paths)
    return out


@pytest.mark.parametrize(("sign", "bias"), [("positive", "none"), ("abs", "absorb")])
def test_summaries_equal_brute_force(rng, sign, bias):
    tr = path_transitions(_random_contributions(rng), sign=sign, bias=bias)
    fl = path_flow(tr)
    brute = _brute(tr)
    kern = flow_kernel(tr, block_size=4).values
    for t, paths in enumerate(brute):
        phi = np.array([p[0] for p in paths])
        z = phi.sum()
        # float64 sums of 125 products: 1e-12 covers rounding
        assert abs(z - (1 - fl["lost_mass"].values[t])) < 1e-12
        q = phi[phi > 0] / z
        assert abs(-(q * np.log(q)).sum() - fl["entropy"].values[t]) < 1e-10
        r = tr["layer_2"]["seed_mass"].values[t]
        for li in range(3):
            # marginal = mass arriving at a node from the seed (prefixes from the top down)
            m = np.zeros(5)
            for pre in itertools.product(range(5), repeat=3 - li):  # (i_2, ..., i_li)
                f = r[pre[0]]
                for step in range(1, len(pre)):
                    f *= _transition(tr, 3 - step)[t, pre[step - 1], pre[step]]
                m[pre[-1]] += f
            np.testing.assert_allclose(fl[f"layer_{li}"]["marginal"].values[t], m, atol=1e-12)
        for u, paths_u in enumerate(brute):
            phi_u = np.array([p[0] for p in paths_u])
            assert abs(kern[t, u] - (phi * phi_u).sum()) < 1e-12
    assert fl["lost_mass"].values[0] > 0  # the planted dead end loses mass


def test_exact_kbest_equals_brute_force(rng):
    tr = path_transitions(_random_contributions(rng))
    k = 10
    top = top_paths(tr, k=k, method="exact")
    for t, paths in enumerate(_brute(tr)):
        ranked = sorted(paths, key=lambda p: (-p[0], p[1]))[:k]
        ranked = [p for p in ranked if p[0] > 0]
        np.testing.assert_allclose(
            top["flow"].values[t, : len(ranked)], [p[0] for p in ranked], rtol=1e-12
        )
        assert list(top["path_id"].values[t, : len(ranked)]) == [p[1] for p in ranked]
        assert [tuple(x) for x in top["nodes"].values[t, : len(ranked)]] == [p[2] for p in ranked]


def test_beam_equals_exact_when_certified(rng):
    tr = path_transitions(_random_contributions(rng, n=12))
    exact = top_paths(tr, k=8, method="exact")
    for width in (8, 16, 1024):
        beam = top_paths(tr, k=8, method="beam", beam_width=width)
        cert = beam["certified"].values
        if width == 1024:  # 125 paths < B: only tau pruning can cost the certificate
            assert cert.mean() > 0.5
        np.testing.assert_array_equal(beam["path_id"].values[cert], exact["path_id"].values[cert])
        np.testing.assert_allclose(
            beam["flow"].values[cert], exact["flow"].values[cert], rtol=1e-12
        )
    # a tiny beam must flag at least one sample as uncertified on random transitions
    tiny = top_paths(tr, k=8, beam_width=8, tau=0.2)
    assert not tiny["certified"].values.all()


def test_selection_by_theta(rng):
    tr = path_transitions(_random_contributions(rng))
    top = top_paths(tr, k=125, theta=0.5, method="exact")
    flow, sel, tot = top["flow"].values, top["selected"].values, top["total_flow"].values
    for t in range(flow.shape[0]):
        n_sel = sel[t].sum()
        assert flow[t, :n_sel].sum() >= 0.5 * tot[t] - 1e-12
        assert flow[t, : n_sel - 1].sum() < 0.5 * tot[t]
        assert top["k_theta"].values[t] == n_sel


def test_determinism(rng):
    c = _random_contributions(rng)
    a = top_paths(path_transitions(c), k=16)
    b = top_paths(path_transitions(c.copy(deep=True)), k=16)
    xr.testing.assert_identical(a, b)


def test_ties_broken_by_path_id():
    tr = _tree(
        [
            {"activity": (("sample", "node"), np.ones((1, 4)))},
            {
                "activity": (("sample", "node"), np.ones((1, 2))),
                "transition": (("sample", "node", "pre"), np.full((1, 2, 4), 0.25)),
                "seed_mass": (("sample", "node"), np.full((1, 2), 0.5)),
            },
        ]
    )
    for method in ("beam", "exact"):
        ids = top_paths(tr, k=8, method=method)["path_id"].values[0]
        assert list(ids) == sorted(ids)


def test_seeds_from_output(rng):
    c = _with_output(_random_contributions(rng, dead=False), rng.uniform(0, 1, (6, 3, 5)),
                     rng.normal(size=(6, 3)))  # fmt: skip
    n = 6
    for flow_seed in ("pred", "prob"):
        r = path_transitions(c, flow_seed=flow_seed)["layer_2"]["seed_mass"].values
        np.testing.assert_allclose(r.sum(1), 1.0)
    y = np.arange(n) % 3
    r = path_transitions(c, flow_seed="label", labels=y)["layer_2"]["seed_mass"].values
    out_c = c["output"]["contribution"].values
    np.testing.assert_allclose(
        r, out_c[np.arange(n), y] / out_c[np.arange(n), y].sum(1, keepdims=True)
    )


def _with_output(c: xr.DataTree, contribution: np.ndarray, logits: np.ndarray) -> xr.DataTree:
    """Add the output block (contributions to the logits) to a contributions tree."""
    c = c.copy()
    c["logits"] = xr.DataArray(logits, dims=("sample", "output"))
    c["output"] = xr.DataTree(
        xr.Dataset({"contribution": (("sample", "output", "pre"), contribution)})
    )
    return c


def test_bad_input(rng):
    c = _random_contributions(rng)
    tr = path_transitions(c)
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        top_paths(tr, k=0)
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"`theta` must be a number in \(0, 1\]"):
            top_paths(tr, theta=bad)
    with pytest.raises(ValueError, match="needs the output contributions"):
        path_transitions(c, flow_seed="pred")
    c = _with_output(c, np.ones((6, 3, 5)), np.ones((6, 3)))
    with pytest.raises(ValueError, match="one entry per sample"):
        path_transitions(c, flow_seed="label", labels=[0, 1])
    with pytest.raises(ValueError, match="`flow_seed` must be one of"):
        path_transitions(c, flow_seed="logit")
    with pytest.raises(ValueError, match="no recorded layers"):
        path_transitions(xr.Dataset())
    with pytest.raises(ValueError, match="no recorded layers"):
        path_transitions(xr.DataTree())
    with pytest.raises(TypeError, match=r"must be the xarray\.DataTree returned by"):
        path_transitions(np.zeros((3, 2)))
    with pytest.raises(TypeError, match="returned by path_transitions"):
        path_flow(c)
    with pytest.raises(ValueError, match="`beam_width` must be >= k"):
        top_paths(tr, k=10, beam_width=5)


def test_mean_field_equals_closed_form_for_linear_layers(rng):
    """Without spatial dims the mean-field contributions are the exact ones."""
    import torch
    from torch import nn

    from netphys.population.paths import mean_field_contributions
    from netphys.recorder.graph import edge_contributions, node_weights

    torch.manual_seed(int(rng.integers(1000)))
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU()).double().eval()
    x = torch.randn(12, 5, dtype=torch.float64)
    exact = edge_contributions(net, x, layers=["1", "3"], progress=False)
    w = node_weights(net, ["1", "3"], x)[("1", "3")]
    a0, a1 = exact["layer_0"]["activity"].values, exact["layer_1"]["activity"].values
    mf = mean_field_contributions([a0, a1], [w], biases=[net[2].bias.detach().numpy()])
    np.testing.assert_allclose(
        mf["layer_1"]["contribution"].values, exact["layer_1"]["contribution"].values, atol=1e-12
    )
    np.testing.assert_allclose(
        mf["layer_1"]["bias"].values, exact["layer_1"]["bias"].values, atol=1e-12
    )
    with pytest.raises(ValueError, match="len\\(nodes\\) - 1"):
        mean_field_contributions([a0], [w])


def test_deprecated_seed_keyword_and_flat_layout(rng):
    """`seed=` and the v0.1 flat variables still work for one release, with a warning."""
    c = _with_output(_random_contributions(rng), rng.uniform(0, 1, (6, 3, 5)),
                     rng.normal(size=(6, 3)))  # fmt: skip
    new = path_transitions(c, flow_seed="pred")
    with pytest.warns(DeprecationWarning, match="`seed` is deprecated"):
        old = path_transitions(c, seed="pred")
    xr.testing.assert_identical(old, new)
    with pytest.raises(TypeError, match="both `flow_seed`='prob' and its deprecated name"):
        path_transitions(c, flow_seed="prob", seed="pred")
    flat = {"logits": c["logits"].variable,
            "output_contribution": c["output"]["contribution"].variable}  # fmt: skip
    for li in range(3):
        for var in ("activity", "contribution", "bias"):
            if var in c[f"layer_{li}"]:
                flat[f"{var}_{li}"] = c[f"layer_{li}"][var].variable
    flat["output_bias"] = (("sample", "output"), np.zeros((6, 3)))
    with pytest.warns(DeprecationWarning, match="flat edge contributions"):
        legacy = path_transitions(xr.Dataset(flat), flow_seed="pred")
    for li in range(1, 3):
        np.testing.assert_array_equal(
            legacy[f"layer_{li}"]["transition"].values, new[f"layer_{li}"]["transition"].values
        )
    np.testing.assert_array_equal(
        legacy["layer_2"]["seed_mass"].values, new["layer_2"]["seed_mass"].values
    )


def test_numpy_relu_contributions_equal_recorder(rng):
    """The numpy example helper gives what edge_contributions gives for the same torch MLP."""
    import torch
    from torch import nn

    from netphys.population.paths._synthetic import relu_mlp_contributions
    from netphys.recorder.graph import edge_contributions

    seed = int(rng.integers(1000))
    c = relu_mlp_contributions(n_samples=7, n_inputs=4, widths=(5, 3), n_outputs=2, rng=seed)
    gen = np.random.default_rng(seed)  # replay the helper's draws: x, then (W, b) per layer
    x = gen.normal(size=(7, 4))
    mods: list[nn.Module] = []
    n_in = 4
    for w_out in (5, 3, 2):
        lin = nn.Linear(n_in, w_out).double()
        lin.weight.data = torch.tensor(gen.normal(size=(w_out, n_in)) / np.sqrt(n_in))
        lin.bias.data = torch.tensor(0.1 * gen.normal(size=w_out))
        mods += [lin, nn.ReLU()]
        n_in = w_out
    net = nn.Sequential(*mods[:-1]).eval()
    ref = edge_contributions(net, torch.tensor(x), layers=["1", "3"], progress=False)
    for li in range(2):
        for var in ("activity", "contribution", "bias"):
            if var in ref[f"layer_{li}"]:
                np.testing.assert_allclose(  # float64 sums of <= 5 terms
                    c[f"layer_{li}"][var].values, ref[f"layer_{li}"][var].values, atol=1e-12
                )
    np.testing.assert_allclose(c["logits"].values, ref["logits"].values, atol=1e-12)
    np.testing.assert_allclose(
        c["output"]["contribution"].values, ref["output"]["contribution"].values, atol=1e-12
    )
    assert c.attrs["methods"] == ref.attrs["methods"]
