"""Computational graph of a recorded model: static node weights and edge contributions.

Nodes are the channels (conv outputs, dim 1) or features (linear outputs, last dim) of the
recorded post-activation layers; a channel's activity is the spatial mean of its map. Edges join
consecutive recorded layers, plus the model output (logits) from the last recorded layer. This
module is the torch side of the path analysis (``netphys/population/paths/`` does the rest on
numpy arrays); it does no analysis itself. Algorithm: ``reference/paths.md`` sections 3.1-3.2. The
probe forward lives in ``_graph_probe``, the per-block contributions in ``_graph_contrib``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from netphys._validation import check_bool, check_int
from netphys.errors import ConservationWarning
from netphys.recorder._graph_contrib import (
    _check_block,
    _closed_form,
    _closed_form_plan,
    _cut_test,
    _jacobian,
    _last_weight,
)
from netphys.recorder._graph_probe import (
    _Block,
    _blocks,
    _check_layers,
    _n_nodes,
    _node_mean,
    _static_block,
)

__all__ = ["edge_contributions", "node_weights"]

# re-exported for the tests of the kernels
_KERNELS = (_closed_form, _jacobian)


def node_weights(
    model: nn.Module, layers: list[str], example_input: torch.Tensor
) -> dict[tuple[str, str], np.ndarray]:
    """Return the static node-to-node weight matrices between consecutive recorded layers.

    Parameters
    ----------
    model : torch.nn.Module
        The network; it is run once on ``example_input`` (no gradients) and not modified.
    layers : list of str
        Names of recorded modules (from ``model.named_modules()``), in forward order.
    example_input : torch.Tensor
        A batch the model accepts, on the model's device.

    Returns
    -------
    dict of (str, str) -> numpy.ndarray
        For each consecutive pair ``(pre, post)`` whose block is a chain of Linear, ConvNd,
        eval BatchNorm (folded), pooling, flatten, dropout and elementwise activations: the
        float64 matrix of shape (n_post_nodes, n_pre_nodes). Linear: ``W``; conv: the kernel
        summed over its positions; a Linear after a flatten: its weights summed over the
        spatial positions of each channel (the mean-field weight on channel means). Pairs with
        residual adds, functional ops or unsupported modules are left out.

    Raises
    ------
    ValueError
        If ``layers`` is empty, names an unknown module or is not in forward order.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(),
    ...                           torch.nn.Linear(3, 2), torch.nn.ReLU())
    >>> w = node_weights(net, ["1", "3"], torch.zeros(1, 4))
    >>> w[("1", "3")].shape
    (2, 3)
    """
    layers = _check_layers(model, layers, "node_weights")
    blocks, rec, _ = _blocks(model, layers, example_input, "node_weights")
    result: dict[tuple[str, str], np.ndarray] = {}
    for blk in blocks:
        if not blk.post:
            continue
        m = _static_block(blk, _n_nodes(rec[blk.pre].out))
        if m is not None and m.shape == (_n_nodes(rec[blk.post].out), _n_nodes(rec[blk.pre].out)):
            result[(blk.pre, blk.post)] = m.cpu().numpy()
    return result


def edge_contributions(
    model: nn.Module,
    inputs: Any,
    *,
    layers: list[str],
    batch_size: int = 128,
    allow_approximate: bool = False,
    check_cut: bool = True,
    progress: bool = True,
) -> xr.DataTree:
    """Compute per-sample edge contributions that conserve each node's activity.

    For consecutive recorded layers ``pre -> post``, the contribution ``c[t, j, i]`` of node
    ``i`` of ``pre`` to node ``j`` of ``post`` satisfies ``abar_j = sum_i c[t, j, i] +
    beta[t, j]`` exactly (``beta`` is the bias / bypass share), where ``abar_j`` is the node
    activity (a feature, or a channel's spatial mean). The same is computed for the model
    output (logits) from the last recorded layer.

    Parameters
    ----------
    model : torch.nn.Module
        Network in eval mode; runs on its own device (GPU when it is there). Not modified.
    inputs : torch.Tensor or numpy.ndarray
        Stimuli, first dim = samples.
    layers : list of str
        Recorded module names (post-activation outputs), in forward order.
    batch_size : int, default=128
        Samples per forward pass.
    allow_approximate : bool, default=False
        Use the gradient-times-input fallback for blocks with unsupported modules (LayerNorm,
        attention, RNNs...) instead of raising; the residual is reported.
    check_cut : bool, default=True
        Run the cut test on the first batch.
    progress : bool, default=True
        Show a tqdm progress bar over batches.

    Returns
    -------
    xarray.DataTree
        Root: ``residual_fraction`` (block) = sum |bias share| / sum |activity| per block,
        ``logits`` (sample, output) when the model returns a 2-D tensor; attrs ``layers`` and
        ``methods`` ('closed', 'jacobian' or 'approximate' per block, the output block last).
        One child per recorded layer, ``layer_0`` ... ``layer_{L-1}`` (attr ``layer``: the
        module name), with ``activity`` (sample, node) and, from ``layer_1`` on,
        ``contribution`` (sample, node, pre) and ``bias`` (sample, node), ``pre`` being the
        nodes of the layer below. Child ``output`` (with logits): ``contribution`` (sample,
        output, pre) and ``bias`` (sample, output).

    Raises
    ------
    NotACutError
        A recorded layer is bypassed on the way to the next one.
    TrainingModeError
        BatchNorm or dropout in training mode between recorded layers.
    UnsupportedModuleError
        A module that cannot be decomposed exactly, unless ``allow_approximate=True``.
    ValueError
        Empty or misordered ``layers``, unknown module names.

    Warns
    -----
    ConservationWarning
        A closed-form block does not conserve activity within 1e-4 (relative), or a fallback
        block with smooth activations leaves more than 1e-3 of the activity as residual.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(),
    ...                           torch.nn.Linear(3, 2), torch.nn.ReLU()).eval()
    >>> tree = edge_contributions(net, torch.randn(5, 4), layers=["1", "3"], progress=False)
    >>> tree["layer_1"]["contribution"].shape
    (5, 2, 3)
    """
    from tqdm.auto import tqdm

    func = "edge_contributions"
    layers = _check_layers(model, layers, func)
    batch_size = check_int(batch_size, func=func, name="batch_size", minimum=1)
    check_bool(allow_approximate, func=func, name="allow_approximate")
    check_bool(check_cut, func=func, name="check_cut")
    x_all, device = _as_batchable(model, inputs, func)
    named = dict(model.named_modules())
    acc = _Accumulator(len(layers))
    starts = range(0, x_all.shape[0], batch_size)
    for b0 in tqdm(starts, desc="edge contributions", disable=not progress, leave=False):
        x = x_all[b0 : b0 + batch_size].to(device)
        blocks, rec, out = _blocks(model, layers, x, func)
        if b0 == 0:
            acc.plan(blocks, out, allow_approximate, func)
            if check_cut:
                _cut_tests(model, x, blocks, rec, out, named, acc.has_output, func)
        acc.add_activity(layers, blocks, rec, func)
        for bi, blk in enumerate(blocks):
            if acc.methods[bi] != "none":
                acc.add_block(
                    bi, blk, *_block_terms(model, x, blk, acc.plans[bi], rec, out, named, func)
                )
    acc.warn_smooth(blocks)
    return acc.tree(layers, type(model).__name__)


def _as_batchable(model: nn.Module, inputs: Any, func: str) -> tuple[torch.Tensor, torch.device]:
    """Return the inputs as one tensor in the model's float dtype, and the model's device."""
    try:
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.get_default_dtype()
    x_all = torch.as_tensor(inputs)
    if x_all.is_floating_point():
        x_all = x_all.to(dtype)
    if x_all.ndim < 1 or x_all.shape[0] < 1:
        raise ValueError(
            f"{func}(): `inputs` needs at least one sample; got shape {tuple(x_all.shape)}."
        )
    return x_all, device


def _cut_tests(
    model: nn.Module,
    x: torch.Tensor,
    blocks: list[_Block],
    rec: dict[str, Any],
    out: Any,
    named: dict[str, nn.Module],
    has_output: bool,
    func: str,
) -> None:
    for blk in blocks:
        if blk.post or has_output:
            post = rec[blk.post].out if blk.post else out
            _cut_test(model, x, blk, named, rec[blk.pre].out, post, func)


def _block_terms(
    model: nn.Module,
    x: torch.Tensor,
    blk: _Block,
    plan: Any,
    rec: dict[str, Any],
    out: Any,
    named: dict[str, nn.Module],
    func: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
    """Contributions (B, Co, Ci), bias shares (B, Co), node activity (B, Co), model output."""
    a_prev = rec[blk.pre].out
    a_post = rec[blk.post].out if blk.post else out
    if plan is None:
        post_mod = named[blk.post] if blk.post else None
        c, abar = _jacobian(model, x, named[blk.pre], post_mod, a_prev)
        return c, abar - c.sum(-1), abar, out
    wcall = blk.leaves[plan[0]]
    c, beta = _closed_form(wcall.module, plan[1], wcall.inp, a_post, _n_nodes(a_prev))
    abar = _node_mean(a_post)
    resid = (abar - c.sum(-1) - beta).abs()
    eps = torch.finfo(abar.dtype).eps
    tol = 1e-4 * (abar.abs() + 1e-6) + 64 * eps * (c.abs().sum(-1) + beta.abs())
    if bool((resid > tol).any()):
        warnings.warn(
            f"{func}(): block {blk.pre!r} -> {blk.post or 'output'!r}: "
            f"contributions miss the activity by up to {resid.max().item():.3g}; "
            "check the model for functional ops the hooks cannot see.",
            ConservationWarning,
            stacklevel=4,
        )
    return c, beta, abar, out


@dataclass
class _Accumulator:
    """Per-batch results of :func:`edge_contributions`, concatenated at the end."""

    n_layers: int
    methods: list[str] = field(default_factory=list)
    plans: list[Any] = field(default_factory=list)
    has_output: bool = False
    acts: list[list[np.ndarray]] = field(init=False)
    cons: list[list[np.ndarray]] = field(init=False)
    biases: list[list[np.ndarray]] = field(init=False)
    out: dict[str, list[np.ndarray]] = field(init=False)
    num: np.ndarray = field(init=False)
    den: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = self.n_layers
        self.acts = [[] for _ in range(n)]
        self.cons = [[] for _ in range(n)]
        self.biases = [[] for _ in range(n)]
        self.out = {"output_contribution": [], "output_bias": [], "logits": []}
        self.num = np.zeros(n)
        self.den = np.zeros(n)

    def plan(self, blocks: list[_Block], out: Any, allow_approximate: bool, func: str) -> None:
        """Choose each block's method (closed, jacobian, approximate or none) from batch 0."""
        for blk in blocks:
            if not blk.post and not (isinstance(out, torch.Tensor) and out.ndim == 2):
                self.methods.append("none")
                self.plans.append(None)
                continue
            self.methods.append(_check_block(blk, allow_approximate, func))
            self.plans.append(_closed_form_plan(blk))
        self.has_output = self.methods[-1] != "none"

    def add_activity(
        self, layers: list[str], blocks: list[_Block], rec: dict[str, Any], func: str
    ) -> None:
        """Node activity of every recorded layer for one batch."""
        for li, name in enumerate(layers):
            if rec[name].out.ndim > 2 and isinstance(_last_weight(blocks, li), nn.Linear):
                raise ValueError(
                    f"{func}(): layer {name!r} outputs a {rec[name].out.ndim}-D tensor from a "
                    "Linear (token-shaped features); v1 supports (sample, feature) and "
                    "(sample, channel, *spatial) outputs only."
                )
            self.acts[li].append(_node_mean(rec[name].out).detach().cpu().numpy())

    def add_block(
        self,
        bi: int,
        blk: _Block,
        c: torch.Tensor,
        beta: torch.Tensor,
        abar: torch.Tensor,
        out: Any,
    ) -> None:
        """Contributions and bias shares of block ``bi`` for one batch."""
        self.num[bi] += beta.abs().sum().item()
        self.den[bi] += abar.abs().sum().item()
        cn, bn_ = c.detach().cpu().numpy(), beta.detach().cpu().numpy()
        if blk.post:
            self.cons[bi + 1].append(cn)
            self.biases[bi + 1].append(bn_)
        else:
            self.out["output_contribution"].append(cn)
            self.out["output_bias"].append(bn_)
            self.out["logits"].append(_node_mean(out).detach().cpu().numpy())

    @property
    def residual_fraction(self) -> np.ndarray:
        """Sum of |bias share| over sum of |activity|, per block."""
        return np.where(self.den > 0, self.num / np.maximum(self.den, 1e-300), 0.0)

    def warn_smooth(self, blocks: list[_Block]) -> None:
        """Warn where the gradient-times-input fallback leaves a large residual."""
        frac = self.residual_fraction
        for bi in range(self.n_layers):
            if (
                self.methods[bi] in ("jacobian", "approximate")
                and blocks[bi].smooth
                and frac[bi] > 1e-3
            ):
                warnings.warn(
                    f"edge_contributions(): block {blocks[bi].pre!r} -> "
                    f"{blocks[bi].post or 'output'!r} has smooth activations; the "
                    f"gradient-times-input fallback leaves {frac[bi]:.3g} of the activity as "
                    "residual (reported as bias share).",
                    ConservationWarning,
                    stacklevel=3,
                )

    def tree(self, layers: list[str], model_name: str) -> xr.DataTree:
        """Return the labelled result (see :func:`edge_contributions`, Returns)."""
        out = self.out
        output = (
            (out["output_contribution"], out["output_bias"], out["logits"])
            if self.has_output
            else None
        )
        return _contribution_tree(
            self.acts, self.cons, self.biases, output, self.residual_fraction,
            layers=layers, methods=self.methods, model=model_name,
        )  # fmt: skip


def _contribution_tree(
    acts: list[list[np.ndarray]],
    cons: list[list[np.ndarray]],
    biases: list[list[np.ndarray]],
    output: tuple[list[np.ndarray], ...] | None,
    resid_frac: np.ndarray,
    *,
    layers: list[str],
    methods: list[str],
    model: str,
) -> xr.DataTree:
    """Assemble edge_contributions' DataTree: a root, one child per layer, ``output``."""
    root = xr.Dataset(
        {"residual_fraction": (("block",), resid_frac)},
        coords={"sample": np.arange(sum(len(a) for a in acts[0])), "block": np.arange(len(layers))},
    )
    if output is not None:
        root["logits"] = (("sample", "output"), np.concatenate(output[2]))
    root.attrs = {
        "layers": list(layers),
        "methods": methods,
        "model": model,
        "description": "per-sample edge contributions between consecutive recorded layers",
    }
    nodes: dict[str, xr.Dataset] = {"/": root}
    for li, name in enumerate(layers):
        data: dict[str, Any] = {"activity": (("sample", "node"), np.concatenate(acts[li]))}
        if li >= 1:
            data["contribution"] = (("sample", "node", "pre"), np.concatenate(cons[li]))
            data["bias"] = (("sample", "node"), np.concatenate(biases[li]))
        ds = xr.Dataset(data, attrs={"layer": name})
        nodes[f"layer_{li}"] = ds.assign_coords(
            {d: np.arange(ds.sizes[d]) for d in ds.dims if d != "sample"}
        )
    if output is not None:
        nodes["output"] = xr.Dataset(
            {
                "contribution": (("sample", "output", "pre"), np.concatenate(output[0])),
                "bias": (("sample", "output"), np.concatenate(output[1])),
            },
            coords={"pre": np.arange(nodes[f"layer_{len(layers) - 1}"].sizes["node"])},
        )
    return xr.DataTree.from_dict(nodes)
