"""Exact flow over computational paths: node marginals, edge flows, entropy, kernel.

A path is one node per recorded layer, ``(i_0, ..., i_{L-1})``; its flow is the share of the
seed's mass routed along it: ``phi(p) = r(i_{L-1}) * prod_l T_l(i_l -> i_{l-1})``. Everything
here sums over all paths without enumerating them. Algorithm: ``reference/paths.md`` 3.3.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import check_fraction, check_int
from netphys.population.paths._layers import LAYER, build, layer_attr, n_layers, samples, values

__all__ = ["effective_paths", "flow_kernel", "path_flow"]


def unpack(tr: Any, func: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Seed mass (sample, node_top) and the transitions of layers 1..L-1 of a transitions tree."""
    n = n_layers(tr) if isinstance(tr, xr.DataTree) else 0
    if n == 0 or "seed_mass" not in tr[LAYER.format(n - 1)]:
        raise TypeError(
            f"{func}(): `transitions` must be the DataTree returned by path_transitions(); "
            f"got {type(tr).__name__}. Call path_transitions(contributions) first."
        )
    ts = [values(tr, li, "transition") for li in range(1, n)]
    return values(tr, n - 1, "seed_mass"), ts


def _log_t(t: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 0, np.log(np.where(t > 0, t, 1.0)), 0.0)


def flow_summary(r: np.ndarray, ts: list[np.ndarray]) -> dict[str, Any]:
    """Marginals (layer order), edge flows, mass, entropy of the normalised path distribution."""
    marg = [r]
    for t in reversed(ts):
        marg.append(np.einsum("tj,tji->ti", marg[-1], t))
    marg = marg[::-1]  # layer order
    down = [np.ones_like(marg[0])]
    for t in ts:
        down.append(np.einsum("tji,ti->tj", t, down[-1]))
    z = marg[0].sum(-1)
    s = (r * down[-1] * _log_t(r)).sum(-1)
    for li, t in enumerate(ts, start=1):
        s = s + np.einsum("tj,tji,ti->t", marg[li], t * _log_t(t), down[li - 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(z > 0, -s / np.where(z > 0, z, 1.0) + np.log(np.where(z > 0, z, 1.0)), 0.0)
    edges = [marg[li][:, :, None] * t for li, t in enumerate(ts, start=1)]
    return {"marginals": marg, "edges": edges, "mass": z, "entropy": h}


def path_flow(transitions: xr.DataTree) -> xr.DataTree:
    """Compute exact per-sample path summaries without enumerating paths.

    Parameters
    ----------
    transitions : xarray.DataTree
        Output of :func:`path_transitions`.

    Returns
    -------
    xarray.DataTree
        Root: ``lost_mass`` (sample) = 1 - total path flow (dead ends, absorbed bias);
        ``entropy`` (sample, nats) and ``n_eff`` = exp(entropy) of the normalised path
        distribution; ``npf_active_fraction`` (sample) = prod_l (#active nodes / width);
        ``n_paths`` (0-d): number of possible paths. One child per layer with ``marginal``
        (sample, node), the flow through each node, and from ``layer_1`` on ``edge_flow``
        (sample, node, pre).

    Notes
    -----
    ``m_{L-1} = r``, ``m_{l-1} = T_l^T m_l``; ``E_l = m_l(j) T_l(j, i)``. The entropy sums,
    over edges, ``m_l(j) T_l(j,i) D_{l-1}(i) log T_l(j,i)`` where ``D`` is the mass reaching the
    bottom from a node, which is the chain rule extended to sub-stochastic transitions.

    Examples
    --------
    >>> from netphys.population.paths import path_transitions
    >>> from netphys.population.paths._synthetic import relu_mlp_contributions
    >>> fl = path_flow(path_transitions(relu_mlp_contributions(n_samples=4)))
    >>> fl["layer_0"]["marginal"].sum("node").values.round(6).tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    r, ts = unpack(transitions, "path_flow")
    f = flow_summary(r, ts)
    n_lay = len(ts) + 1
    layers: list[dict[str, Any]] = [
        {"marginal": (("sample", "node"), f["marginals"][li])} for li in range(n_lay)
    ]
    for li in range(1, n_lay):
        layers[li]["edge_flow"] = (("sample", "node", "pre"), f["edges"][li - 1])
    rho = np.ones(r.shape[0])
    for li in range(n_lay):
        rho = rho * (values(transitions, li, "activity") > 0).mean(-1)
    widths = [transitions[LAYER.format(li)].sizes["node"] for li in range(n_lay)]
    root = xr.Dataset(
        {
            "lost_mass": (("sample",), np.clip(1.0 - f["mass"], 0.0, 1.0)),
            "entropy": (("sample",), f["entropy"], {"units": "nats"}),
            "n_eff": (("sample",), np.where(f["mass"] > 0, np.exp(f["entropy"]), 0.0)),
            "npf_active_fraction": (("sample",), rho),
            "n_paths": ((), float(np.prod(np.asarray(widths, dtype=float)))),
        },
        coords={"sample": samples(transitions)},
    )
    root.attrs = dict(transitions.attrs)
    return build(root, layers, layer_attrs=layer_attr(transitions))


def flow_kernel(transitions: xr.DataTree, *, block_size: int = 64) -> xr.DataArray:
    """Compute the flow kernel K(t, t') = sum_p phi_t(p) phi_t'(p) exactly.

    Parameters
    ----------
    transitions : xarray.DataTree
        Output of :func:`path_transitions`.
    block_size : int, default=64
        Rows computed at once (memory block_size * n_samples * width).

    Returns
    -------
    xarray.DataArray
        Dims (sample, sample_), symmetric, float64.

    Notes
    -----
    ``u_{L-1} = r_t * r_t'``; ``u_{l-1}(i) = sum_j u_l(j) T_l[t](j,i) T_l[t'](j,i)``; ``K = sum
    u_0``. Cost O(T^2 sum_l W_l W_{l-1}); meant for up to ~2000 samples.

    Examples
    --------
    >>> from netphys.population.paths import path_transitions
    >>> from netphys.population.paths._synthetic import relu_mlp_contributions
    >>> k = flow_kernel(path_transitions(relu_mlp_contributions(n_samples=5)))
    >>> k.dims, bool((k == k.T).all())
    (('sample', 'sample_'), True)
    """
    r, ts = unpack(transitions, "flow_kernel")
    block_size = check_int(block_size, func="flow_kernel", name="block_size", minimum=1)
    n = r.shape[0]
    k = np.zeros((n, n))
    for a0 in range(0, n, block_size):
        sl = slice(a0, a0 + block_size)
        u = r[sl, None, :] * r[None, :, :]
        for t in reversed(ts):
            u = np.einsum("abj,aji,bji->abi", u, t[sl], t, optimize=True)
        k[sl] = u.sum(-1)
    s = samples(transitions)
    return xr.DataArray(
        k, dims=("sample", "sample_"), coords={"sample": s, "sample_": s}, name="flow_kernel"
    )


def _theta_prefix(w: np.ndarray, theta: float) -> np.ndarray:
    """Mask of the shortest prefix of each row, sorted descending, whose sum reaches theta."""
    order = np.argsort(-w, axis=-1, kind="stable")
    ws = np.take_along_axis(w, order, -1)
    before = np.cumsum(ws, -1) - ws
    keep_sorted = (before < theta * w.sum(-1, keepdims=True) - 1e-15) & (ws > 0)
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, -1)
    return np.asarray(keep, dtype=bool)


def effective_paths(transitions: xr.DataTree, *, theta: float = 0.5) -> xr.DataTree:
    """Select each sample's effective path (Qiu et al. 2019): per-node cumulative-theta edges.

    From the seed down, each selected node keeps the smallest set of its inputs (largest
    transition first) whose share reaches ``theta``; the kept inputs are selected one layer
    down. The seed (e.g. ``flow_seed='pred'``: the predicted class's inputs) is treated the
    same way.

    Parameters
    ----------
    transitions : xarray.DataTree
        Output of :func:`path_transitions`.
    theta : float, default=0.5
        Cumulative share kept at each node, in (0, 1].

    Returns
    -------
    xarray.DataTree
        One child per layer with ``node_selected`` (sample, node) bool and, from ``layer_1``
        on, ``edge_selected`` (sample, node, pre) bool. :func:`edge_matrix` accepts it (the
        ``rows='edge'`` matrix of binary effective-path edges).

    References
    ----------
    Qiu, Y. et al. Adversarial defense through network profiling based path extraction.
    CVPR 2019. doi:10.1109/CVPR.2019.00491

    Examples
    --------
    >>> from netphys.population.paths import path_transitions
    >>> from netphys.population.paths._synthetic import relu_mlp_contributions
    >>> tr = path_transitions(relu_mlp_contributions(n_samples=3))
    >>> ep = effective_paths(tr, theta=0.5)
    >>> ep["layer_1"]["edge_selected"].dims, ep["layer_1"]["edge_selected"].dtype
    (('sample', 'node', 'pre'), dtype('bool'))
    """
    func = "effective_paths"
    r, ts = unpack(transitions, func)
    theta = check_fraction(theta, func=func, name="theta")
    n_lay = len(ts) + 1
    layers: list[dict[str, Any]] = [{} for _ in range(n_lay)]
    sel = _theta_prefix(r, theta)
    layers[n_lay - 1]["node_selected"] = (("sample", "node"), sel)
    for li in range(n_lay - 1, 0, -1):
        edges = _theta_prefix(ts[li - 1], theta) & sel[:, :, None]
        layers[li]["edge_selected"] = (("sample", "node", "pre"), edges)
        sel = edges.any(1)
        layers[li - 1]["node_selected"] = (("sample", "node"), sel)
    root = xr.Dataset(coords={"sample": samples(transitions)})
    root.attrs = {**transitions.attrs, "theta": theta, "select": "effective_path"}
    return build(root, layers, layer_attrs=layer_attr(transitions))
