"""The numpy part of the concept analysis: from edge contributions to concepts and scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from scipy import stats

from netphys._validation import check_choice, check_int
from netphys.population.paths._concepts import (
    class_path_overlap,
    concept_activity,
    concept_selectivity,
    edge_matrix,
    path_classifier_agreement,
    path_concepts,
    path_matrix,
    unit_matrix,
)
from netphys.population.paths._flows import flow_kernel, path_flow, path_transitions, top_paths

__all__ = ["concept_analysis", "concept_summary", "unit_baseline"]


def concept_analysis(
    contributions: xr.Dataset,
    *,
    labels: Any = None,
    seed: str = "activity",
    k: int = 64,
    theta: float = 0.9,
    min_support: int = 5,
    distance_threshold: float = 0.7,
    unit: str = "path",
    method: str = "beam",
    n_permutations: int = 1000,
    kernel: bool = False,
    rng: Any = 0,
) -> xr.DataTree:
    """Run the whole path and concept analysis on a model's edge contributions.

    This is the numpy part of :func:`netphys.experiments.concept_analysis`, which computes
    the contributions of a torch model first (:func:`netphys.recorder.edge_contributions`).

    Parameters
    ----------
    contributions : xarray.Dataset
        Edge contributions per sample (output of :func:`netphys.recorder.edge_contributions`).
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
    kernel : bool, default=False
        Also compute the exact flow kernel (sample x sample; O(T^2), up to ~2000 samples).
    rng : int, Generator or None, default=0
        Randomness of the permutations and embeddings.

    Returns
    -------
    xarray.DataTree
        Root: per-sample ``n_eff``, ``coverage``, ``lost_mass``, ``certified``,
        ``npf_active_fraction``, ``logits``, ``prediction`` (and ``label``, ``flow_kernel``).
        Children ``flow``, ``top``, ``matrix``, ``concepts``, ``activity`` and, with labels,
        ``selectivity`` and ``overlap`` (see :func:`netphys.experiments.concept_analysis`).
    """
    func = "concept_analysis"
    unit = check_choice(unit, ("path", "edge"), func=func, name="unit")
    k = check_int(k, func=func, name="k", minimum=1)
    contrib = contributions
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
    >>> from netphys.experiments import concept_analysis
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


def unit_baseline(
    contrib: xr.Dataset, y: np.ndarray, n_permutations: int, rng: int
) -> dict[str, Any]:
    """Cluster the node x sample activity like paths: the unit-level baseline of a concept analysis.

    Parameters
    ----------
    contrib : xarray.Dataset
        Edge contributions (their ``activity_<layer>`` node activity is used).
    y : numpy.ndarray
        Category per sample.
    n_permutations : int
        Label shuffles of the selectivity p-values.
    rng : int
        Seed of the clustering and permutations.

    Returns
    -------
    dict
        ``n_units``, ``n_concepts``, ``nmi``, ``purity``.
    """
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
