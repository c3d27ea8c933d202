"""``netphys.anatomy``: weight spectra of a model, of per-session weights, or of a recording."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from netphys.population._weights import TW1_Q99, weight_spectra

__all__ = ["anatomy"]


def _recording_weights(source: Any, func: str) -> dict[int, dict[str, np.ndarray]]:
    """Per-session node-to-node weights stored in a recording's ``graph`` group."""
    from netphys.io.recording import open_recording

    tree = source if isinstance(source, xr.DataTree) else open_recording(source)
    graph = tree.children.get("graph")
    pairs = dict(graph.children) if graph is not None else {}
    if not pairs:
        raise ValueError(
            f"{func}(): the recording holds no per-session weights (no 'graph' group). Record "
            "with `Recorder(..., store_weights=True)` (the default), or pass the model itself."
        )
    by_pair = {}
    for key, node in pairs.items():
        ds = node.to_dataset(inherit=False)
        by_pair[key.replace("--", "->")] = {
            int(s): ds["weight"].isel(checkpoint=i).values
            for i, s in enumerate(np.asarray(ds["checkpoint"].values))
        }
    sessions = sorted(set.intersection(*(set(v) for v in by_pair.values())))
    return {s: {pair: w[s] for pair, w in by_pair.items()} for s in sessions}


def anatomy(
    source: Any, *, layers: str | Sequence[str] | None = None, tw_quantile: float = TW1_Q99
) -> xr.Dataset:
    """Weight-spectrum analysis of every layer: MP bulk edge, spikes, stable rank, tail exponent.

    Parameters
    ----------
    source : torch.nn.Module, mapping, recording path or xarray.DataTree
        - a model: the weights of its Linear and Conv layers (conv kernels reshaped to
          ``out x in*k*k``), see :func:`netphys.recorder.layer_weights`;
        - ``{layer: matrix}`` or ``{session: {layer: matrix}}``: e.g. weights collected after
          every epoch with :func:`netphys.recorder.layer_weights`;
        - a recording (path or tree from :func:`netphys.open_recording`): its stored per-session
          node-to-node weights between consecutive recorded layers (``graph`` group; the
          BatchNorm-folded, mean-field weights on channel means, not the raw kernels), one row
          per layer pair ``"pre->post"`` and session.
    layers : str or list of str, optional
        Model only: modules to analyse (a recorded activation stands for the weighted module
        feeding it). Default: all Linear and Conv modules.
    tw_quantile : float, default=2.02
        Tracy-Widom margin for counting spikes (see
        :func:`netphys.population.weight_spectrum`).

    Returns
    -------
    xarray.Dataset
        The variables of :func:`netphys.population.weight_spectrum` along ``layer`` (and
        ``session`` for per-session weights and recordings): ``eigenvalue`` (ESD of
        ``W^T W / N``), ``mp_edge``, ``spike_threshold``, ``n_spikes``, ``stable_rank``,
        ``alpha`` (power-law tail exponent, ``powerlaw`` package), ``xmin``, ``ks_distance``...
        ``attrs["source"]`` says which weights were analysed.

    Raises
    ------
    TypeError
        If ``source`` is none of the above.
    ValueError
        If a matrix is not 2-D, is empty or holds NaN/inf, or a recording stores no weights.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(100, 200), torch.nn.ReLU(),
    ...                           torch.nn.Linear(200, 10))
    >>> ds = anatomy(net)
    >>> ds["layer"].values.tolist(), int(ds["n_spikes"].sel(layer="0"))
    (['0', '2'], 0)
    """
    func = "anatomy"
    if hasattr(source, "named_modules") and hasattr(source, "parameters"):
        from netphys.recorder._weights import layer_weights

        ds = weight_spectra(layer_weights(source, layers), tw_quantile=tw_quantile)
        ds.attrs["source"] = f"model {type(source).__name__}: Linear/Conv weights (out x in*k*k)"
        return ds
    if layers is not None:
        raise ValueError(
            f"{func}(): `layers` applies to a model only; select rows of the result instead, "
            "e.g. `ds.sel(layer=[...])`."
        )
    if isinstance(source, Mapping):
        ds = weight_spectra(source, tw_quantile=tw_quantile)
        ds.attrs["source"] = "weight matrices"
        return ds
    if isinstance(source, (str, os.PathLike, xr.DataTree)):
        ds = weight_spectra(_recording_weights(source, func), tw_quantile=tw_quantile)
        ds.attrs["source"] = "recording: per-session node-to-node weights (graph group)"
        return ds
    raise TypeError(
        f"{func}(): `source` must be a torch model, a mapping of weight matrices, a recording "
        f"path or a DataTree; got {type(source).__name__}."
    )
