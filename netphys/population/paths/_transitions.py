"""Backward transition probabilities from edge contributions, and mean-field contributions.

Works on the per-sample edge contributions of :func:`netphys.recorder.edge_contributions`
(a layered :class:`xarray.DataTree`, see :mod:`netphys.population.paths._layers`). Never
imports torch. Algorithm: ``reference/paths.md`` section 3.3.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import check_choice, check_labels, renamed_argument
from netphys.population.paths._layers import (
    LAYER,
    as_tree,
    build,
    layer_attr,
    n_layers,
    samples,
    values,
)

__all__ = ["mean_field_contributions", "path_transitions"]

FLOW_SEEDS = ("activity", "pred", "label", "prob")


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


def _output_seed(
    contrib: xr.DataTree, flow_seed: str, labels: Any, sign: str, bias: str, func: str
) -> tuple[np.ndarray, np.ndarray]:
    """Seed mass and sign on the top layer, one step down from the output."""
    if "output" not in contrib.children or "logits" not in contrib:
        raise ValueError(
            f"{func}(): flow_seed={flow_seed!r} needs the output contributions (the 'output' "
            "child and 'logits'), which `contributions` lacks (the model output is not a 2-D "
            "tensor). Use flow_seed='activity'."
        )
    z = np.asarray(contrib["logits"].values, np.float64)
    n, n_out = z.shape
    if flow_seed == "pred":
        ro = np.eye(n_out)[z.argmax(1)]
    elif flow_seed == "prob":
        e = np.exp(z - z.max(1, keepdims=True))
        ro = e / e.sum(1, keepdims=True)
    else:
        if labels is None:
            raise ValueError(f"{func}(): flow_seed='label' needs `labels` (one class per sample).")
        y = check_labels(labels, n, func=func)
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_out:
            raise ValueError(
                f"{func}(): `labels` must be ints in [0, {n_out}); got values in "
                f"[{y.min()}, {y.max()}]."
            )
        ro = np.eye(n_out)[y]
    out = contrib["output"]
    co = np.asarray(out["contribution"].values, np.float64)
    ob = np.asarray(out["bias"].values, np.float64) if "bias" in out else None
    to, sgo, _ = _rule(co, ob, sign, bias)
    r = np.einsum("tc,tcj->tj", ro, to)
    # sign of the seed edge, weighted by the dominant class (exact for one-hot seeds)
    seed_sign = np.take_along_axis(sgo, ro.argmax(1)[:, None, None], 1)[:, 0].astype(np.int8)
    return r, seed_sign


def path_transitions(
    contributions: xr.DataTree,
    *,
    flow_seed: str = "activity",
    labels: Any = None,
    sign: str = "positive",
    bias: str = "none",
    seed: str | None = None,
) -> xr.DataTree:
    r"""Turn edge contributions into backward transition probabilities and a flow seed.

    Parameters
    ----------
    contributions : xarray.DataTree
        Output of :func:`netphys.recorder.edge_contributions` (or the same layout).
    flow_seed : {'activity', 'pred', 'label', 'prob'}, default='activity'
        Mass on the top recorded layer. 'activity': its positive activity, normalised (uses no
        output or label). 'pred' / 'label' / 'prob': one step down from the output, starting
        at the predicted class, the label or the softmax.
    labels : array-like of int, optional
        One class per sample; required for ``flow_seed='label'``.
    sign : {'positive', 'abs'}, default='positive'
        'positive' routes flow along positive contributions only; 'abs' uses ``|c|`` and
        tracks the sign of each edge.
    bias : {'none', 'absorb'}, default='none'
        'absorb' adds the positive bias share to each node's denominator; that share is lost.
    seed : str, optional
        Deprecated name of ``flow_seed``.

    Returns
    -------
    xarray.DataTree
        One child per layer (``layer_0`` ... ``layer_{L-1}``) with ``activity`` (sample, node)
        copied from the input and, from ``layer_1`` on, ``transition`` (sample, node, pre)
        with rows summing to 1 (or 0 at dead ends), ``edge_sign`` (int8) and
        ``inhibitory_share`` (sample, node) = sum c- / sum \|c\|. The top layer's child
        also holds ``seed_mass`` and ``seed_sign`` (sample, node). Attrs ``flow_seed``,
        ``sign``, ``bias``, ``layers``.

    Raises
    ------
    ValueError
        Unknown option, no layers, labels of the wrong length, or an output seed without the
        output contributions.

    Examples
    --------
    >>> from netphys.population.paths._synthetic import relu_mlp_contributions
    >>> import numpy as np
    >>> tr = path_transitions(relu_mlp_contributions(n_samples=4))
    >>> tr["layer_1"]["transition"].dims
    ('sample', 'node', 'pre')
    >>> rows = tr["layer_1"]["transition"].sum("pre").values  # 1, or 0 at dead ends
    >>> bool((np.isclose(rows, 1) | (rows == 0)).all())
    True
    """
    func = "path_transitions"
    flow_seed = renamed_argument(
        flow_seed, seed, func=func, new="flow_seed", old="seed", default="activity"
    )
    flow_seed = check_choice(flow_seed, FLOW_SEEDS, func=func, name="flow_seed")
    sign = check_choice(sign, ("positive", "abs"), func=func, name="sign")
    bias = check_choice(bias, ("none", "absorb"), func=func, name="bias")
    contrib = as_tree(contributions, func)
    n_lay = n_layers(contrib)
    layers: list[dict[str, Any]] = []
    for li in range(n_lay):
        node = contrib[LAYER.format(li)]
        data: dict[str, Any] = {"activity": node["activity"].variable}
        if li > 0:
            beta = values(contrib, li, "bias") if "bias" in node else None
            t, sg, nu = _rule(values(contrib, li, "contribution"), beta, sign, bias)
            data["transition"] = (("sample", "node", "pre"), t)
            data["edge_sign"] = (("sample", "node", "pre"), sg)
            data["inhibitory_share"] = (("sample", "node"), nu)
        layers.append(data)
    if flow_seed == "activity":
        a = np.maximum(values(contrib, n_lay - 1, "activity"), 0)
        tot = a.sum(-1, keepdims=True)
        r = np.where(tot > 0, a / np.where(tot > 0, tot, 1.0), 0.0)
        seed_sign = np.ones(r.shape, np.int8)
    else:
        r, seed_sign = _output_seed(contrib, flow_seed, labels, sign, bias, func)
    layers[-1]["seed_mass"] = (("sample", "node"), r)
    layers[-1]["seed_sign"] = (("sample", "node"), seed_sign)
    root = xr.Dataset(coords={"sample": samples(contrib)})
    names = layer_attr(contrib)
    root.attrs = {"flow_seed": flow_seed, "sign": sign, "bias": bias, "layers": names}
    return build(root, layers, layer_attrs=names)


def _check_mean_field(nodes: Any, weights: Any, func: str) -> list[np.ndarray]:
    if not isinstance(nodes, (list, tuple)) or len(nodes) == 0:
        raise ValueError(f"{func}(): `nodes` must be a non-empty list of (sample, node) arrays.")
    if not isinstance(weights, (list, tuple)) or len(weights) != len(nodes) - 1:
        raise ValueError(
            f"{func}(): `weights` must hold len(nodes) - 1 = {len(nodes) - 1} matrices; got "
            f"{len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__}."
        )
    acts = [np.asarray(a, dtype=np.float64) for a in nodes]
    n = acts[0].shape[0]
    for li, a in enumerate(acts):
        if a.ndim != 2 or a.shape[0] != n:
            raise ValueError(
                f"{func}(): `nodes[{li}]` must be (sample, node) with {n} samples; got {a.shape}."
            )
    return acts


def mean_field_contributions(
    nodes: list[Any],
    weights: list[Any],
    *,
    biases: list[Any] | None = None,
    layers: list[str] | None = None,
) -> xr.DataTree:
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
        e.g. from :func:`netphys.recorder.node_weights` or a recording's graph group.
    biases : list of array-like, optional
        Node biases per edge layer (zeros if omitted).
    layers : list of str, optional
        Layer names, stored in the attrs.

    Returns
    -------
    xarray.DataTree
        The layout of :func:`netphys.recorder.edge_contributions` without the output;
        attrs ``methods`` = 'mean_field'.

    Examples
    --------
    >>> import numpy as np
    >>> a0 = np.array([[1.0, 2.0]]); w = np.array([[1.0, 1.0]]); a1 = np.array([[3.0]])
    >>> mean_field_contributions([a0, a1], [w])["layer_1"]["contribution"].values
    array([[[1., 2.]]])
    """
    func = "mean_field_contributions"
    acts = _check_mean_field(nodes, weights, func)
    data: list[dict[str, Any]] = [{"activity": (("sample", "node"), acts[0])}]
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
        data.append(
            {
                "activity": (("sample", "node"), acts[li]),
                "contribution": (
                    ("sample", "node", "pre"),
                    g[:, :, None] * w[None] * acts[li - 1][:, None, :],
                ),
                "bias": (("sample", "node"), g * b),
            }
        )
    names = list(layers) if layers is not None else [LAYER.format(i) for i in range(len(acts))]
    root = xr.Dataset(coords={"sample": np.arange(acts[0].shape[0])})
    root.attrs = {"layers": names, "methods": ["mean_field"] * (len(acts) - 1)}
    return build(root, data, layer_attrs=names)
