"""Per-sample edge contributions of one block: the closed forms, the Jacobian, the checks."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from netphys.errors import NotACutError, TrainingModeError, UnsupportedModuleError
from netphys.recorder._graph_probe import (
    _BN,
    _PASS,
    _PIECEWISE,
    _POOL,
    _SMOOTH,
    _WEIGHT,
    _Block,
    _bn_scale,
    _full_conv_weight,
    _node_mean,
)
from netphys.recorder._suspend import preserved_state


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
        with preserved_state(model), torch.enable_grad():
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
        with preserved_state(model), torch.no_grad(), contextlib.suppress(_Stop):
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


def _last_weight(blocks: list[_Block], li: int) -> nn.Module | None:
    if li == 0:
        return None
    for c in reversed(blocks[li - 1].leaves):
        if isinstance(c.module, _WEIGHT):
            return c.module
    return None
