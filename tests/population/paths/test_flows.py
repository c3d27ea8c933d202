"""Tests of netphys.population.paths._flows: exact summaries and top-K against brute force (4.1)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import xarray as xr

from netphys.population.paths._flows import flow_kernel, path_flow, path_transitions, top_paths


def _random_contributions(
    rng: np.random.Generator, n: int = 6, widths=(5, 5, 5), dead: bool = True
):
    """Random contributions with some negative entries and a dead-end node."""
    data = {}
    for li, w in enumerate(widths):
        data[f"activity_{li}"] = (("sample", f"node_{li}"), rng.uniform(-0.2, 1, (n, w)))
    for li in range(1, len(widths)):
        c = rng.gamma(0.5, 1.0, (n, widths[li], widths[li - 1])) * rng.choice(
            [1.0, 1.0, 1.0, -1.0], size=(n, widths[li], widths[li - 1])
        )
        if dead:
            c[0, 0, :] = -1.0  # dead end: mass is lost
        data[f"contribution_{li}"] = (("sample", f"node_{li}", f"node_{li - 1}"), c)
        data[f"bias_{li}"] = (("sample", f"node_{li}"), rng.normal(0, 0.3, (n, widths[li])))
    return xr.Dataset(data)


def _brute(tr: xr.Dataset):
    """All paths with their flow, by enumeration. Returns list of (flow, nodes) per sample."""
    n_layers = sum(1 for v in tr.data_vars if v.startswith("activity_"))
    widths = [tr.sizes[f"node_{i}"] for i in range(n_layers)]
    r = tr["seed_mass"].values
    out = []
    for t in range(r.shape[0]):
        paths = []
        for p in itertools.product(*[range(w) for w in widths]):
            f = r[t, p[-1]]
            for li in range(1, n_layers):
                f *= tr[f"transition_{li}"].values[t, p[li], p[li - 1]]
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
        r = tr["seed_mass"].values[t]
        for li in range(3):
            # marginal = mass arriving at a node from the seed (prefixes from the top down)
            m = np.zeros(5)
            for pre in itertools.product(range(5), repeat=3 - li):  # (i_2, ..., i_li)
                f = r[pre[0]]
                for step in range(1, len(pre)):
                    f *= tr[f"transition_{3 - step}"].values[t, pre[step - 1], pre[step]]
                m[pre[-1]] += f
            np.testing.assert_allclose(fl[f"marginal_{li}"].values[t], m, atol=1e-12)
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
    tr = xr.Dataset(
        {
            "activity_0": (("sample", "node_0"), np.ones((1, 4))),
            "activity_1": (("sample", "node_1"), np.ones((1, 2))),
            "transition_1": (("sample", "node_1", "node_0"), np.full((1, 2, 4), 0.25)),
            "seed_mass": (("sample", "node_1"), np.full((1, 2), 0.5)),
        }
    )
    for method in ("beam", "exact"):
        ids = top_paths(tr, k=8, method=method)["path_id"].values[0]
        assert list(ids) == sorted(ids)


def test_seeds_from_output(rng):
    c = _random_contributions(rng, dead=False)
    n = c.sizes["sample"]
    c["output_contribution"] = (("sample", "output", "node_2"), rng.uniform(0, 1, (n, 3, 5)))
    c["logits"] = (("sample", "output"), rng.normal(size=(n, 3)))
    for seed in ("pred", "prob"):
        r = path_transitions(c, seed=seed)["seed_mass"].values
        np.testing.assert_allclose(r.sum(1), 1.0)
    y = np.arange(n) % 3
    r = path_transitions(c, seed="label", labels=y)["seed_mass"].values
    np.testing.assert_allclose(
        r,
        c["output_contribution"].values[np.arange(n), y]
        / c["output_contribution"].values[np.arange(n), y].sum(1, keepdims=True),
    )


def test_bad_input(rng):
    c = _random_contributions(rng)
    tr = path_transitions(c)
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        top_paths(tr, k=0)
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"`theta` must be a number in \(0, 1\]"):
            top_paths(tr, theta=bad)
    with pytest.raises(ValueError, match="needs the output contributions"):
        path_transitions(c, seed="pred")
    c["output_contribution"] = (("sample", "output", "node_2"), np.ones((6, 3, 5)))
    c["logits"] = (("sample", "output"), np.ones((6, 3)))
    with pytest.raises(ValueError, match="one entry per sample"):
        path_transitions(c, seed="label", labels=[0, 1])
    with pytest.raises(ValueError, match="`seed` must be one of"):
        path_transitions(c, seed="logit")
    with pytest.raises(ValueError, match="no recorded layers"):
        path_transitions(xr.Dataset())
    with pytest.raises(ValueError, match="`beam_width` must be >= k"):
        top_paths(tr, k=10, beam_width=5)


def test_mean_field_equals_closed_form_for_linear_layers(rng):
    """Without spatial dims the mean-field contributions are the exact ones."""
    import torch
    from torch import nn

    from netphys.population.paths._flows import mean_field_contributions
    from netphys.recorder.graph import edge_contributions, node_weights

    torch.manual_seed(int(rng.integers(1000)))
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU()).double().eval()
    x = torch.randn(12, 5, dtype=torch.float64)
    exact = edge_contributions(net, x, layers=["1", "3"], progress=False)
    w = node_weights(net, ["1", "3"], x)[("1", "3")]
    mf = mean_field_contributions(
        [exact["activity_0"].values, exact["activity_1"].values], [w],
        biases=[net[2].bias.detach().numpy()],
    )  # fmt: skip
    np.testing.assert_allclose(
        mf["contribution_1"].values, exact["contribution_1"].values, atol=1e-12
    )
    np.testing.assert_allclose(mf["bias_1"].values, exact["bias_1"].values, atol=1e-12)
    with pytest.raises(ValueError, match="len\\(nodes\\) - 1"):
        mean_field_contributions([exact["activity_0"].values], [w])
