"""Weight matrices of a torch model's layers, as 2-D numpy arrays (the torch side of anatomy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["layer_weights"]

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _matrix(module: nn.Module) -> np.ndarray:
    """``(out, in * prod(kernel))`` float64 copy of a Linear or Conv weight."""
    weight: torch.Tensor = module.weight  # type: ignore[assignment]
    arr = weight.detach().to("cpu", torch.float64).numpy()
    return np.array(arr.reshape(arr.shape[0], -1))


def layer_weights(
    model: nn.Module, layers: str | Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Return the weight matrices of a model's Linear and Conv layers as 2-D arrays.

    Parameters
    ----------
    model : torch.nn.Module
        The network (not modified; weights are copied to host memory as float64).
    layers : str or list of str, optional
        Module names. A module with weights (Linear, Conv1d/2d/3d) is taken itself; a module
        without (e.g. a recorded ReLU ``act1``) stands for the last weighted module registered
        before it (``conv1`` for ``act1`` in the demo CNN: the weights feeding that layer).
        Default: every Linear and Conv module.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{weighted module name: matrix}`` in registration order; Linear weights as
        ``(out, in)``, conv kernels ``(out, in/groups, *k)`` reshaped to
        ``(out, in/groups * prod(k))``.

    Raises
    ------
    TypeError
        If ``model`` is not a torch module.
    ValueError
        If a name in ``layers`` is not a module of ``model`` or no weighted module precedes
        it, or the model has no Linear or Conv layer.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
    ...                           torch.nn.Flatten(), torch.nn.Linear(36, 2))
    >>> {k: v.shape for k, v in layer_weights(net).items()}
    {'0': (4, 9), '3': (2, 36)}
    >>> list(layer_weights(net, ["1"]))
    ['0']
    """
    func = "layer_weights"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{func}(): `model` must be a torch.nn.Module; got {type(model).__name__}.")
    modules = dict(model.named_modules())
    weighted = [n for n, m in modules.items() if isinstance(m, _WEIGHTED)]
    if not weighted:
        raise ValueError(
            f"{func}(): `model` ({type(model).__name__}) has no Linear or Conv layer; nothing "
            "to analyse."
        )
    if layers is None:
        names = weighted
    else:
        wanted = [layers] if isinstance(layers, str) else list(layers)
        order = list(modules)
        names = []
        for name in wanted:
            if name not in modules:
                raise ValueError(
                    f"{func}(): `layers` entry {name!r} is not a module of the model; "
                    f"weighted modules: {weighted}."
                )
            before = [n for n in weighted if order.index(n) <= order.index(name)]
            if not before:
                raise ValueError(
                    f"{func}(): no Linear or Conv module comes before {name!r}; pick one of "
                    f"{weighted}."
                )
            if before[-1] not in names:
                names.append(before[-1])
    return {name: _matrix(modules[name]) for name in names}
