"""The probe forward of the graph code: module call order, blocks between recorded layers.

Every forward pass run here is netphys' own: it is suspended for every Recorder and leaves the
model's state as it was (:func:`netphys.recorder._suspend.preserved_state`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from netphys._validation import check_layer_names
from netphys.recorder._suspend import preserved_state

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
    """Return True if tensor ``t`` is ``prev`` or a view of it (same storage start and size)."""
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
        with preserved_state(model), torch.no_grad():
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
    names = [n for n, _ in model.named_modules() if n]
    return check_layer_names(list(layers), names, func=func, owner=type(model).__name__)


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
