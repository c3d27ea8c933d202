"""The layered layout shared by contributions, transitions, flows and effective paths.

Every per-layer result of :mod:`netphys.population.paths` is an :class:`xarray.DataTree`:

- the root holds what is per sample (coordinate ``sample``), e.g. ``logits`` or ``n_eff``, and
  the attrs (``layers``: the recorded module names, in forward order);
- one child per recorded layer, ``layer_0`` ... ``layer_{L-1}`` (in forward order), with dims
  ``node`` (this layer's nodes) and ``pre`` (the nodes of the layer below, for edge
  variables), and the attr ``layer`` (the module name);
- for contributions, a child ``output`` with dims ``output`` and ``pre``.

So ``tree["layer_1"]["contribution"]`` is the (sample, node, pre) contribution of layer 0's
nodes to layer 1's, and ``[tree[name] for name in layer_names(tree)]`` lists the layers.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["layer_names"]

#: Name of the child of layer ``i``.
LAYER = "layer_{}"


def layer_names(tree: xr.DataTree) -> list[str]:
    """List the layer children of a layered result, bottom (``layer_0``) first.

    Parameters
    ----------
    tree : xarray.DataTree
        Edge contributions, transitions, flows or effective paths.

    Returns
    -------
    list of str
        ``['layer_0', ..., 'layer_{L-1}']``; empty when ``tree`` has no layers.

    Examples
    --------
    >>> from netphys.population.paths._synthetic import relu_mlp_contributions
    >>> layer_names(relu_mlp_contributions(n_samples=4, widths=(3, 2)))
    ['layer_0', 'layer_1']
    """
    out: list[str] = []
    while isinstance(tree, xr.DataTree) and LAYER.format(len(out)) in tree.children:
        out.append(LAYER.format(len(out)))
    return out


def n_layers(tree: xr.DataTree) -> int:
    """Count the consecutive ``layer_i`` children."""
    return len(layer_names(tree))


def values(tree: xr.DataTree, li: int, name: str) -> np.ndarray:
    """``tree['layer_<li>'][name]`` as a float64 numpy array."""
    return np.asarray(tree[LAYER.format(li)][name].values, dtype=np.float64)


def build(
    root: xr.Dataset,
    layers: list[dict[str, Any]],
    *,
    layer_attrs: list[str] | None = None,
    extra: dict[str, xr.Dataset] | None = None,
) -> xr.DataTree:
    """Assemble a layered tree from a root Dataset and per-layer variable dicts."""
    nodes: dict[str, Any] = {"/": root}
    for li, data in enumerate(layers):
        ds = xr.Dataset(data)
        for dim in ("node", "pre"):
            if dim in ds.dims and dim not in ds.coords:
                ds = ds.assign_coords({dim: np.arange(ds.sizes[dim])})
        if layer_attrs is not None and li < len(layer_attrs):
            ds.attrs = {"layer": str(layer_attrs[li])}
        nodes[LAYER.format(li)] = ds
    nodes.update(extra or {})
    return xr.DataTree.from_dict(nodes)


def from_flat(ds: xr.Dataset, func: str) -> xr.DataTree:
    """Convert the v0.1 flat contributions (``activity_0``, ``contribution_1``...) to a tree."""
    warnings.warn(
        f"{func}(): flat edge contributions with layer indices in the variable names "
        "('activity_0', 'contribution_1', ...) are deprecated and will not be read by the next "
        "release; recompute them with netphys.recorder.edge_contributions(), which returns an "
        "xarray.DataTree with one child per layer.",
        DeprecationWarning,
        stacklevel=3,
    )
    n = 0
    while f"activity_{n}" in ds:
        n += 1
    layers: list[dict[str, Any]] = []
    for li in range(n):
        data: dict[str, Any] = {"activity": (("sample", "node"), ds[f"activity_{li}"].values)}
        for var in ("contribution", "bias"):
            if f"{var}_{li}" in ds:
                dims = ("sample", "node", "pre")[: ds[f"{var}_{li}"].ndim]
                data[var] = (dims, ds[f"{var}_{li}"].values)
        layers.append(data)
    root_vars = {k: ds[k].variable for k in ("logits", "residual_fraction") if k in ds}
    root = xr.Dataset(root_vars, coords={"sample": np.arange(ds.sizes["sample"])})
    if "sample" in ds.coords:
        root = root.assign_coords(sample=ds["sample"].values)
    root.attrs = dict(ds.attrs)
    extra = {}
    if "output_contribution" in ds:
        extra["output"] = xr.Dataset(
            {
                "contribution": (("sample", "output", "pre"), ds["output_contribution"].values),
                "bias": (("sample", "output"), ds["output_bias"].values),
            }
        )
    names = list(ds.attrs.get("layers", []))
    return build(root, layers, layer_attrs=names or None, extra=extra)


def as_tree(contributions: Any, func: str, *, name: str = "contributions") -> xr.DataTree:
    """Validate layered contributions (reading the deprecated flat layout with a warning)."""
    if isinstance(contributions, xr.Dataset):
        if "activity_0" in contributions:
            return from_flat(contributions, func)
        raise ValueError(
            f"{func}(): `{name}` has no recorded layers (a Dataset without 'activity_0'); got "
            f"variables {list(contributions.data_vars)}. Compute it with edge_contributions()."
        )
    if not isinstance(contributions, xr.DataTree):
        raise TypeError(
            f"{func}(): `{name}` must be the xarray.DataTree returned by "
            f"netphys.recorder.edge_contributions(); got {type(contributions).__name__}."
        )
    if n_layers(contributions) == 0:
        raise ValueError(
            f"{func}(): `{name}` has no recorded layers (no 'layer_0' child); got children "
            f"{list(contributions.children)}. Compute it with edge_contributions()."
        )
    return contributions


def layer_attr(tree: xr.DataTree) -> list[str]:
    """Return the module names of the layers (``tree.attrs['layers']``, or ``layer_i``)."""
    n = n_layers(tree)
    names = list(tree.attrs.get("layers", []))
    return names if len(names) == n else [LAYER.format(i) for i in range(n)]


def samples(tree: xr.DataTree) -> np.ndarray:
    """Return the sample coordinate of a layered tree (0..n-1 when it has none)."""
    if "sample" in tree.coords:
        return np.asarray(tree["sample"].values)
    return np.arange(tree[LAYER.format(0)].sizes["sample"])


def portable_strings(obj: Any) -> Any:
    """Return a Dataset or DataTree with fixed-width strings as variable-length ones.

    numpy's fixed-width ``<U`` strings (e.g. layer names, string class labels) have no Zarr v3
    specification: zarr-python writes them as ``FixedLengthUTF32`` and warns that other
    readers may not open them. Object arrays of ``str`` are written as the specified
    variable-length UTF-8 strings and read back equal (as object arrays), so every result with
    text coordinates saves portably with ``to_zarr``.
    """
    if isinstance(obj, xr.DataTree):
        return xr.DataTree.from_dict(
            {
                node.path: portable_strings(node.to_dataset(inherit=False))
                for node in obj.subtree
            }
        )
    fixed = [str(name) for name, v in obj.variables.items() if v.dtype.kind == "U"]
    if not fixed:
        return obj
    coords = {name: obj[name].variable.astype(object) for name in fixed if name in obj.coords}
    data = {name: obj[name].variable.astype(object) for name in fixed if name not in obj.coords}
    return obj.assign_coords(coords).assign(data)
