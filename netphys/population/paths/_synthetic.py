"""Exact edge contributions of a random ReLU MLP, computed with numpy (for examples and tests)."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import as_rng, check_int
from netphys.population.paths._layers import build

__all__ = ["relu_mlp_contributions"]


def relu_mlp_contributions(
    *,
    n_samples: int = 20,
    n_inputs: int = 5,
    widths: tuple[int, ...] = (6, 5, 4),
    n_outputs: int = 3,
    bias: float = 0.1,
    rng: Any = 0,
) -> xr.DataTree:
    """Build the edge contributions of a random Linear+ReLU network on random inputs.

    The network is ``x -> ReLU(W_0 x + b_0) -> ... -> ReLU(W_{L-1} a + b_{L-1}) -> W_o a +
    b_o``; the recorded layers are the ReLU outputs. For a ReLU unit ``j`` that is on,
    ``a_j = sum_i W_ji a_i + b_j`` exactly, so ``c[t, j, i] = g_j W_ji a_i`` and the bias
    share ``g_j b_j`` (``g_j`` = 1 if the unit is on) conserve its activity, as the closed
    form of :func:`netphys.recorder.edge_contributions` does for the same torch network.

    Parameters
    ----------
    n_samples : int, default=20
        Number of random inputs (standard normal).
    n_inputs : int, default=5
        Input dimension.
    widths : tuple of int, default=(6, 5, 4)
        Widths of the recorded ReLU layers.
    n_outputs : int, default=3
        Output (logit) dimension; 0 leaves out the output block.
    bias : float, default=0.1
        Scale of the (normal) biases.
    rng : int, Generator or None, default=0
        Randomness of the weights and inputs.

    Returns
    -------
    xarray.DataTree
        The layout of :func:`netphys.recorder.edge_contributions`.

    Examples
    --------
    >>> c = relu_mlp_contributions(n_samples=3, widths=(4, 2))
    >>> c["layer_1"]["contribution"].shape
    (3, 2, 4)
    """
    func = "relu_mlp_contributions"
    n = check_int(n_samples, func=func, name="n_samples", minimum=1)
    gen = as_rng(rng, func=func)
    a = gen.normal(size=(n, check_int(n_inputs, func=func, name="n_inputs", minimum=1)))
    layers: list[dict[str, Any]] = []
    resid = []
    for li, w_out in enumerate(widths):
        w = gen.normal(size=(w_out, a.shape[1])) / np.sqrt(a.shape[1])
        b = bias * gen.normal(size=w_out)
        z = a @ w.T + b
        g = (z > 0).astype(np.float64)
        data: dict[str, Any] = {"activity": (("sample", "node"), g * z)}
        if li > 0:
            data["contribution"] = (("sample", "node", "pre"), g[:, :, None] * w * a[:, None])
            data["bias"] = (("sample", "node"), g * b)
            resid.append(np.abs(g * b).sum() / max(np.abs(g * z).sum(), 1e-300))
        layers.append(data)
        a = g * z
    root = xr.Dataset(coords={"sample": np.arange(n)})
    extra = {}
    if n_outputs:
        wo = gen.normal(size=(n_outputs, a.shape[1])) / np.sqrt(a.shape[1])
        bo = bias * gen.normal(size=n_outputs)
        logits = a @ wo.T + bo
        root["logits"] = (("sample", "output"), logits)
        extra["output"] = xr.Dataset(
            {
                "contribution": (("sample", "output", "pre"), wo[None] * a[:, None]),
                "bias": (("sample", "output"), np.broadcast_to(bo, logits.shape).copy()),
            }
        )
        resid.append(np.abs(bo).sum() * n / max(np.abs(logits).sum(), 1e-300))
    else:
        resid.append(0.0)
    names = [f"relu{li}" for li in range(len(widths))]
    root["residual_fraction"] = (("block",), np.asarray(resid, dtype=np.float64))
    root = root.assign_coords(block=np.arange(len(widths)))
    root.attrs = {
        "layers": names,
        "methods": ["closed"] * (len(widths) - 1) + (["closed"] if n_outputs else ["none"]),
        "model": "random ReLU MLP (numpy)",
        "description": "per-sample edge contributions between consecutive recorded layers",
    }
    return build(root, layers, layer_attrs=names, extra=extra)
