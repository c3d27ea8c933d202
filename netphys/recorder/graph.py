"""Computational graph of a recorded model: blocks, static node weights, edge contributions.

Nodes are the channels (conv outputs, dim 1) or features (linear outputs, last dim) of the
recorded post-activation layers; a channel's activity is the spatial mean of its map. Edges join
consecutive recorded layers, plus the model output (logits) from the last recorded layer. This
module is the torch side of the path analysis (``netphys/population/paths/`` does the rest on
numpy arrays); it does no analysis itself. Algorithm: ``reference/paths.md`` sections 3.1-3.2.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

from netphys.errors import (
    ConservationWarning,
    NotACutError,
    TrainingModeError,
    UnsupportedModuleError,
)

__all__ = ["edge_contributions", "node_weights"]

_WEIGHT = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_PIECEWISE = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.PReLU, nn.Hardtanh, nn.Threshold)
_SMOOTH = (
    nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.LogSigmoid, nn.Tanhshrink, nn.Softsign,
)  # fmt: skip
_PASS = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
         nn.Flatten, nn.Unflatten)  # fmt: skip
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
         nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
         nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)  # fmt: skip
_UNSUPPORTED = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
                nn.InstanceNorm3d, nn.LocalResponseNorm, nn.Softmax, nn.Softmin, nn.LogSoftmax,
                nn.Softmax2d, nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase, nn.Embedding,
                nn.EmbeddingBag, nn.Transformer, nn.TransformerEncoderLayer,
                nn.TransformerDecoderLayer)  # fmt: skip
_KNOWN = _WEIGHT + _BN + _PIECEWISE + _SMOOTH + _PASS + _POOL


# ------------------------------------------------------------------------------------------
# probe forward: call order, blocks
# ------------------------------------------------------------------------------------------
@dataclass
class _Call:
    name: str
    module: nn.Module
    start: int
    end: int = -1
    inp: torch.Tensor | None = None
    out: Any = None


@dataclass
class _Block:
    """Modules executed between two recorded layers (or after the last one)."""

    pre: str
    post: str  # "" = model output
    calls: list[_Call] = field(default_factory=list)
    leaves: list[_Call] = field(default_factory=list)
    chain: bool = False  # every leaf feeds the next (views allowed), from pre's output to post's
    unsupported: list[tuple[str, str]] = field(default_factory=list)
    training: list[tuple[str, str]] = field(default_factory=list)
    smooth: bool = False


def _follows(t: Any, prev: Any) -> bool:
    """True if tensor ``t`` is ``prev`` or a view of it (same storage start and size)."""
    if not (isinstance(t, torch.Tensor) and isinstance(prev, torch.Tensor)):
        return False
    if t is prev:
        return True
    return bool(t.numel() == prev.numel() and t.data_ptr() == prev.data_ptr())


def _first_tensor(args: tuple[Any, ...]) -> torch.Tensor | None:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
    return None


def _probe(model: nn.Module, x: torch.Tensor) -> tuple[list[_Call], Any]:
    """Run one forward pass recording the call order of every module."""
    calls: list[_Call] = []
    stack: list[_Call] = []
    counter = [0]
    names = {id(m): n for n, m in model.named_modules()}
    handles = []

    def pre_hook(mod: nn.Module, args: tuple[Any, ...]) -> None:
        c = _Call(names.get(id(mod), "?"), mod, counter[0], inp=_first_tensor(args))
        counter[0] += 1
        calls.append(c)
        stack.append(c)

    def post_hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        for k in range(len(stack) - 1, -1, -1):
            if stack[k].module is mod:
                c = stack.pop(k)
                c.end = counter[0]
                counter[0] += 1
                c.out = out
                break

    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre_hook))
        handles.append(m.register_forward_hook(post_hook))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return calls, out


def _check_layers(model: nn.Module, layers: Any, func: str) -> list[str]:
    if isinstance(layers, str) or not isinstance(layers, (list, tuple)):
        raise TypeError(
            f"{func}(): `layers` must be a list of module names; got {type(layers).__name__} "
            f"{layers!r}. Pass e.g. `layers=['relu1', 'relu2']`."
        )
    layers = list(layers)
    if len(layers) == 0:
        raise ValueError(
            f"{func}(): `layers` is empty; no recorded layers to build a graph on. "
            "Pass at least one module name, e.g. the post-activation modules of the model."
        )
    names = dict(model.named_modules())
    for name in layers:
        if name not in names or name == "":
            close = difflib.get_close_matches(str(name), [n for n in names if n], n=3)
            raise ValueError(
                f"{func}(): layer {name!r} in `layers` is not a module of the model. "
                f"Did you mean {close}? Module names come from `model.named_modules()`."
            )
    if len(set(layers)) != len(layers):
        raise ValueError(f"{func}(): `layers` has duplicates: {layers}. List each layer once.")
    return [str(name) for name in layers]


def _blocks(
    model: nn.Module, layers: list[str], x: torch.Tensor, func: str
) -> tuple[list[_Block], dict[str, _Call], Any]:
    """Discover the blocks between consecutive recorded layers from a probe forward."""
    calls, out = _probe(model, x)
    rec: dict[str, _Call] = {}
    for name in layers:
        found = [c for c in calls if c.name == name]
        if not found:
            raise ValueError(
                f"{func}(): layer {name!r} is never called in the forward pass of the model; "
                "pick modules that run on the example input."
            )
        if len(found) > 1:
            raise ValueError(
                f"{func}(): layer {name!r} is called {len(found)} times in one forward pass; "
                "a recorded layer must run once. Record a module that is not shared."
            )
        if not isinstance(found[0].out, torch.Tensor):
            raise ValueError(
                f"{func}(): layer {name!r} returns {type(found[0].out).__name__}, not a tensor; "
                "record modules whose output is a single tensor."
            )
        rec[name] = found[0]
    order = sorted(layers, key=lambda n: rec[n].end)
    if order != layers:
        raise ValueError(
            f"{func}(): `layers` is not in forward order; got {layers}, the forward pass runs "
            f"them as {order}. Pass the layers in the order the model computes them."
        )
    for a, b in itertools.pairwise(layers):
        if rec[b].start < rec[a].end:
            raise ValueError(
                f"{func}(): layer {b!r} contains or starts before {a!r} ends; recorded layers "
                "must be computed one after the other. Record non-nested modules."
            )
    root_end = max(c.end for c in calls)
    blocks = []
    bounds = [(layers[i], layers[i + 1]) for i in range(len(layers) - 1)] + [(layers[-1], "")]
    for pre, post in bounds:
        lo = rec[pre].end
        hi = rec[post].end if post else root_end
        post_out = rec[post].out if post else out
        blk = _Block(pre, post)
        blk.calls = [c for c in calls if c.start > lo and c.end <= hi and c.name != ""]
        blk.leaves = [c for c in blk.calls if not any(True for _ in c.module.children())]
        for c in blk.calls:
            m = c.module
            if isinstance(m, _UNSUPPORTED) or (
                not isinstance(m, _KNOWN) and any(True for _ in m.parameters(recurse=False))
            ):
                blk.unsupported.append((c.name, type(m).__name__))
            if isinstance(m, _BN) and (m.training or not m.track_running_stats):
                blk.training.append((c.name, type(m).__name__))
            if isinstance(m, _PASS[1:6]) and m.training:
                blk.training.append((c.name, type(m).__name__))
            if isinstance(m, _SMOOTH):
                blk.smooth = True
        cur: Any = rec[pre].out
        ok = True
        for c in blk.leaves:
            if not _follows(c.inp, cur):
                ok = False
                break
            cur = c.out
        blk.chain = ok and _follows(post_out, cur) and len(blk.leaves) > 0
        blocks.append(blk)
    return blocks, rec, out


def _n_nodes(t: torch.Tensor) -> int:
    return int(t.shape[1])


def _node_mean(t: torch.Tensor) -> torch.Tensor:
    """Node activity: features of a 2-D output, spatial mean of each channel otherwise."""
    if t.ndim == 2:
        return t
    return t.reshape(t.shape[0], t.shape[1], -1).mean(-1)


# ------------------------------------------------------------------------------------------
# static weights
# ------------------------------------------------------------------------------------------
def _bn_scale(bn: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale s and shift t of an eval BatchNorm: y = s*x + t."""
    var = bn.running_var
    mean = bn.running_mean
    s = 1.0 / torch.sqrt(var + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight
    t = -mean * s
    if bn.bias is not None:
        t = t + bn.bias
    return s, t


def _full_conv_weight(conv: Any) -> torch.Tensor:
    """Conv weight as (Co, Ci, k) with zeros across groups."""
    w: torch.Tensor = conv.weight
    co, cig = w.shape[0], w.shape[1]
    g = int(conv.groups)
    ci = cig * g
    w = w.reshape(co, cig, -1)
    if g == 1:
        return w
    full = w.new_zeros(co, ci, w.shape[-1])
    og = co // g
    for k in range(g):
        full[k * og : (k + 1) * og, k * cig : (k + 1) * cig] = w[k * og : (k + 1) * og]
    return full


def _static_block(blk: _Block, n_pre: int) -> torch.Tensor | None:
    """Compose the mean-field node-to-node weight matrix of a chain block, or None."""
    if not blk.chain or blk.unsupported:
        return None
    m: torch.Tensor | None = None  # (n_current, n_pre); None = identity
    n_cur = n_pre
    for c in blk.leaves:
        mod = c.module
        if isinstance(mod, nn.Linear):
            w = mod.weight.detach().double()
            inp = c.inp
            assert inp is not None
            if inp.ndim == 2:
                if w.shape[1] % n_cur:
                    return None
                w = w.reshape(w.shape[0], n_cur, -1).sum(-1)
            elif w.shape[1] != n_cur:
                return None
            n_cur = w.shape[0]
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            w = _full_conv_weight(mod).detach().double().sum(-1)
            if w.shape[1] != n_cur:
                return None
            n_cur = w.shape[0]
        elif isinstance(mod, _BN):
            if mod.training or not mod.track_running_stats:
                return None
            s, _ = _bn_scale(mod)
            w = torch.diag(s.detach().double())
        elif isinstance(mod, _PIECEWISE + _SMOOTH + _PASS + _POOL):
            continue
        else:
            return None
        m = w if m is None else w @ m
    if m is None:
        return None
    return m


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


# ------------------------------------------------------------------------------------------
# per-sample edge contributions
# ------------------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised from a hook to end a forward pass early."""


_HOMOGENEOUS = _POOL + _PASS + (nn.ReLU, nn.LeakyReLU, nn.PReLU)


def _closed_form_plan(blk: _Block) -> tuple[int, nn.Module | None] | None:
    """Return (index of the weight leaf, BN or None) if the block has a closed form, else None.

    Closed-form blocks: channelwise positively homogeneous ops (pooling, ReLU, flatten,
    dropout, identity), one Linear/Conv1d/Conv2d, optional eval BN right after it, then
    elementwise activations, dropout or identity. For the leading ops, gradient x input summed
    over a channel's positions equals their output (Euler's theorem), so the closed form on
    the weight op's input equals the Jacobian fallback exactly.
    """
    if not blk.chain or blk.unsupported or blk.training:
        return None
    widx: int | None = None
    bn: nn.Module | None = None
    seen_act = False
    for idx, c in enumerate(blk.leaves):
        mod = c.module
        if isinstance(mod, _WEIGHT):
            if widx is not None:
                return None
            if isinstance(mod, nn.Conv3d) or (
                isinstance(mod, (nn.Conv1d, nn.Conv2d))
                and (
                    mod.padding_mode != "zeros"
                    or (isinstance(mod.padding, str) and mod.padding != "valid")
                )
            ):
                return None
            widx = idx
        elif widx is None:
            if not isinstance(mod, _HOMOGENEOUS):
                return None
            if isinstance(mod, nn.Unflatten) or (
                isinstance(mod, _POOL) and (c.inp is None or c.inp.ndim < 3)
            ):
                return None
        elif isinstance(mod, _BN):
            if bn is not None or seen_act:
                return None
            bn = mod
        elif isinstance(mod, _PIECEWISE + _SMOOTH):
            seen_act = True
        elif isinstance(mod, _PASS):
            if isinstance(mod, (nn.Flatten, nn.Unflatten)) and (
                c.inp is not None and c.out is not None and c.inp.shape != c.out.shape
            ):
                return None
        else:
            return None
    if widx is None:
        return None
    return widx, bn


def _folded(weight: Any, bn: Any) -> tuple[torch.Tensor, torch.Tensor]:
    w = weight.weight.detach()
    b = weight.bias.detach() if weight.bias is not None else w.new_zeros(w.shape[0])
    if bn is not None:
        s, t = _bn_scale(bn)
        s, t = s.detach().to(w.dtype), t.detach().to(w.dtype)
        w = w * s.reshape(-1, *([1] * (w.ndim - 1)))
        b = b * s + t
    return w, b


def _secant(a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    nz = z != 0
    return torch.where(nz, a / torch.where(nz, z, torch.ones_like(z)), torch.zeros_like(z))


def _closed_form(
    weight: nn.Module,
    bn: nn.Module | None,
    a_prev: torch.Tensor,
    a_out: torch.Tensor,
    n_pre: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact contributions (B, Co, Ci) and bias shares (B, Co) of a closed-form block.

    ``a_prev`` is the weight op's input; ``n_pre`` the number of pre nodes (channels) when a
    Linear reads a flattened map.
    """
    with torch.no_grad():
        return _closed_form_kernel(weight, bn, a_prev, a_out, n_pre)


def _closed_form_kernel(
    weight: Any,
    bn: nn.Module | None,
    a_prev: torch.Tensor,
    a_out: torch.Tensor,
    n_pre: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    w, b = _folded(weight, bn)
    bsz = a_prev.shape[0]
    if isinstance(weight, nn.Linear):
        ci = a_prev.shape[1] if n_pre is None else n_pre
        a = a_prev.reshape(bsz, ci, -1)  # (B, Ci, S); S = 1 for a 2-D input
        z = F.linear(a_prev.reshape(bsz, -1), w, b)
        g = _secant(a_out.reshape(bsz, -1), z)
        ws = w.reshape(w.shape[0], ci, -1)
        c = g[:, :, None] * torch.einsum("jis,bis->bji", ws, a)
        return c, g * b
    # Conv1d / Conv2d: c = (1/P) sum_p g_j(p) sum_k W[j,i,k] U[i,k,p]. The inner sum over p,
    # M[b,j,i,k] = sum_p g[b,j,p] U[b,(i,k),p], is a per-sample weight gradient, computed as one
    # grouped conv (batch as groups; stride and dilation swap roles); F.unfold is much slower.
    x = a_prev
    if isinstance(weight, nn.Conv1d):
        x = x.unsqueeze(2)
        ks, st, pd, dl = (
            (1, *weight.kernel_size),
            (1, *weight.stride),
            (0, *_pad(weight)),
            (1, *weight.dilation),
        )
        z = F.conv1d(a_prev, w, b, weight.stride, _pad(weight), weight.dilation, weight.groups)
    else:
        ks, st, pd, dl = weight.kernel_size, weight.stride, _pad(weight), weight.dilation
        z = F.conv2d(a_prev, w, b, weight.stride, _pad(weight), weight.dilation, weight.groups)
    co = z.shape[1]
    z2 = z.reshape(bsz, co, *([1] if isinstance(weight, nn.Conv1d) else []), *z.shape[2:])
    g2 = _secant(a_out.reshape(z.shape), z).reshape(z2.shape)  # (B, Co, H', W')
    ci = x.shape[1]
    mm = F.conv2d(
        x.transpose(0, 1),  # (Ci, B, H, W)
        g2.reshape(bsz * co, 1, *g2.shape[2:]),
        stride=dl,
        padding=pd,
        dilation=st,
        groups=bsz,
    )[:, :, : ks[0], : ks[1]]  # (Ci, B*Co, kh, kw)
    mm = mm.reshape(ci, bsz, co, -1).permute(1, 2, 0, 3)  # (B, Co, Ci, k)
    g = g2.reshape(bsz, co, -1)
    p = g.shape[-1]
    full = _full_conv_weight_of(w, weight.groups)  # (Co, Ci, k)
    c = (mm * full).sum(-1) / p
    return c, g.mean(-1) * b


def _pad(conv: Any) -> tuple[int, ...]:
    if isinstance(conv.padding, str):  # only 'valid' reaches here
        return tuple(0 for _ in conv.kernel_size)
    return tuple(conv.padding)


def _full_conv_weight_of(w: torch.Tensor, groups: int) -> torch.Tensor:
    from types import SimpleNamespace

    return _full_conv_weight(SimpleNamespace(weight=w, groups=groups))


def _jacobian(
    model: nn.Module,
    x: torch.Tensor,
    pre: nn.Module,
    post: nn.Module | None,
    a_prev: torch.Tensor,
    chunk: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient-times-input contributions (B, Co, Ci) and node activity (B, Co) of a block.

    ``pre``'s output is clamped to a leaf tensor that requires grad; ``post`` (None = the
    model output) is captured and the forward is stopped there.
    """
    leaf = a_prev.detach().clone().requires_grad_(True)
    captured: dict[str, torch.Tensor] = {}

    def clamp(mod: nn.Module, args: tuple[Any, ...], out: Any) -> torch.Tensor:
        return leaf

    def stop(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        captured["out"] = out
        raise _Stop

    handles = [pre.register_forward_hook(clamp)]
    if post is not None:
        handles.append(post.register_forward_hook(stop))
    try:
        with torch.enable_grad():
            try:
                res = model(x)
                captured["out"] = res
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    out = captured["out"]
    abar = _node_mean(out)  # (B, Co)
    bsz, co = abar.shape
    ci = a_prev.shape[1]
    c = a_prev.new_zeros(bsz, co, ci)
    eye = torch.eye(co, dtype=abar.dtype, device=abar.device)
    for j0 in range(0, co, chunk):
        js = list(range(j0, min(co, j0 + chunk)))
        go = eye[js][:, None, :].expand(len(js), bsz, co)
        try:
            (grads,) = torch.autograd.grad(
                abar, leaf, grad_outputs=go, retain_graph=True, is_grads_batched=True
            )
        except RuntimeError:  # an op without a batching rule: one backward per target
            grads = torch.stack([
                torch.autograd.grad(abar, leaf, grad_outputs=go[k], retain_graph=True)[0]
                for k in range(len(js))
            ])  # fmt: skip
        gi = (grads * leaf.detach()).reshape(len(js), bsz, ci, -1).sum(-1)  # (J, B, Ci)
        c[:, js, :] = gi.permute(1, 0, 2)
    return c.detach(), abar.detach()


def _check_block(blk: _Block, allow_approximate: bool, func: str) -> str:
    """Raise the named errors for a block; return the method: closed, jacobian, approximate."""
    target = repr(blk.post) if blk.post else "the model output"
    if blk.training:
        name, kind = blk.training[0]
        raise TrainingModeError(
            f"{func}(): module {name!r} ({kind}) between {blk.pre!r} and {target} is in "
            "training mode or uses batch statistics; contributions need fixed statistics. "
            "Call `model.eval()` first (and keep `track_running_stats=True`)."
        )
    if blk.unsupported:
        if not allow_approximate:
            name, kind = blk.unsupported[0]
            raise UnsupportedModuleError(
                f"{func}(): module {name!r} ({kind}) between {blk.pre!r} and {target} cannot "
                "be decomposed exactly (normalisation, attention, recurrence, embedding or an "
                "unknown parameterised module). Record a layer after it, or pass "
                "`allow_approximate=True` for the gradient-times-input fallback, whose residual "
                "is reported in `residual_fraction`."
            )
        return "approximate"
    return "closed" if _closed_form_plan(blk) is not None else "jacobian"


def _cut_test(
    model: nn.Module,
    x: torch.Tensor,
    blk: _Block,
    named: dict[str, nn.Module],
    a_prev: torch.Tensor,
    a_post: torch.Tensor,
    func: str,
) -> None:
    """Clamp ``pre`` to its value on x, run another input, check ``post`` is unchanged."""
    if x.shape[0] >= 2:
        x2 = torch.roll(x, 1, 0)
        if torch.equal(x2, x):
            x2 = x + 1.0
    else:
        x2 = x * 0.5 + 1.0
    captured: dict[str, Any] = {}

    def clamp(mod: nn.Module, args: tuple[Any, ...], out: Any) -> torch.Tensor:
        return a_prev

    def stop(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        captured["out"] = out
        raise _Stop

    handles = [named[blk.pre].register_forward_hook(clamp)]
    if blk.post:
        handles.append(named[blk.post].register_forward_hook(stop))
    try:
        with torch.no_grad(), contextlib.suppress(_Stop):
            captured["out"] = model(x2)
    finally:
        for h in handles:
            h.remove()
    out = captured.get("out")
    if not isinstance(out, torch.Tensor) or out.shape != a_post.shape:
        return
    diff = (out - a_post).abs().max().item()
    scale = a_post.abs().max().item()
    if diff > 1e-5 * scale + 1e-12:
        target = repr(blk.post) if blk.post else "the model output"
        raise NotACutError(
            f"{func}(): recorded layer {blk.pre!r} does not separate the input from {target}: "
            f"with {blk.pre!r} clamped, {target} still changed with the input (max difference "
            f"{diff:.3g}), so some route (e.g. a residual/skip connection or a functional op "
            f"reading an earlier tensor) bypasses {blk.pre!r}. Record block outputs instead "
            "(e.g. the module after a residual add)."
        )


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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{func}(): `batch_size` must be an int >= 1; got {batch_size!r}.")
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
    named = dict(model.named_modules())
    n = x_all.shape[0]
    L = len(layers)
    acts: list[list[np.ndarray]] = [[] for _ in range(L)]
    cons: list[list[np.ndarray]] = [[] for _ in range(L)]
    biases: list[list[np.ndarray]] = [[] for _ in range(L)]
    out_c: list[np.ndarray] = []
    out_b: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    methods: list[str] = []
    plans: list[Any] = []
    num = np.zeros(L)
    den = np.zeros(L)
    has_output = False
    starts = range(0, n, batch_size)
    for b0 in tqdm(starts, desc="edge contributions", disable=not progress, leave=False):
        x = x_all[b0 : b0 + batch_size].to(device)
        blocks, rec, out = _blocks(model, layers, x, func)
        if b0 == 0:
            for blk in blocks:
                if not blk.post and not (isinstance(out, torch.Tensor) and out.ndim == 2):
                    methods.append("none")
                    plans.append(None)
                    continue
                methods.append(_check_block(blk, allow_approximate, func))
                plans.append(_closed_form_plan(blk))
            has_output = methods[-1] != "none"
            if check_cut:
                for blk in blocks:
                    if blk.post or has_output:
                        post = rec[blk.post].out if blk.post else out
                        _cut_test(model, x, blk, named, rec[blk.pre].out, post, func)
        for li, name in enumerate(layers):
            if rec[name].out.ndim > 2 and isinstance(_last_weight(blocks, li), nn.Linear):
                raise ValueError(
                    f"{func}(): layer {name!r} outputs a {rec[name].out.ndim}-D tensor from a "
                    "Linear (token-shaped features); v1 supports (sample, feature) and "
                    "(sample, channel, *spatial) outputs only."
                )
            acts[li].append(_node_mean(rec[name].out).detach().cpu().numpy())
        for bi, blk in enumerate(blocks):
            if methods[bi] == "none":
                continue
            a_prev = rec[blk.pre].out
            a_post = rec[blk.post].out if blk.post else out
            if plans[bi] is not None:
                wcall = blk.leaves[plans[bi][0]]
                c, beta = _closed_form(
                    wcall.module, plans[bi][1], wcall.inp, a_post, _n_nodes(a_prev)
                )
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
                        stacklevel=2,
                    )
            else:
                post_mod = named[blk.post] if blk.post else None
                c, abar = _jacobian(model, x, named[blk.pre], post_mod, a_prev)
                beta = abar - c.sum(-1)
            num[bi] += beta.abs().sum().item()
            den[bi] += abar.abs().sum().item()
            cn, bn_ = c.detach().cpu().numpy(), beta.detach().cpu().numpy()
            if blk.post:
                cons[bi + 1].append(cn)
                biases[bi + 1].append(bn_)
            else:
                out_c.append(cn)
                out_b.append(bn_)
                logits.append(_node_mean(out).detach().cpu().numpy())
    resid_frac = np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)
    for bi in range(L):
        if (
            methods[bi] in ("jacobian", "approximate")
            and blocks[bi].smooth
            and resid_frac[bi] > 1e-3
        ):
            warnings.warn(
                f"{func}(): block {blocks[bi].pre!r} -> {blocks[bi].post or 'output'!r} has "
                f"smooth activations; the gradient-times-input fallback leaves "
                f"{resid_frac[bi]:.3g} of the activity as residual (reported as bias share).",
                ConservationWarning,
                stacklevel=2,
            )
    return _contribution_tree(
        acts, cons, biases, (out_c, out_b, logits) if has_output else None, resid_frac,
        layers=layers, methods=methods, model=type(model).__name__,
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


def _last_weight(blocks: list[_Block], li: int) -> nn.Module | None:
    if li == 0:
        return None
    for c in reversed(blocks[li - 1].leaves):
        if isinstance(c.module, _WEIGHT):
            return c.module
    return None
