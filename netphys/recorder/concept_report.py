"""Entry points of the concept analysis on a torch model, and its section of the demo report.

Torch work (edge contributions) happens here and in :mod:`netphys.recorder.graph`; all the
analysis is delegated to :mod:`netphys.population.paths` and :mod:`netphys.population.concepts`.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import numpy as np
import torch
import xarray as xr
from scipy import stats
from torch import nn

from netphys._validation import check_choice, check_int
from netphys.population.concept_plots import (
    plot_concept_selectivity,
    plot_path_embedding,
    plot_path_raster,
)
from netphys.population.concepts import (
    class_path_overlap,
    concept_activity,
    concept_selectivity,
    edge_matrix,
    path_classifier_agreement,
    path_concepts,
    path_embedding,
    path_matrix,
    unit_matrix,
)
from netphys.population.paths import flow_kernel, path_flow, path_transitions, top_paths
from netphys.recorder.graph import edge_contributions

__all__ = ["concept_analysis", "concept_report", "concept_summary", "reinitialised"]


def concept_analysis(
    model: nn.Module,
    inputs: Any,
    *,
    layers: list[str],
    labels: Any = None,
    seed: str = "activity",
    k: int = 64,
    theta: float = 0.9,
    min_support: int = 5,
    distance_threshold: float = 0.7,
    unit: str = "path",
    method: str = "beam",
    n_permutations: int = 1000,
    batch_size: int = 128,
    allow_approximate: bool = False,
    kernel: bool = False,
    progress: bool = True,
    rng: Any = 0,
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
    seed : {'activity', 'pred', 'label', 'prob'}, default='activity'
        Flow seed (see :func:`netphys.population.paths.path_transitions`).
    k, theta : int, float, default=64, 0.9
        Top-K paths per sample and the flow share selected.
    min_support : int, default=5
        Minimal number of samples a path is selected in.
    distance_threshold : float, default=0.7
        Concept cut tau_c on 1 - correlation.
    unit : {'path', 'edge'}, default='path'
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

    Returns
    -------
    xarray.DataTree
        Root: per-sample ``n_eff``, ``coverage``, ``lost_mass``, ``certified``,
        ``npf_active_fraction``, ``logits``, ``prediction`` (and ``label``, ``flow_kernel``).
        Children ``flow`` (node marginals, edge flows, inhibitory shares, and with labels the
        edge flows summed per class), ``top`` (top-K paths), ``matrix`` (sparse
        path x sample, COO), ``concepts``, ``activity`` (concept x sample), and with labels
        ``selectivity`` and ``overlap``. Save with ``tree.to_zarr(path)``.

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
    unit = check_choice(unit, ("path", "edge"), func=func, name="unit")
    k = check_int(k, func=func, name="k", minimum=1)
    contrib = edge_contributions(
        model, inputs, layers=layers, batch_size=batch_size,
        allow_approximate=allow_approximate, progress=progress,
    )  # fmt: skip
    return _analyse(
        contrib, labels=labels, seed=seed, k=k, theta=theta, min_support=min_support,
        distance_threshold=distance_threshold, unit=unit, method=method,
        n_permutations=n_permutations, rng=rng, kernel=kernel,
    )  # fmt: skip


def _analyse(
    contrib: xr.Dataset,
    *,
    labels: Any,
    seed: str,
    k: int,
    theta: float,
    min_support: int,
    distance_threshold: float,
    unit: str,
    method: str,
    n_permutations: int,
    rng: Any,
    kernel: bool = False,
) -> xr.DataTree:
    """The numpy part of :func:`concept_analysis`, from edge contributions."""
    func = "concept_analysis"
    layers = list(contrib.attrs["layers"])
    n = contrib.sizes["sample"]
    y = None
    if labels is not None:
        y = np.asarray(labels)
        if y.ndim != 1 or y.shape[0] != n:
            raise ValueError(
                f"{func}(): `labels` must have one entry per sample ({n}); got shape {y.shape}. "
                "Pass the labels of the same inputs, in order."
            )
    tr = path_transitions(contrib, seed=seed, labels=y)
    flow = path_flow(tr)
    top = top_paths(tr, k=k, theta=theta, method=method, beam_width=max(1024, k))
    if unit == "path":
        mat = path_matrix(top, min_support=min_support)
    else:
        mat = edge_matrix(flow, min_support=min_support)
    con = path_concepts(mat, distance_threshold=distance_threshold, rng=rng)
    act = concept_activity(mat, con)
    root: dict[str, Any] = {
        "n_eff": flow["n_eff"],
        "lost_mass": flow["lost_mass"],
        "npf_active_fraction": flow["npf_active_fraction"],
        "coverage": top["coverage"],
        "certified": top["certified"],
        "k_theta": top["k_theta"],
        "n_paths": flow["n_paths"],
    }
    if "logits" in contrib:
        root["logits"] = contrib["logits"]
        root["prediction"] = ("sample", contrib["logits"].values.argmax(1))
    if kernel:
        root["flow_kernel"] = flow_kernel(tr)
    flow_node = flow.drop_vars(["n_eff", "lost_mass", "npf_active_fraction", "entropy", "n_paths"])
    for li in range(1, len(layers)):
        flow_node[f"inhibitory_share_{li}"] = tr[f"inhibitory_share_{li}"]
    if y is not None:
        cats = np.unique(y)
        flow_node = flow_node.assign_coords(category=cats)
        for li in range(1, len(layers)):
            e = flow[f"edge_flow_{li}"].values
            flow_node[f"class_edge_flow_{li}"] = (
                ("category", f"node_{li}", f"node_{li - 1}"),
                np.stack([e[y == c].sum(0) for c in cats]),
            )
    nodes: dict[str, xr.Dataset] = {
        "flow": flow_node,
        "top": top.drop_vars(["coverage", "certified", "k_theta"]),
        "matrix": mat.drop_vars([v for v in ("coverage", "certified") if v in mat]),
        "concepts": con,
        "activity": act.to_dataset(name="concept_activity"),
    }
    if y is not None:
        root["label"] = ("sample", y)
        sel = concept_selectivity(act, y, n_permutations=n_permutations, rng=rng)
        nodes["selectivity"] = sel
        nodes["overlap"] = class_path_overlap(mat, y)
    root_ds = xr.Dataset(root, coords={"sample": contrib["sample"].values})
    root_ds.attrs = {
        "layers": list(layers),
        "methods": list(contrib.attrs["methods"]),
        "seed": seed,
        "k": k,
        "theta": float(theta),
        "unit": unit,
        "min_support": int(mat.attrs["min_support"]),
        "distance_threshold": float(distance_threshold),
        "residual_fraction": [float(v) for v in contrib["residual_fraction"].values],
    }
    tree = xr.DataTree.from_dict({"/": root_ds, **{f"/{key}": ds for key, ds in nodes.items()}})
    return tree


def _softmax_confusion(logits: np.ndarray, y: np.ndarray, cats: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    conf = np.stack([p[y == c].mean(0) for c in cats])
    return np.asarray((conf + conf.T) / 2)


def concept_summary(tree: xr.DataTree) -> dict[str, Any]:
    """Collect the headline numbers of a :func:`concept_analysis` result (JSON-safe).

    Returns
    -------
    dict
        ``n_eff_median``, ``n_paths``, ``coverage_median``, ``certified_fraction``,
        ``n_vocabulary``, ``n_concepts``, ``kept_mass_fraction``, and with labels ``nmi``,
        ``ari``, ``purity``, ``n_selective`` (p < 0.01), ``jaccard_rho`` / ``jaccard_p``
        (binary class Jaccard vs symmetrised softmax confusion, Spearman over class pairs),
        ``weighted_jaccard_rho`` / ``weighted_jaccard_p``, ``path_classifier_agreement``.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(),
    ...                           torch.nn.Linear(6, 5), torch.nn.ReLU(),
    ...                           torch.nn.Linear(5, 2)).eval()
    >>> tree = concept_analysis(net, torch.randn(40, 4), layers=["1", "3"], k=8,
    ...                         min_support=2, progress=False)
    >>> sorted(concept_summary(tree))[:2]
    ['certified_fraction', 'coverage_median']
    """
    root = tree.to_dataset()
    mat = tree["matrix"].to_dataset()
    out: dict[str, Any] = {
        "n_eff_median": float(np.median(root["n_eff"].values)),
        "n_paths": float(root["n_paths"].values),
        "coverage_median": float(np.median(root["coverage"].values)),
        "certified_fraction": float(root["certified"].values.mean()),
        "n_vocabulary": int(mat.sizes.get("path", 0)),
        "n_concepts": int(tree["concepts"].to_dataset()["n_concepts"].values),
        "npf_active_fraction_median": float(np.median(root["npf_active_fraction"].values)),
    }
    if "kept_mass_fraction" in mat:
        out["kept_mass_fraction"] = float(mat["kept_mass_fraction"].values)
    if "selectivity" in tree.children:
        sel = tree["selectivity"].to_dataset()
        ov = tree["overlap"].to_dataset()
        out.update(
            nmi=float(sel["nmi"].values),
            ari=float(sel["ari"].values),
            purity=float(sel["purity_global"].values),
            n_selective=int((sel["p_value"].values < 0.01).sum()),
        )
        if "logits" in root:
            y = root["label"].values
            cats = ov["category"].values
            conf = _softmax_confusion(root["logits"].values, y, cats)
            iu = np.triu_indices(len(cats), 1)
            for key, var in (("jaccard", "jaccard"), ("weighted_jaccard", "weighted_jaccard")):
                res = stats.spearmanr(ov[var].values[iu], conf[iu])
                rho, p = float(res.statistic), float(res.pvalue)
                out[f"{key}_rho"] = rho if np.isfinite(rho) else 0.0
                out[f"{key}_p"] = p if np.isfinite(p) else 1.0
            out["path_classifier_agreement"] = path_classifier_agreement(
                ov, root["prediction"].values
            )
    return out


def _unit_baseline(
    contrib: xr.Dataset, y: np.ndarray, n_permutations: int, rng: int
) -> dict[str, Any]:
    """Same clustering and metrics on the node x sample activity (the unit-level baseline)."""
    n_layers = len(contrib.attrs["layers"])
    act = np.concatenate([contrib[f"activity_{li}"].values for li in range(n_layers)], axis=1)
    mat = unit_matrix(act)
    if mat.sizes["path"] < 2:
        return {"n_units": int(mat.sizes["path"]), "n_concepts": 0, "nmi": 0.0, "purity": 0.0}
    con = path_concepts(mat, distance_threshold=0.7, rng=rng)
    sel = concept_selectivity(concept_activity(mat, con), y, n_permutations=n_permutations, rng=rng)
    return {
        "n_units": int(mat.sizes["path"]),
        "n_concepts": int(con["n_concepts"].values),
        "nmi": float(sel["nmi"].values),
        "purity": float(sel["purity_global"].values),
    }


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
        Analysis settings (seed='activity', tau_c=0.7, support >= 5).
    progress : bool, default=False
        Progress bars.

    Returns
    -------
    dict
        JSON-safe: ``trained`` and ``untrained`` summaries (see :func:`concept_summary`),
        ``edge_level`` summaries when the median coverage is below 0.3, ``unit_baseline``
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
    >>> sorted(res)
    ['delta', 'edge_level', 'figures', 'settings', 'trained', 'unit_baseline', 'untrained']
    """
    seed_int = int(rng) if isinstance(rng, (int, np.integer)) else 0
    os.makedirs(out_dir, exist_ok=True)
    y = np.asarray(labels)
    control = reinitialised(model, torch_seed=seed_int)
    kw: dict[str, Any] = {
        "labels": y, "seed": "activity", "k": k, "theta": theta, "min_support": 5, "distance_threshold": 0.7,
        "method": "beam", "n_permutations": n_permutations, "rng": seed_int,
    }  # fmt: skip
    result: dict[str, Any] = {"figures": [], "edge_level": {}, "unit_baseline": {}}
    trees = {}
    for name, net in (("trained", model), ("untrained", control)):
        contrib = edge_contributions(net, inputs, layers=layers, progress=progress)
        tree = _analyse(contrib, unit="path", **kw)
        trees[name] = tree
        result[name] = concept_summary(tree)
        if result[name]["coverage_median"] < 0.3:  # diffuse flow: also the edge-level variant
            edge = _analyse(contrib, unit="edge", **kw)
            result["edge_level"][name] = concept_summary(edge)
        result["unit_baseline"][name] = _unit_baseline(contrib, y, n_permutations, seed_int)
    for name, tree in trees.items():
        mat, con = tree["matrix"].to_dataset(), tree["concepts"].to_dataset()
        if mat.sizes.get("path", 0) < 2:
            continue
        emb = path_embedding(mat, n_clusters=30, rng=seed_int)  # 100 clusters: ~70 s
        figs = {
            f"concepts_{name}_raster.png": plot_path_raster(mat, emb, labels=y, concepts=con),
            f"concepts_{name}_embedding.png": plot_path_embedding(emb, labels=y, concepts=con),
            f"concepts_{name}_selectivity.png": plot_concept_selectivity(
                tree["selectivity"].to_dataset()
            ),
        }
        for fname, fig in figs.items():
            fig.savefig(os.path.join(out_dir, fname), dpi=100)
            result["figures"].append(fname)
    t, u = result["trained"], result["untrained"]
    result["delta"] = {
        key: t.get(key, 0.0) - u.get(key, 0.0)
        for key in ("nmi", "purity", "weighted_jaccard_rho", "jaccard_rho", "n_eff_median")
    }
    result["settings"] = {
        "layers": list(layers), "seed": "activity", "k": k, "theta": float(theta),
        "distance_threshold": 0.7, "min_support": 5, "n_permutations": n_permutations,
        "control": f"re-initialised copy (reset_parameters, torch seed {seed_int})",
    }  # fmt: skip
    return result
