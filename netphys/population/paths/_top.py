"""Each sample's K highest-flow paths: exact K-best dynamic program and a certified beam.

Scores are log-probabilities in float64; ties are broken by path id (the mixed-radix integer
``sum_l i_l * prod_{l' < l} W_{l'}``), so results are deterministic. Algorithm:
``reference/paths.md`` section 3.3.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import check_choice, check_fraction, check_int, check_positive_float
from netphys.population.paths._flows import flow_summary, unpack
from netphys.population.paths._layers import LAYER, layer_attr, portable_strings, samples

__all__ = ["top_paths"]


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.asarray(np.log(x))


def _topk_sorted(score: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Return the indices of the top k along the last axis, ordered by (-score, id)."""
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


def _search(
    r: np.ndarray, ts: list[np.ndarray], k: int, method: str, beam_width: int, tau: float,
    batch_size: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Top-k nodes (n, k, L; -1 padded), log scores (n, k) and beam-pruned flags, by batch."""
    widths = [t.shape[2] for t in ts] + [r.shape[1]]
    n = r.shape[0]
    if batch_size is None:
        pairs = [a * b for a, b in itertools.pairwise(widths)] or [max(widths)]
        per = max(max(pairs) * k, beam_width * max(widths))
        batch_size = int(max(1, min(n, 2**23 // max(per, 1))))
    nodes_all = np.full((n, k, len(widths)), -1, dtype=np.int64)
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
    nodes_all[~np.isfinite(logs)] = -1
    return nodes_all, logs, pruned


def _path_signs(transitions: xr.DataTree, nodes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Product of the edge signs along each path (seed edge included); 0 where no path."""
    n, k, n_lay = nodes.shape
    sgn = np.ones((n, k), dtype=np.int8)
    rows = np.arange(n)[:, None]
    top = transitions[LAYER.format(n_lay - 1)]
    if "seed_sign" in top:
        sgn *= np.asarray(top["seed_sign"].values)[rows, np.maximum(nodes[:, :, -1], 0)]
    for li in range(1, n_lay):
        node = transitions[LAYER.format(li)]
        if "edge_sign" in node:
            es = np.asarray(node["edge_sign"].values)
            sgn *= es[rows, np.maximum(nodes[:, :, li], 0), np.maximum(nodes[:, :, li - 1], 0)]
    sgn[~valid] = 0
    return sgn


def _select(
    flow: np.ndarray, total: np.ndarray, valid: np.ndarray, theta: float
) -> tuple[np.ndarray, ...]:
    """Theta selection: selected mask, k_theta (-1 if not reached) and coverage per sample."""
    k = flow.shape[1]
    cum = np.cumsum(flow, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(total[:, None] > 0, cum / np.where(total > 0, total, 1.0)[:, None], 0.0)
    reached = frac >= theta - 1e-12
    k_theta = np.where(reached.any(-1), reached.argmax(-1) + 1, -1)
    n_sel = np.where(k_theta > 0, k_theta, valid.sum(-1))
    selected = (np.arange(k)[None, :] < n_sel[:, None]) & valid
    covered = (flow * selected).sum(-1)
    coverage = np.where(total > 0, covered / np.where(total > 0, total, 1.0), 0.0)
    return selected, k_theta.astype(np.int64), coverage


def _check_top(k: Any, theta: Any, method: Any, beam_width: Any, func: str) -> tuple[Any, ...]:
    k = check_int(k, func=func, name="k", minimum=1)
    theta = check_fraction(
        theta, func=func, name="theta",
        hint="It is the share of flow the selected paths must cover, e.g. theta=0.9.",
    )  # fmt: skip
    method = check_choice(method, ("beam", "exact"), func=func, name="method")
    beam_width = check_int(beam_width, func=func, name="beam_width", minimum=1)
    if beam_width < k:
        raise ValueError(
            f"{func}(): `beam_width` must be >= k ({k}); got {beam_width}. Raise beam_width."
        )
    return k, theta, method, beam_width


def top_paths(
    transitions: xr.DataTree,
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
    transitions : xarray.DataTree
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
        ``certified`` (sample) bool; ``total_flow`` (sample); ``widths`` (layer).

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
    >>> from netphys.population.paths import path_transitions
    >>> from netphys.population.paths._synthetic import relu_mlp_contributions
    >>> top = top_paths(path_transitions(relu_mlp_contributions(n_samples=4)), k=5)
    >>> top["nodes"].dims, top["nodes"].shape
    (('sample', 'rank', 'layer'), (4, 5, 3))
    """
    func = "top_paths"
    r, ts = unpack(transitions, func)
    k, theta, method, beam_width = _check_top(k, theta, method, beam_width, func)
    tau = (
        1.0 / beam_width
        if tau is None
        else check_positive_float(tau, func=func, name="tau", allow_zero=True)
    )
    widths = [t.shape[2] for t in ts] + [r.shape[1]]
    nodes, logs, pruned = _search(r, ts, k, method, beam_width, tau, batch_size)
    valid = np.isfinite(logs)
    flow = np.where(valid, np.exp(np.where(valid, logs, 0.0)), 0.0)
    pid = np.where(valid, (np.maximum(nodes, 0) * _radix(widths)).sum(-1), -1)
    total = flow_summary(r, ts)["mass"]
    selected, k_theta, coverage = _select(flow, total, valid, theta)
    if method == "exact":
        certified = np.ones(r.shape[0], dtype=bool)
    else:
        certified = (logs[:, k - 1] >= np.log(max(tau, 1.0 / beam_width)) - 1e-12) | ~pruned
    ds = xr.Dataset(
        {
            "nodes": (("sample", "rank", "layer"), nodes),
            "path_id": (("sample", "rank"), pid),
            "flow": (("sample", "rank"), flow),
            "sign": (("sample", "rank"), _path_signs(transitions, nodes, valid)),
            "selected": (("sample", "rank"), selected),
            "coverage": (("sample",), coverage),
            "k_theta": (("sample",), k_theta),
            "certified": (("sample",), certified),
            "total_flow": (("sample",), total),
            "widths": (("layer",), np.asarray(widths, dtype=np.int64)),
        },
        coords={"sample": samples(transitions), "rank": np.arange(1, k + 1),
                "layer": layer_attr(transitions)},
    )  # fmt: skip
    ds.attrs = {**transitions.attrs, "k": k, "theta": theta, "method": method,
                "beam_width": beam_width, "tau": tau}  # fmt: skip
    return portable_strings(ds)
