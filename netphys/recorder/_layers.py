"""Which modules to record, how to read their outputs, and how units are laid out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from netphys._validation import check_layer_names
from netphys.errors import RecordingError

__all__ = [
    "LayerLayout",
    "default_layers",
    "extract_tensor",
    "list_layers",
    "resolve_layers",
    "site_of",
]

#: Modules whose outputs put features in the last dim (Linear-like, token models).
_FEATURES_LAST = (
    nn.Linear,
    nn.Bilinear,
    nn.LayerNorm,
    nn.Embedding,
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.TransformerEncoder,
    nn.TransformerDecoder,
    nn.RNNBase,
)

_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
)


def default_layers(model: nn.Module) -> list[str]:
    """Every activation module; models without one get their encoder layers or leaf modules.

    Examples
    --------
    >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> default_layers(m)
    ['1']
    """
    acts = [n for n, m in model.named_modules() if n and isinstance(m, _ACTIVATIONS)]
    if acts:
        return acts
    blocks = [
        n
        for n, m in model.named_modules()
        if n and isinstance(m, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer))
    ]
    if blocks:
        return blocks
    return [n for n, m in model.named_modules() if n and not list(m.children())]


def list_layers(model: nn.Module) -> list[str]:
    """Every module name of ``model`` that can be recorded (``named_modules()``, root excluded).

    A module that runs several times per forward (e.g. ``layer1.0.relu`` in a torchvision
    ResNet block) can be recorded per call as ``"layer1.0.relu:0"``, ``"layer1.0.relu:1"``.

    Examples
    --------
    >>> list_layers(nn.Sequential(nn.Linear(4, 8), nn.ReLU()))
    ['0', '1']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"list_layers(): `model` must be a torch.nn.Module; got {type(model).__name__}."
        )
    return [n for n, _ in model.named_modules() if n]


def resolve_layers(model: nn.Module, layers: str | Sequence[str] | None) -> list[str]:
    """Check layer names against ``model.named_modules()``; return them as a list.

    Names may end in ``:k``: the k-th call (0-based) of a module that runs several times in
    one forward. ``None`` gives :func:`default_layers`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Recorder: `model` must be a torch.nn.Module; got {type(model).__name__}.")
    if layers is None:
        names = default_layers(model)
        if not names:
            raise ValueError(
                "Recorder: the model has no submodules to record; pass `layers=[...]` "
                "with module names or wrap the computation in modules."
            )
        return names
    names = check_layer_names(
        layers, list_layers(model), func="Recorder", owner=type(model).__name__
    )
    plain = {n for n in names if site_of(n)[1] is None}
    both = sorted({m for m, k in map(site_of, names) if k is not None and m in plain})
    if both:
        raise ValueError(
            f"Recorder: `layers` names module {both[0]!r} both whole and per call "
            f"({both[0]!r} and {both[0]!r}:k); list either the module or its calls."
        )
    return names


def site_of(name: str) -> tuple[str, int | None]:
    """Split a layer name into (module name, call index or None).

    Examples
    --------
    >>> site_of("layer1.0.relu:1"), site_of("fc")
    (('layer1.0.relu', 1), ('fc', None))
    """
    base, sep, k = name.rpartition(":")
    if sep and k.isdigit():
        return base, int(k)
    return name, None


def extract_tensor(output: Any, name: str) -> torch.Tensor:
    """Return the tensor of a module output: the tensor itself or a tuple's first tensor."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    if isinstance(output, Mapping):
        keys = list(output)
        raise RecordingError(
            f"Recorder: module {name!r} returns a dict with keys {keys}; netphys records "
            "tensors. Record the submodule that produces the wanted entry instead."
        )
    raise RecordingError(
        f"Recorder: module {name!r} returned {type(output).__name__}, not a tensor; record a "
        "module whose output is a tensor (or a tuple whose first item is one)."
    )


@dataclass
class LayerLayout:
    """Unit identity and positions of one recorded layer.

    ``shape`` is the per-sample output shape in channel-first order (C, *spatial);
    ``selection`` the flat indices (into C-order ``shape``) of the recorded units, or None for
    all. ``channel_dim`` is the dim of the raw output (batch included) holding channels.
    """

    name: str
    module_type: str
    raw_shape: tuple[int, ...]
    channel_dim: int
    depth: int
    selection: np.ndarray | None
    field_of_view: float
    layer_spacing: float
    shape: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        raw = list(self.raw_shape)
        c = raw.pop(self.channel_dim - 1)
        self.shape = (c, *raw)

    @property
    def n_channels(self) -> int:
        return self.shape[0]

    @property
    def n_total(self) -> int:
        return int(np.prod(self.shape))

    @property
    def n_units(self) -> int:
        return self.n_total if self.selection is None else len(self.selection)

    def unit_coords(self) -> dict[str, np.ndarray]:
        """Coordinates ``unit_id, channel, y, x, pos_x, pos_y, pos_z`` of the recorded units."""
        ids = np.arange(self.n_total) if self.selection is None else self.selection
        c, *spatial = self.shape
        spatial_size = int(np.prod(spatial)) if spatial else 1
        channel = ids // spatial_size
        rest = ids % spatial_size
        if len(spatial) >= 2:
            h, w = spatial[-2], spatial[-1]
            y = (rest // w) % h
            x = rest % w
            py = (y + 0.5) / h * self.field_of_view
            px = (x + 0.5) / w * self.field_of_view
        elif len(spatial) == 1:
            y = np.zeros_like(rest)
            x = rest
            # 1-D maps (tokens, sequences) lie along x; channels tile y
            px = (x + 0.5) / spatial[0] * self.field_of_view
            side = math.ceil(math.sqrt(c))
            py = ((channel // side) + 0.5) / side * self.field_of_view
        else:
            # no spatial map: features tile the field of view on a square grid
            side = math.ceil(math.sqrt(c))
            y = np.zeros_like(rest)
            x = np.zeros_like(rest)
            px = ((channel % side) + 0.5) / side * self.field_of_view
            py = ((channel // side) + 0.5) / side * self.field_of_view
        return {
            "unit_id": ids.astype("int64"),
            "channel": channel.astype("int64"),
            "y": np.asarray(y).astype("int64"),
            "x": np.asarray(x).astype("int64"),
            "pos_x": np.asarray(px, dtype="float64"),
            "pos_y": np.asarray(py, dtype="float64"),
            "pos_z": np.full(len(ids), self.depth * self.layer_spacing, dtype="float64"),
        }

    def attrs(self) -> dict[str, Any]:
        return {
            "module_type": self.module_type,
            "output_shape": list(self.raw_shape),
            "unit_shape": list(self.shape),
            "channel_dim": self.channel_dim,
            "n_units_total": self.n_total,
            "selected": self.selection is not None,
            "depth": self.depth,
            "position_units": "um",
            "field_of_view": self.field_of_view,
        }


def channel_dim_for(module: nn.Module, ndim: int, override: int | None) -> int:
    """Dim (in the batched output of ``ndim`` dims) that holds channels/features."""
    if override is not None:
        d = override if override >= 0 else ndim + override
        if not 1 <= d < ndim:
            raise ValueError(
                f"Recorder: `channel_dims` value {override} is not a non-batch dim of a "
                f"{ndim}-D output."
            )
        return d
    if ndim <= 2:
        return 1
    if isinstance(module, _FEATURES_LAST):
        return ndim - 1
    return 1


def choose_units(
    n_total: int, max_units: int | None, rng: np.random.Generator
) -> np.ndarray | None:
    """Seeded random subset of ``max_units`` unit ids (sorted), or None to keep all."""
    if max_units is None or max_units >= n_total:
        return None
    return np.sort(rng.choice(n_total, size=max_units, replace=False)).astype("int64")
