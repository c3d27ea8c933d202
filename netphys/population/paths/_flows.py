"""Flow over computational paths: transitions, exact summaries, top-K paths.

Works on the per-sample edge contributions computed by
:func:`netphys.recorder.graph.edge_contributions` (an xarray Dataset with ``contribution_l``,
``bias_l``, ``activity_l`` and optionally ``output_contribution`` / ``logits``). Never imports
torch. Algorithm: ``reference/paths.md`` section 3.3.

A path is one node per recorded layer, ``(i_0, ..., i_{L-1})``; its flow is the share of the
seed's mass routed along it: ``phi(p) = r(i_{L-1}) * prod_l T_l(i_l -> i_{l-1})``. Path ids are
mixed-radix integers ``sum_l i_l * prod_{l' < l} W_{l'}``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import check_choice, check_int

__all__ = [
    "effective_paths",
    "flow_kernel",
    "mean_field_contributions",
    "path_flow",
    "path_transitions",
    "top_paths",
]

_SEEDS = ("activity", "pred", "label", "prob")


# ------------------------------------------------------------------------------------------
# transitions
# ------------------------------------------------------------------------------------------
def _n_layers(ds: xr.Dataset) -> int:
    n = 0
    while f"activity_{n}" in ds:
        n += 1
    return n


def _rule(c: np.ndarray, beta: np.ndarray | None, sign: str, bias: str) -> tuple[np.ndarray, ...]:
    """Transition rows from contributions c (T, J, I): returns T, edge signs, inhibitory share."""
    if sign == "abs":
        w = np.abs(c)
        sg = np.sign(c).astype(np.int8)
    else:
        w = np.maximum(c, 0.0)
        sg = np.ones(c.shape, dtype=np.int8)
    den = w.sum(-1)
    if bias == "absorb" and beta is not None:
        den = den + (np.abs(beta) if sign == "abs" else np.maximum(beta, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(den[..., None] > 0, w / np.where(den > 0, den, 1.0)[..., None], 0.0)
        absc = np.abs(c).sum(-1)
        nu = np.where(absc > 0, np.maximum(-c, 0.0).sum(-1) / np.where(absc > 0, absc, 1), 0.0)
    return t, sg, nu


def path_transitions(
    contributions: xr.Dataset,
    *,
    seed: str = "activity",
    labels: Any = None,
    sign: str = "positive",
    bias: str = "none",
) -> xr.Dataset:
    """Turn edge contributions into backward transition probabilities and a seed.

    Parameters
    ----------
    contributions : xarray.Dataset
        Output of :func:`netphys.recorder.graph.edge_contributions` (or the same variables).
    seed : {'activity', 'pred', 'label', 'prob'}, default='activity'
        Mass on the top recorded layer. 'activity': its positive activity, normalised (uses no
        output or label). 'pred' / 'label' / 'prob': one step down from the output, starting
        at the predicted class, the label or the softmax.
    labels : array-like of int, optional
        One class per sample; required for ``seed='label'``.
    sign : {'positive', 'abs'}, default='positive'
        'positive' routes flow along positive contributions only; 'abs' uses ``|c|`` and
        tracks the sign of each edge.
    bias : {'none', 'absorb'}, default='none'
        'absorb' adds the positive bias share to each node's denominator; that share is lost.

    Returns
    -------
    xarray.Dataset
        ``seed_mass`` (sample, node_{L-1}); ``transition_l`` (sample, node_l, node_{l-1}),
        rows summing to 1 (or 0 at dead ends); ``edge_sign_l`` (int8); ``inhibitory_share_l``
        (sample, node_l) = sum c- / sum |c|; ``activity_l`` copied from the input.

    Raises
    ------
    ValueError
        Unknown option, no layers, labels of the wrong length, or an output seed without the
        output contributions.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"activity_0": (("sample", "node_0"), np.ones((2, 3))),
    ...                  "activity_1": (("sample", "node_1"), np.ones((2, 2))),
    ...                  "contribution_1": (("sample", "node_1", "node_0"), np.ones((2, 2, 3)))})
    >>> path_transitions(ds)["transition_1"].values[0, 0]
    array([0.33333333, 0.33333333, 0.33333333])
    """
    func = "path_transitions"
    seed = check_choice(seed, _SEEDS, func=func, name="seed")
    sign = check_choice(sign, ("positive", "abs"), func=func, name="sign")
    bias = check_choice(bias, ("none", "absorb"), func=func, name="bias")
    if not isinstance(contributions, xr.Dataset):
        raise TypeError(
            f"{func}(): `contributions` must be the xarray.Dataset returned by "
            f"netphys.recorder.graph.edge_contributions; got {type(contributions).__name__}."
        )
    n_layers = _n_layers(contributions)
    if n_layers == 0:
        raise ValueError(
            f"{func}(): `contributions` has no recorded layers (no 'activity_0' variable); "
            f"got variables {list(contributions.data_vars)}. Compute it with edge_contributions()."
        )
    n = contributions.sizes["sample"]
    out: dict[str, Any] = {}
    for li in range(n_layers):
        out[f"activity_{li}"] = contributions[f"activity_{li}"]
    for li in range(1, n_layers):
        c = np.asarray(contributions[f"contribution_{li}"].values, dtype=np.float64)
        beta = contributions.get(f"bias_{li}")
        t, sg, nu = _rule(
            c, None if beta is None else np.asarray(beta.values, np.float64), sign, bias
        )
        dims = ("sample", f"node_{li}", f"node_{li - 1}")
        out[f"transition_{li}"] = (dims, t)
        out[f"edge_sign_{li}"] = (dims, sg)
        out[f"inhibitory_share_{li}"] = (("sample", f"node_{li}"), nu)
    top = f"node_{n_layers - 1}"
    if seed == "activity":
        a = np.maximum(np.asarray(contributions[f"activity_{n_layers - 1}"].values, np.float64), 0)
        tot = a.sum(-1, keepdims=True)
        r = np.where(tot > 0, a / np.where(tot > 0, tot, 1.0), 0.0)
        seed_sign = np.ones(r.shape, np.int8)
    else:
        if "output_contribution" not in contributions:
            raise ValueError(
                f"{func}(): seed={seed!r} needs the output contributions ('output_contribution' "
                "and 'logits'), which `contributions` lacks (the model output is not a 2-D "
                "tensor). Use seed='activity'."
            )
        z = np.asarray(contributions["logits"].values, np.float64)
        n_out = z.shape[1]
        if seed == "pred":
            ro = np.eye(n_out)[z.argmax(1)]
        elif seed == "prob":
            e = np.exp(z - z.max(1, keepdims=True))
            ro = e / e.sum(1, keepdims=True)
        else:
            if labels is None:
                raise ValueError(f"{func}(): seed='label' needs `labels` (one class per sample).")
            y = np.asarray(labels)
            if y.ndim != 1 or y.shape[0] != n:
                raise ValueError(
                    f"{func}(): `labels` must have one entry per sample ({n}); got shape "
                    f"{y.shape}. Pass the labels of the same inputs, in order."
                )
            if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_out:
                raise ValueError(
                    f"{func}(): `labels` must be ints in [0, {n_out}); got values in "
                    f"[{y.min()}, {y.max()}]."
                )
            ro = np.eye(n_out)[y]
        co = np.asarray(contributions["output_contribution"].values, np.float64)
        ob = contributions.get("output_bias")
        to, sgo, _ = _rule(
            co, None if ob is None else np.asarray(ob.values, np.float64), sign, bias
        )
        r = np.einsum("tc,tcj->tj", ro, to)
        # sign of the seed edge, weighted by the dominant class (exact for one-hot seeds)
        seed_sign = np.take_along_axis(sgo, ro.argmax(1)[:, None, None], 1)[:, 0].astype(np.int8)
    out["seed_mass"] = (("sample", top), r)
    out["seed_sign"] = (("sample", top), seed_sign)
    res = xr.Dataset(out)
    if "sample" in contributions.coords:
        res = res.assign_coords(sample=contributions["sample"].values)
    res.attrs = {
        "seed": seed,
        "sign": sign,
        "bias": bias,
        "layers": list(contributions.attrs.get("layers", [f"layer_{i}" for i in range(n_layers)])),
    }
    return res


def _unpack(tr: xr.Dataset, func: str) -> tuple[np.ndarray, list[np.ndarray]]:
    if not isinstance(tr, xr.Dataset) or "seed_mass" not in tr:
        raise TypeError(
            f"{func}(): `transitions` must be the Dataset returned by path_transitions(); "
            f"got {type(tr).__name__}. Call path_transitions(contributions) first."
        )
    n_layers = _n_layers(tr)
    ts = [np.asarray(tr[f"transition_{li}"].values, np.float64) for li in range(1, n_layers)]
    return np.asarray(tr["seed_mass"].values, np.float64), ts


def mean_field_contributions(
    nodes: list[Any],
    weights: list[Any],
    *,
    biases: list[Any] | None = None,
    layers: list[str] | None = None,
) -> xr.Dataset:
    """Approximate edge contributions from recorded node activity and static weights alone.

    Without re-running the model: ``c[t, j, i] = Wbar_ji * abar_i * (abar_j / zhat_j)`` with
    ``zhat_j = sum_i Wbar_ji abar_i + b_j``, so that ``sum_i c + beta = abar_j`` holds by
    construction, but the split between inputs is only the mean-field one (exact for Linear
    layers without spatial dims; approximate for conv channels).

    Parameters
    ----------
    nodes : list of array-like, each (sample, node_l)
        Node activity of each recorded layer (e.g. a recording's ``nodes`` per layer).
    weights : list of array-like, each (node_l, node_{l-1})
        Static node-to-node weights between consecutive layers (``len(nodes) - 1`` of them),
        e.g. from :func:`netphys.recorder.graph.node_weights` or a recording's graph group.
    biases : list of array-like, optional
        Node biases per edge layer (zeros if omitted).
    layers : list of str, optional
        Layer names, stored in the attrs.

    Returns
    -------
    xarray.Dataset
        The layout of :func:`netphys.recorder.graph.edge_contributions` without the output
        variables; attrs ``methods`` = 'mean_field'.

    Examples
    --------
    >>> a0 = np.array([[1.0, 2.0]]); w = np.array([[1.0, 1.0]]); a1 = np.array([[3.0]])
    >>> mean_field_contributions([a0, a1], [w])["contribution_1"].values
    array([[[1., 2.]]])
    """
    func = "mean_field_contributions"
    if not isinstance(nodes, (list, tuple)) or len(nodes) == 0:
        raise ValueError(f"{func}(): `nodes` must be a non-empty list of (sample, node) arrays.")
    if not isinstance(weights, (list, tuple)) or len(weights) != len(nodes) - 1:
        raise ValueError(
            f"{func}(): `weights` must hold len(nodes) - 1 = {len(nodes) - 1} matrices; got "
            f"{len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__}."
        )
    acts = [np.asarray(a, dtype=np.float64) for a in nodes]
    n = acts[0].shape[0]
    data: dict[str, Any] = {}
    for li, a in enumerate(acts):
        if a.ndim != 2 or a.shape[0] != n:
            raise ValueError(
                f"{func}(): `nodes[{li}]` must be (sample, node) with {n} samples; got {a.shape}."
            )
        data[f"activity_{li}"] = (("sample", f"node_{li}"), a)
    for li in range(1, len(acts)):
        w = np.asarray(weights[li - 1], dtype=np.float64)
        if w.shape != (acts[li].shape[1], acts[li - 1].shape[1]):
            raise ValueError(
                f"{func}(): `weights[{li - 1}]` must have shape (n_post, n_pre) = "
                f"{(acts[li].shape[1], acts[li - 1].shape[1])}; got {w.shape}."
            )
        b = np.zeros(w.shape[0]) if biases is None else np.asarray(biases[li - 1], np.float64)
        z = acts[li - 1] @ w.T + b
        with np.errstate(invalid="ignore", divide="ignore"):
            g = np.where(z != 0, acts[li] / np.where(z != 0, z, 1.0), 0.0)
        data[f"contribution_{li}"] = (
            ("sample", f"node_{li}", f"node_{li - 1}"),
            g[:, :, None] * w[None] * acts[li - 1][:, None, :],
        )
        data[f"bias_{li}"] = (("sample", f"node_{li}"), g * b)
    ds = xr.Dataset(data, coords={"sample": np.arange(n)})
    ds.attrs = {
        "layers": list(layers) if layers is not None else [f"layer_{i}" for i in range(len(acts))],
        "methods": ["mean_field"] * (len(acts) - 1),
    }
    return ds


# ------------------------------------------------------------------------------------------
# exact summaries
# ------------------------------------------------------------------------------------------
def _xlogx_t(t: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 0, np.log(np.where(t > 0, t, 1.0)), 0.0)


def _flow(r: np.ndarray, ts: list[np.ndarray]) -> dict[str, Any]:
    """Marginals (top first), edge flows, mass, entropy of the normalised path distribution."""
    marg = [r]
    for t in reversed(ts):
        marg.append(np.einsum("tj,tji->ti", marg[-1], t))
    marg = marg[::-1]  # layer order
    down = [np.ones_like(marg[0])]
    for t in ts:
        down.append(np.einsum("tji,ti->tj", t, down[-1]))
    z = marg[0].sum(-1)
    s = (r * down[-1] * _xlogx_t(r)).sum(-1)
    for li, t in enumerate(ts, start=1):
        s = s + np.einsum("tj,tji,ti->t", marg[li], t * _xlogx_t(t), down[li - 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(z > 0, -s / np.where(z > 0, z, 1.0) + np.log(np.where(z > 0, z, 1.0)), 0.0)
    edges = [marg[li][:, :, None] * t for li, t in enumerate(ts, start=1)]
    return {"marginals": marg, "edges": edges, "mass": z, "entropy": h}


def path_flow(transitions: xr.Dataset) -> xr.Dataset:
    """Compute exact per-sample path summaries without enumerating paths.

    Parameters
    ----------
    transitions : xarray.Dataset
        Output of :func:`path_transitions`.

    Returns
    -------
    xarray.Dataset
        ``marginal_l`` (sample, node_l): flow through each node; ``edge_flow_l`` (sample,
        node_l, node_{l-1}); ``lost_mass`` (sample): 1 - total path flow (dead ends, absorbed
        bias); ``entropy`` (sample, nats) and ``n_eff`` = exp(entropy) of the normalised path
        distribution; ``npf_active_fraction`` (sample) = prod_l (#active nodes / width);
        ``n_paths`` (0-d): number of possible paths.

    Notes
    -----
    ``m_{L-1} = r``, ``m_{l-1} = T_l^T m_l``; ``E_l = m_l(j) T_l(j, i)``. The entropy sums,
    over edges, ``m_l(j) T_l(j,i) D_{l-1}(i) log T_l(j,i)`` where ``D`` is the mass reaching the
    bottom from a node, which is the chain rule extended to sub-stochastic transitions.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> tr = xr.Dataset({"activity_0": (("sample", "node_0"), np.ones((1, 2))),
    ...                  "activity_1": (("sample", "node_1"), np.ones((1, 2))),
    ...                  "transition_1": (("sample", "node_1", "node_0"), np.full((1, 2, 2), .5)),
    ...                  "seed_mass": (("sample", "node_1"), np.full((1, 2), .5))})
    >>> float(path_flow(tr)["n_eff"][0])
    4.0
    """
    r, ts = _unpack(transitions, "path_flow")
    f = _flow(r, ts)
    n_layers = len(ts) + 1
    out: dict[str, Any] = {}
    for li in range(n_layers):
        out[f"marginal_{li}"] = (("sample", f"node_{li}"), f["marginals"][li])
    for li in range(1, n_layers):
        out[f"edge_flow_{li}"] = (("sample", f"node_{li}", f"node_{li - 1}"), f["edges"][li - 1])
    out["lost_mass"] = (("sample",), np.clip(1.0 - f["mass"], 0.0, 1.0))
    out["entropy"] = (("sample",), f["entropy"], {"units": "nats"})
    out["n_eff"] = (("sample",), np.where(f["mass"] > 0, np.exp(f["entropy"]), 0.0))
    rho = np.ones(r.shape[0])
    for li in range(n_layers):
        a = np.asarray(transitions[f"activity_{li}"].values)
        rho = rho * (a > 0).mean(-1)
    out["npf_active_fraction"] = (("sample",), rho)
    widths = [transitions.sizes[f"node_{li}"] for li in range(n_layers)]
    out["n_paths"] = ((), float(np.prod(np.asarray(widths, dtype=float))))
    res = xr.Dataset(out, coords={"sample": transitions["sample"].values})
    res.attrs = dict(transitions.attrs)
    return res


def flow_kernel(transitions: xr.Dataset, *, block_size: int = 64) -> xr.DataArray:
    """Compute the flow kernel K(t, t') = sum_p phi_t(p) phi_t'(p) exactly.

    Parameters
    ----------
    transitions : xarray.Dataset
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
    >>> import numpy as np, xarray as xr
    >>> tr = xr.Dataset({"activity_0": (("sample", "node_0"), np.ones((2, 2))),
    ...                  "seed_mass": (("sample", "node_0"), [[1., 0.], [.5, .5]])})
    >>> flow_kernel(tr).values
    array([[1. , 0.5],
           [0.5, 0.5]])
    """
    r, ts = _unpack(transitions, "flow_kernel")
    block_size = check_int(block_size, func="flow_kernel", name="block_size", minimum=1)
    n = r.shape[0]
    k = np.zeros((n, n))
    for a0 in range(0, n, block_size):
        sl = slice(a0, a0 + block_size)
        u = r[sl, None, :] * r[None, :, :]
        for t in reversed(ts):
            u = np.einsum("abj,aji,bji->abi", u, t[sl], t, optimize=True)
        k[sl] = u.sum(-1)
    s = transitions["sample"].values
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


def effective_paths(transitions: xr.Dataset, *, theta: float = 0.5) -> xr.Dataset:
    """Select each sample's effective path (Qiu et al. 2019): per-node cumulative-theta edges.

    From the seed down, each selected node keeps the smallest set of its inputs (largest
    transition first) whose share reaches ``theta``; the kept inputs are selected one layer
    down. The seed (e.g. ``seed='pred'``: the predicted class's inputs) is treated the same way.

    Parameters
    ----------
    transitions : xarray.Dataset
        Output of :func:`path_transitions`.
    theta : float, default=0.5
        Cumulative share kept at each node, in (0, 1].

    Returns
    -------
    xarray.Dataset
        ``node_selected_l`` (sample, node_l) bool; ``edge_selected_l`` (sample, node_l,
        node_{l-1}) bool. :func:`netphys.population.paths.edge_matrix` accepts it
        (the ``unit='edge'`` matrix of binary effective-path edges).

    References
    ----------
    Qiu, Y. et al. Adversarial defense through network profiling based path extraction.
    CVPR 2019. doi:10.1109/CVPR.2019.00491

    Examples
    --------
    >>> tr = xr.Dataset({"activity_0": (("sample", "node_0"), np.ones((1, 3))),
    ...                  "activity_1": (("sample", "node_1"), np.ones((1, 2))),
    ...                  "transition_1": (("sample", "node_1", "node_0"),
    ...                                   [[[.7, .2, .1], [.1, .1, .8]]]),
    ...                  "seed_mass": (("sample", "node_1"), [[.9, .1]])})
    >>> effective_paths(tr)["node_selected_0"].values
    array([[ True, False, False]])
    """
    func = "effective_paths"
    r, ts = _unpack(transitions, func)
    if (
        isinstance(theta, bool)
        or not isinstance(theta, (int, float, np.floating))
        or not (0 < float(theta) <= 1)
    ):
        raise ValueError(f"{func}(): `theta` must be a number in (0, 1]; got {theta!r}.")
    n_layers = len(ts) + 1
    out: dict[str, Any] = {}
    sel = _theta_prefix(r, float(theta))
    out[f"node_selected_{n_layers - 1}"] = (("sample", f"node_{n_layers - 1}"), sel)
    for li in range(n_layers - 1, 0, -1):
        edges = _theta_prefix(ts[li - 1], float(theta)) & sel[:, :, None]
        out[f"edge_selected_{li}"] = (("sample", f"node_{li}", f"node_{li - 1}"), edges)
        sel = edges.any(1)
        out[f"node_selected_{li - 1}"] = (("sample", f"node_{li - 1}"), sel)
    res = xr.Dataset(out, coords={"sample": transitions["sample"].values})
    res.attrs = {**transitions.attrs, "theta": float(theta), "select": "effective_path"}
    return res


# ------------------------------------------------------------------------------------------
# top-K paths
# ------------------------------------------------------------------------------------------
def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.asarray(np.log(x))


def _topk_sorted(score: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Indices of the top k along the last axis, ordered by (-score, id)."""
    m = score.shape[-1]
    if m > k:
        part = np.argpartition(-score, k - 1, axis=-1)[..., :k]
    else:
        part = np.broadcast_to(np.arange(m), score.shape).copy()
    s = np.take_along_axis(score, part, -1)
    i = np.take_along_axis(ids, part, -1)
    i = np.where(np.isfinite(s), i, np.iinfo(np.int64).max)
    order = np.lexsort((i, -s), axis=-1)
    return np.take_along_axis(part, order, -1)


def _radix(widths: list[int]) -> np.ndarray:
    rad = np.ones(len(widths), dtype=np.int64)
    for li in range(1, len(widths)):
        rad[li] = rad[li - 1] * widths[li - 1]
    return rad


def _exact_kbest(r: np.ndarray, ts: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-node K-best DP from the top layer down. Returns nodes (n, k, L) and log scores."""
    n = r.shape[0]
    widths = [t.shape[2] for t in ts] + [r.shape[1]]
    n_layers = len(widths)
    rad = _radix(widths)
    wt = widths[-1]
    score = np.full((n, wt, k), -np.inf)
    score[:, :, 0] = _log(r)
    sid = np.zeros((n, wt, k), dtype=np.int64)
    sid[:, :, 0] = np.arange(wt) * rad[-1]
    bps = []
    for li in range(n_layers - 1, 0, -1):
        t = ts[li - 1]  # (n, W_l, W_{l-1})
        wl, wp = t.shape[1], t.shape[2]
        cand = score[:, None, :, :] + _log(t).transpose(0, 2, 1)[:, :, :, None]  # (n,Wp,Wl,k)
        cand = cand.reshape(n, wp, wl * k)
        cid = sid[:, None, :, :] + (np.arange(wp) * rad[li - 1])[None, :, None, None]
        cid = np.broadcast_to(cid, (n, wp, wl, k)).reshape(n, wp, wl * k)
        kk = min(k, wl * k)
        sel = _topk_sorted(cand, cid, kk)  # (n, Wp, kk) flat indices into (Wl*k)
        score = np.full((n, wp, k), -np.inf)
        sid = np.zeros((n, wp, k), dtype=np.int64)
        score[:, :, :kk] = np.take_along_axis(cand, sel, -1)
        sid[:, :, :kk] = np.take_along_axis(cid, sel, -1)
        bp = np.zeros((n, wp, k), dtype=np.int64)
        bp[:, :, :kk] = sel
        bps.append(bp)
    w0 = widths[0]
    flat_s = score.reshape(n, w0 * k)
    flat_id = sid.reshape(n, w0 * k)
    kk = min(k, w0 * k)
    sel = _topk_sorted(flat_s, flat_id, kk)
    best = np.take_along_axis(flat_s, sel, -1)
    nodes = np.zeros((n, kk, n_layers), dtype=np.int64)
    node, slot = sel // k, sel % k
    nodes[:, :, 0] = node
    rows = np.arange(n)[:, None]
    for step, li in enumerate(range(1, n_layers)):
        bp = bps[len(bps) - 1 - step]  # back pointers into layer li
        flat = bp[rows, node, slot]
        node, slot = flat // k, flat % k
        nodes[:, :, li] = node
    return nodes, best


def _beam(
    r: np.ndarray, ts: list[np.ndarray], k: int, width: int, tau: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global top-`width` beam from the top layer down. Returns nodes, log scores, pruned."""
    n = r.shape[0]
    widths = [t.shape[2] for t in ts] + [r.shape[1]]
    n_layers = len(widths)
    rad = _radix(widths)
    rows = np.arange(n)[:, None]
    ok = r >= tau
    pruned = ((r > 0) & ~ok).any(-1)
    s0 = np.where(ok & (r > 0), _log(r), -np.inf)
    ids0 = np.broadcast_to(np.arange(widths[-1]) * rad[-1], s0.shape)
    pruned |= np.isfinite(s0).sum(-1) > width
    sel = _topk_sorted(s0, ids0, min(width, widths[-1]))
    score = np.take_along_axis(s0, sel, -1)
    node = sel
    sid = np.take_along_axis(ids0, sel, -1)
    hist = [node]
    for li in range(n_layers - 1, 0, -1):
        t = ts[li - 1][rows, node]  # (n, B, Wp)
        wp = t.shape[-1]
        valid = np.isfinite(score)[:, :, None]
        keep = (t >= tau) & (t > 0)
        pruned |= (valid & (t > 0) & ~keep).any((1, 2))
        cand = np.where(keep & valid, score[:, :, None] + _log(t), -np.inf)
        cid = sid[:, :, None] + (np.arange(wp) * rad[li - 1])[None, None, :]
        cand = cand.reshape(n, -1)
        cid = cid.reshape(n, -1)
        pruned |= np.isfinite(cand).sum(-1) > width
        sel = _topk_sorted(cand, cid, min(width, cand.shape[1]))
        score = np.take_along_axis(cand, sel, -1)
        sid = np.take_along_axis(cid, sel, -1)
        parent, node = sel // wp, sel % wp
        hist = [np.take_along_axis(h, parent, -1) for h in hist] + [node]
    kk = min(k, score.shape[1])
    fin = _topk_sorted(score, sid, kk)
    best = np.take_along_axis(score, fin, -1)
    nodes = np.stack([np.take_along_axis(h, fin, -1) for h in hist[::-1]], -1)
    return nodes, best, pruned


def top_paths(
    transitions: xr.Dataset,
    *,
    k: int = 64,
    theta: float = 0.9,
    method: str = "beam",
    beam_width: int = 1024,
    tau: float | None = None,
    batch_size: int | None = None,
) -> xr.Dataset:
    """Find each sample's K highest-flow paths and its theta-selected set.

    Parameters
    ----------
    transitions : xarray.Dataset
        Output of :func:`path_transitions`.
    k : int, default=64
        Paths per sample (>= 1).
    theta : float, default=0.9
        Selection: the shortest prefix of the top-K whose flow reaches ``theta`` of the sample's
        total path flow (in (0, 1]).
    method : {'beam', 'exact'}, default='beam'
        'exact': per-node K-best dynamic program. 'beam': global top-``beam_width`` suffixes per
        layer, transitions below ``tau`` pruned; certified when it provably equals the exact
        result.
    beam_width : int, default=1024
        Beam size B (>= k).
    tau : float, optional
        Beam pruning threshold; default 1 / beam_width.
    batch_size : int, optional
        Samples per vectorised step; chosen from the layer widths by default.

    Returns
    -------
    xarray.Dataset
        Dims (sample, rank, layer). ``nodes`` (sample, rank, layer) node index per layer (-1
        where fewer than k paths have flow); ``path_id`` (sample, rank) mixed-radix id (-1);
        ``flow`` (sample, rank); ``sign`` (sample, rank) product of edge signs;
        ``selected`` (sample, rank) bool; ``coverage`` (sample) selected flow / total path flow;
        ``k_theta`` (sample) selected count (-1 if theta is not reached within k);
        ``certified`` (sample) bool; ``total_flow`` (sample).

    Raises
    ------
    ValueError
        ``k < 1``, ``theta`` outside (0, 1], ``beam_width < k`` or an unknown method.

    Notes
    -----
    Certificate: suffix scores at a layer sum to at most 1, so at most 1/s suffixes score
    >= s. If the K-th final score is >= max(tau, 1/B), or nothing was pruned, the beam result
    equals the exact top-K. Ties are broken by path id, so results are deterministic.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> tr = xr.Dataset({"activity_0": (("sample", "node_0"), np.ones((1, 3))),
    ...                  "seed_mass": (("sample", "node_0"), [[.6, .3, .1]])})
    >>> top_paths(tr, k=2)["nodes"].values[0, :, 0]
    array([0, 1])
    """
    func = "top_paths"
    r, ts = _unpack(transitions, func)
    k = check_int(k, func=func, name="k", minimum=1)
    if (
        isinstance(theta, bool)
        or not isinstance(theta, (int, float, np.floating))
        or not (0 < float(theta) <= 1)
    ):
        raise ValueError(
            f"{func}(): `theta` must be a number in (0, 1]; got {theta!r}. It is the share of "
            "flow the selected paths must cover, e.g. theta=0.9."
        )
    method = check_choice(method, ("beam", "exact"), func=func, name="method")
    beam_width = check_int(beam_width, func=func, name="beam_width", minimum=1)
    if beam_width < k:
        raise ValueError(
            f"{func}(): `beam_width` must be >= k ({k}); got {beam_width}. Raise beam_width."
        )
    tau = 1.0 / beam_width if tau is None else float(tau)
    widths = [t.shape[2] for t in ts] + [r.shape[1]]
    n_layers = len(widths)
    n = r.shape[0]
    if batch_size is None:
        pairs = [a * b for a, b in itertools.pairwise(widths)] or [max(widths)]
        per = max(max(pairs) * k, beam_width * max(widths))
        batch_size = int(max(1, min(n, 2**23 // max(per, 1))))
    nodes_all = np.full((n, k, n_layers), -1, dtype=np.int64)
    logs = np.full((n, k), -np.inf)
    pruned = np.zeros(n, dtype=bool)
    for b0 in range(0, n, batch_size):
        sl = slice(b0, b0 + batch_size)
        if method == "exact":
            nodes, best = _exact_kbest(r[sl], [t[sl] for t in ts], k)
        else:
            nodes, best, pr = _beam(r[sl], [t[sl] for t in ts], k, beam_width, tau)
            pruned[sl] = pr
        kk = nodes.shape[1]
        nodes_all[sl, :kk] = nodes
        logs[sl, :kk] = best
    valid = np.isfinite(logs)
    nodes_all[~valid] = -1
    flow = np.where(valid, np.exp(np.where(valid, logs, 0.0)), 0.0)
    rad = _radix(widths)
    pid = np.where(valid, (np.maximum(nodes_all, 0) * rad).sum(-1), -1)
    # path sign = product of edge signs along the path (seed edge included)
    sgn = np.ones((n, k), dtype=np.int8)
    rows = np.arange(n)[:, None]
    top = np.maximum(nodes_all[:, :, -1], 0)
    sgn *= (
        np.asarray(transitions["seed_sign"].values)[rows, top] if "seed_sign" in transitions else 1
    )
    for li in range(1, n_layers):
        es = (
            np.asarray(transitions[f"edge_sign_{li}"].values)
            if f"edge_sign_{li}" in transitions
            else None
        )
        if es is not None:
            sgn *= es[
                rows, np.maximum(nodes_all[:, :, li], 0), np.maximum(nodes_all[:, :, li - 1], 0)
            ]
    sgn[~valid] = 0
    total = _flow(r, ts)["mass"]
    cum = np.cumsum(flow, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(total[:, None] > 0, cum / np.where(total > 0, total, 1.0)[:, None], 0.0)
    reached = frac >= theta - 1e-12
    k_theta = np.where(reached.any(-1), reached.argmax(-1) + 1, -1)
    n_sel = np.where(k_theta > 0, k_theta, valid.sum(-1))
    selected = (np.arange(k)[None, :] < n_sel[:, None]) & valid
    covered = (flow * selected).sum(-1)
    coverage = np.where(total > 0, covered / np.where(total > 0, total, 1.0), 0.0)
    if method == "exact":
        certified = np.ones(n, dtype=bool)
    else:
        s_k = logs[:, k - 1]
        certified = (s_k >= np.log(max(tau, 1.0 / beam_width)) - 1e-12) | ~pruned
    layer_names = list(transitions.attrs.get("layers", [f"layer_{i}" for i in range(n_layers)]))
    ds = xr.Dataset(
        {
            "nodes": (("sample", "rank", "layer"), nodes_all),
            "path_id": (("sample", "rank"), pid),
            "flow": (("sample", "rank"), flow),
            "sign": (("sample", "rank"), sgn),
            "selected": (("sample", "rank"), selected),
            "coverage": (("sample",), coverage),
            "k_theta": (("sample",), k_theta.astype(np.int64)),
            "certified": (("sample",), certified),
            "total_flow": (("sample",), total),
            "widths": (("layer",), np.asarray(widths, dtype=np.int64)),
        },
        coords={
            "sample": transitions["sample"].values,
            "rank": np.arange(1, k + 1),
            "layer": layer_names[:n_layers]
            if len(layer_names) >= n_layers
            else np.arange(n_layers),
        },
    )
    ds.attrs = {
        **transitions.attrs,
        "k": k,
        "theta": float(theta),
        "method": method,
        "beam_width": beam_width,
        "tau": tau,
    }
    return ds
