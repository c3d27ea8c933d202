"""Entry points of the concept analysis on a torch model, and its section of the demo report.

Torch work (edge contributions) happens here and in :mod:`netphys.recorder.graph`; all the
analysis is delegated to :mod:`netphys.population.paths`.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from netphys._validation import check_choice, check_int, renamed_argument
from netphys.plot import plot_concept_selectivity, plot_path_embedding, plot_path_raster
from netphys.population.paths import concept_analysis as _contribution_analysis
from netphys.population.paths import (
    concept_summary,
    path_embedding,
    selectivity_vs_reference,
    unit_baseline,
)
from netphys.recorder import edge_contributions

__all__ = ["concept_analysis", "concept_report", "reinitialised"]


def concept_analysis(
    model: nn.Module,
    inputs: Any,
    *,
    layers: list[str],
    labels: Any = None,
    flow_seed: str = "activity",
    k: int = 64,
    theta: float = 0.9,
    min_support: int = 5,
    distance_threshold: float = 0.7,
    rows: str = "path",
    method: str = "beam",
    n_permutations: int = 1000,
    batch_size: int = 128,
    allow_approximate: bool = False,
    kernel: bool = False,
    progress: bool = True,
    rng: Any = 0,
    seed: str | None = None,
    unit: str | None = None,
) -> xr.DataTree:
    """Run the whole path and concept analysis of a model on some inputs.

    Parameters
    ----------
    model : torch.nn.Module
        Network in eval mode (runs on its own device; not modified).
    inputs : torch.Tensor or numpy.ndarray
        Stimuli, first dim = samples.
    layers : list of str
        Recorded post-activation module names, in forward order.
    labels : array-like of int, optional
        Category per sample; enables selectivity, purity, NMI/ARI, class overlap.
    flow_seed : {'activity', 'pred', 'label', 'prob'}, default='activity'
        Where the flow starts (see :func:`netphys.population.paths.path_transitions`).
    k : int, default=64
        Top-K paths per sample.
    theta : float, default=0.9
        Flow share of each sample's selected paths.
    min_support : int, default=5
        Minimal number of samples a path is selected in.
    distance_threshold : float, default=0.7
        Concept cut tau_c on 1 - correlation.
    rows : {'path', 'edge'}, default='path'
        Rows of the concept matrix: selected paths, or exact edge flows (for diffuse flow).
    method : {'beam', 'exact'}, default='beam'
        Top-K search.
    n_permutations : int, default=1000
        Label shuffles of the selectivity p-values.
    batch_size : int, default=128
        Samples per forward pass.
    allow_approximate : bool, default=False
        Passed to :func:`netphys.recorder.graph.edge_contributions`.
    kernel : bool, default=False
        Also compute the exact flow kernel (sample x sample; O(T^2), up to ~2000 samples).
    progress : bool, default=True
        tqdm progress bar over batches.
    rng : int, Generator or None, default=0
        Randomness of the permutations and embeddings.
    seed, unit : str, optional
        Deprecated names of ``flow_seed`` and ``rows``.

    Returns
    -------
    xarray.DataTree
        Root: per-sample ``n_eff``, ``coverage``, ``lost_mass``, ``certified``, ``k_theta``,
        ``npf_active_fraction``, ``logits``, ``prediction`` (and ``label``, ``flow_kernel``).
        Children ``flow`` (one child per layer, ``layer_0`` ...: node ``marginal``,
        ``edge_flow`` (sample, node, pre), ``inhibitory_share``, and with labels
        ``class_edge_flow`` (category, node, pre), the edge flows summed per class), ``top``
        (top-K paths), ``matrix`` (sparse path x sample, COO), ``concepts``, ``activity``
        (concept x sample), and with labels ``selectivity`` and ``overlap``. Text coords
        (layer names, string labels) are variable-length strings, so
        ``tree.to_zarr(path, consolidated=False)`` writes plain, portable Zarr v3.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(),
    ...                           torch.nn.Linear(6, 5), torch.nn.ReLU(),
    ...                           torch.nn.Linear(5, 2)).eval()
    >>> tree = concept_analysis(net, torch.randn(40, 4), layers=["1", "3"], k=8,
    ...                         min_support=2, progress=False)
    >>> tree["top"]["nodes"].shape
    (40, 8, 2)
    """
    func = "concept_analysis"
    flow_seed = renamed_argument(flow_seed, seed, func=func, new="flow_seed", old="seed",
                                 default="activity")  # fmt: skip
    rows = renamed_argument(rows, unit, func=func, new="rows", old="unit", default="path")
    rows = check_choice(rows, ("path", "edge"), func=func, name="rows")
    k = check_int(k, func=func, name="k", minimum=1)
    contrib = edge_contributions(
        model, inputs, layers=layers, batch_size=batch_size,
        allow_approximate=allow_approximate, progress=progress,
    )  # fmt: skip
    return _contribution_analysis(
        contrib, labels=labels, flow_seed=flow_seed, k=k, theta=theta, min_support=min_support,
        distance_threshold=distance_threshold, rows=rows, method=method,
        n_permutations=n_permutations, rng=rng, kernel=kernel,
    )  # fmt: skip


def reinitialised(model: nn.Module, *, torch_seed: int = 0) -> nn.Module:
    """Return a copy of ``model`` with re-initialised weights (the untrained control).

    Every submodule with ``reset_parameters`` is reset under ``torch.manual_seed(torch_seed)``
    (the global torch RNG state is restored afterwards); BatchNorm running statistics go back
    to mean 0, variance 1. The copy is in eval mode.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Linear(3, 2)
    >>> bool((reinitialised(net).weight != net.weight).any())
    True
    """
    ctrl = copy.deepcopy(model)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(torch_seed)
        for m in ctrl.modules():
            for method in ("reset_parameters", "reset_running_stats"):
                fn = getattr(m, method, None)
                if callable(fn):
                    fn()
    finally:
        torch.random.set_rng_state(state)
    return ctrl.eval()


#: Concepts are starred when more selective than all but this share of the control's concepts.
CONTROL_ALPHA = 0.05


def _control_significance(trees: dict[str, xr.DataTree]) -> dict[str, Any]:
    """P-values of both models' concepts against the untrained control's selectivity."""
    ref = trees["untrained"]["selectivity"].to_dataset()
    out: dict[str, Any] = {"alpha": CONTROL_ALPHA, "test": "max SI vs untrained control"}
    for name, tree in trees.items():
        sel = tree["selectivity"].to_dataset()
        if sel.sizes.get("concept", 0) == 0 or ref.sizes.get("concept", 0) == 0:
            out[name] = None
            continue
        p = selectivity_vs_reference(sel, ref, same=name == "untrained")
        tree["selectivity"]["p_value_vs_control"] = p
        out[name] = {
            "n_concepts": int(p.size),
            "n_significant": int((p.values < CONTROL_ALPHA).sum()),
            "n_significant_label_permutation": int((sel["p_value"].values < 0.01).sum()),
        }
    return out


def _concept_figures(
    name: str,
    tree: xr.DataTree,
    y: np.ndarray,
    out_dir: str | os.PathLike[str],
    seed: int,
    layers: list[str],
) -> list[str]:
    """Raster, embedding and selectivity figures of one model's concepts; return file names."""
    mat, con = tree["matrix"].to_dataset(), tree["concepts"].to_dataset()
    if mat.sizes.get("path", 0) < 2:
        return []
    sel = tree["selectivity"].to_dataset()
    emb = path_embedding(mat, n_clusters=30, rng=seed)  # 100 clusters: ~70 s
    who = "trained model" if name == "trained" else "untrained control (re-initialised copy)"
    p = sel.get("p_value_vs_control")
    test = "vs untrained control" if p is not None else "label permutation"
    alpha = CONTROL_ALPHA if p is not None else 0.01
    figs = {
        f"concepts_{name}_raster.png": (
            plot_path_raster(mat, emb, labels=y, concepts=con),
            f"{who}: path x digit flow raster (held-out digits, layers {', '.join(layers)})",
        ),
        f"concepts_{name}_embedding.png": (
            plot_path_embedding(emb, labels=y, concepts=con),
            f"{who}: digits and paths in the first two flow components",
        ),
        f"concepts_{name}_selectivity.png": (
            plot_concept_selectivity(sel, p_values=p, test=test, alpha=alpha),
            f"{who}: concept selectivity per digit",
        ),
    }
    for fname, (fig, title) in figs.items():
        fig.suptitle(title, fontsize=10)
        fig.savefig(os.path.join(out_dir, fname), dpi=80)
    return list(figs)


def concept_report(
    model: nn.Module,
    inputs: Any,
    labels: Any,
    *,
    layers: list[str],
    out_dir: str | os.PathLike[str],
    rng: Any = 0,
    k: int = 64,
    theta: float = 0.9,
    n_permutations: int = 1000,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the concept section of the demo report: trained model beside its re-initialised copy.

    Parameters
    ----------
    model : torch.nn.Module
        The trained network (eval mode).
    inputs : torch.Tensor or numpy.ndarray
        Stimuli (e.g. the held-out digits).
    labels : array-like of int
        Category per sample.
    layers : list of str
        Recorded post-activation modules, in forward order.
    out_dir : path-like
        Folder for the PNGs (created if missing).
    rng : int, default=0
        Seed of the analysis and of the control's re-initialisation (torch seed).
    k, theta, n_permutations : int, float, int, default=64, 0.9, 1000
        Analysis settings (flow_seed='activity', tau_c=0.7, support >= 5).
    progress : bool, default=False
        Progress bars.

    Returns
    -------
    dict
        JSON-safe: ``trained`` and ``untrained`` summaries (see :func:`concept_summary`),
        ``edge_level`` summaries when the median coverage is below 0.3 (concepts of exact
        edge flows instead of the top paths: a second concept set, used when the top paths
        carry too little of the flow), ``significance`` (concepts of each model more
        selective than the untrained control's, p < 0.05), ``unit_baseline``
        (the same clustering on node activity: NMI, purity), ``delta`` (trained -
        untrained NMI and purity), ``figures`` (file names), ``settings``.

    Examples
    --------
    >>> import tempfile, torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(),
    ...                           torch.nn.Linear(6, 5), torch.nn.ReLU(),
    ...                           torch.nn.Linear(5, 2)).eval()
    >>> x = torch.randn(60, 4)
    >>> res = concept_report(net, x, (x[:, 0] > 0).long().numpy(), layers=["1", "3"],
    ...                      out_dir=tempfile.mkdtemp(), k=8, n_permutations=20)
    >>> sorted(res)  # doctest: +NORMALIZE_WHITESPACE
    ['delta', 'edge_level', 'figures', 'settings', 'significance', 'trained', 'unit_baseline',
     'untrained']
    """
    seed_int = int(rng) if isinstance(rng, (int, np.integer)) else 0
    os.makedirs(out_dir, exist_ok=True)
    y = np.asarray(labels)
    control = reinitialised(model, torch_seed=seed_int)
    kw: dict[str, Any] = {
        "labels": y, "flow_seed": "activity", "k": k, "theta": theta, "min_support": 5, "distance_threshold": 0.7,
        "method": "beam", "n_permutations": n_permutations, "rng": seed_int,
    }  # fmt: skip
    result: dict[str, Any] = {"figures": [], "edge_level": {}, "unit_baseline": {}}
    trees = {}
    for name, net in (("trained", model), ("untrained", control)):
        contrib = edge_contributions(net, inputs, layers=layers, progress=progress)
        tree = _contribution_analysis(contrib, rows="path", **kw)
        trees[name] = tree
        result[name] = concept_summary(tree)
        if result[name]["coverage_median"] < 0.3:  # diffuse flow: also the edge-level variant
            edge = _contribution_analysis(contrib, rows="edge", **kw)
            result["edge_level"][name] = concept_summary(edge)
        result["unit_baseline"][name] = unit_baseline(
            contrib, y, n_permutations=n_permutations, rng=seed_int
        )
    result["significance"] = _control_significance(trees)
    for name, tree in trees.items():
        result["figures"] += _concept_figures(name, tree, y, out_dir, seed_int, list(layers))
    t, u = result["trained"], result["untrained"]
    result["delta"] = {
        key: t.get(key, 0.0) - u.get(key, 0.0)
        for key in ("nmi", "purity", "weighted_jaccard_rho", "jaccard_rho", "n_eff_median")
    }
    result["settings"] = {
        "layers": list(layers), "flow_seed": "activity", "k": k, "theta": float(theta),
        "distance_threshold": 0.7, "min_support": 5, "n_permutations": n_permutations,
        "control": f"re-initialised copy (reset_parameters, torch seed {seed_int})",
    }  # fmt: skip
    return result
