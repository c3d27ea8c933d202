"""``netphys.anatomy``: weight spectra of a model, of per-session weights, or of a recording."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from netphys.population._sparseness import sparseness_summary
from netphys.population._weights import TW1_Q99, weight_spectra

__all__ = ["anatomy", "anatomy_report"]


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


_SPARSE_KEYS = ("population_sparseness", "fraction_active", "lifetime_sparseness",
                "lifetime_kurtosis", "n_silent_units")  # fmt: skip
_WEIGHT_KEYS = ("alpha", "xmin", "n_tail", "n_spikes", "stable_rank", "mp_edge", "lambda_max")


def anatomy_report(
    activity: xr.DataArray | None,
    weights: Mapping[int, Mapping[str, Any]] | None,
    out_dir: str | os.PathLike[str],
    *,
    prefix: str = "",
) -> dict[str, Any]:
    """Sparseness and weight spectra per session: two figures and JSON-safe numbers.

    The section of the demo and continual reports on the code's sparseness and the circuit's
    anatomy, usable on its own.

    Parameters
    ----------
    activity : xarray.DataArray or None
        (time, unit) activity with coords ``session`` and ``condition`` along time and
        ``layer`` along unit (:func:`netphys.layer_activity`); sparseness uses the
        ``condition == "stimulus"`` frames. None: skip sparseness.
    weights : mapping or None
        ``{session: {layer: 2-D weight matrix}}``, e.g. collected with
        :func:`netphys.recorder.layer_weights` after every epoch. None: skip weight spectra.
    out_dir : path-like
        Folder for ``<prefix>anatomy_sessions.png``, ``<prefix>weight_spectra.png`` and
        ``<prefix>weight_spectra.zarr`` (the :func:`netphys.population.weight_spectra`
        Dataset, eigenvalues included; ``xarray.open_zarr`` opens it).
    prefix : str, default=""
        File-name prefix (e.g. a method name).

    Returns
    -------
    dict
        ``sparseness`` and ``weights``: ``{session: {layer: numbers}}`` (sparseness:
        population and lifetime sparseness, fraction active, lifetime kurtosis, silent units;
        weights: alpha, xmin, n_tail, n_spikes, stable_rank, mp_edge, lambda_max), and
        ``figures`` (``{"weight_spectra": file name, "anatomy_sessions": file name}``) and
        ``weight_spectra_store`` (the Zarr store's name) when ``weights`` is given. NaN stays NaN: write with
        :func:`netphys.experiments.write_json` (NaN -> null).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> w = {s: {"fc": rng.standard_normal((40, 20))} for s in (0, 1)}
    >>> sorted(anatomy_report(None, w, tempfile.mkdtemp())["weights"]["1"]["fc"])[:3]
    ['alpha', 'lambda_max', 'mp_edge']
    """
    from netphys.experiments._common import save_figure
    from netphys.plot import plot_anatomy_sessions, plot_weight_spectra

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"sparseness": {}, "weights": {}, "figures": {}}
    sp = wt = None
    if activity is not None:
        sp = sparseness_summary(activity, by=("session", "layer"), condition="stimulus")
        result["sparseness"] = _rows(sp, _SPARSE_KEYS)
    if weights:
        wt = weight_spectra(dict(weights))
        result["weights"] = _rows(wt, _WEIGHT_KEYS)
        # the full spectra (ESD per layer and session) beside the report, plain Zarr v3
        store = f"{prefix}weight_spectra.zarr"
        wt.assign_coords(layer=wt["layer"].values.astype(object)).to_zarr(
            out / store, mode="w", consolidated=False
        )
        result["weight_spectra_store"] = store
        name = f"{prefix}weight_spectra.png"
        result["figures"]["weight_spectra"] = save_figure(plot_weight_spectra(wt), out / name)
    if sp is not None:
        name = f"{prefix}anatomy_sessions.png"
        fig = plot_anatomy_sessions(sp, wt)
        result["figures"]["anatomy_sessions"] = save_figure(fig, out / name)
    return result


def _rows(ds: xr.Dataset, keys: Sequence[str]) -> dict[str, Any]:
    return {
        str(s): {
            str(layer): {k: ds[k].sel(session=s, layer=layer).item() for k in keys}
            for layer in ds["layer"].values
        }
        for s in ds["session"].values
    }


def session_means(report: Mapping[str, Any], session: Any) -> dict[str, float]:
    """Mean over layers of one session's sparseness and (fitted) weight exponents."""
    out: dict[str, float] = {}
    sp = report.get("sparseness", {}).get(str(session), {})
    for key in ("population_sparseness", "fraction_active"):
        vals = [v[key] for v in sp.values() if np.isfinite(v[key])]
        out[key] = float(np.mean(vals)) if vals else float("nan")
    wt = report.get("weights", {}).get(str(session), {})
    alphas = [v["alpha"] for v in wt.values() if np.isfinite(v["alpha"])]
    out["weight_alpha"] = float(np.mean(alphas)) if alphas else float("nan")
    out["weight_n_spikes"] = float(sum(v["n_spikes"] for v in wt.values())) if wt else float("nan")
    return out
