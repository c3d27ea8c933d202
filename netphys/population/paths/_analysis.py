"""The numpy part of the concept analysis: from edge contributions to concepts and scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from scipy import stats

from netphys._validation import check_choice, check_int, check_labels, renamed_argument
from netphys.population.paths._clustering import concept_activity, path_concepts
from netphys.population.paths._flows import flow_kernel, path_flow
from netphys.population.paths._layers import (
    as_tree,
    layer_names,
    portable_strings,
    samples,
    values,
)
from netphys.population.paths._matrices import edge_matrix, path_matrix, unit_matrix
from netphys.population.paths._scores import (
    class_path_overlap,
    concept_selectivity,
    path_classifier_agreement,
)
from netphys.population.paths._top import top_paths
from netphys.population.paths._transitions import path_transitions

__all__ = ["concept_analysis", "concept_summary", "unit_baseline"]

_ROOT_FLOW = ("n_eff", "lost_mass", "npf_active_fraction")


def _flow_node(flow: xr.DataTree, tr: xr.DataTree, y: np.ndarray | None) -> xr.DataTree:
    """Build the ``flow`` child: per layer marginals, edge flows, inhibitory shares, class flows."""
    root = xr.Dataset(attrs=dict(flow.attrs))
    cats = np.unique(y) if y is not None else None
    if cats is not None:
        root = root.assign_coords(category=cats)
    nodes: dict[str, Any] = {"/": root}
    for li, name in enumerate(layer_names(flow)):
        ds = flow[name].to_dataset(inherit=False)  # type: ignore[call-arg]
        if li > 0:
            ds["inhibitory_share"] = tr[name]["inhibitory_share"].variable
            if cats is not None:
                e = values(flow, li, "edge_flow")
                ds["class_edge_flow"] = (
                    ("category", "node", "pre"),
                    np.stack([e[y == c].sum(0) for c in cats]),
                )
        nodes[name] = ds
    return xr.DataTree.from_dict(nodes)


def _root(
    contrib: xr.DataTree, flow: xr.DataTree, top: xr.Dataset, tr: xr.DataTree, kernel: bool
) -> dict[str, Any]:
    root: dict[str, Any] = {key: flow[key].variable for key in _ROOT_FLOW}
    root.update(coverage=top["coverage"].variable, certified=top["certified"].variable,
                k_theta=top["k_theta"].variable, n_paths=flow["n_paths"].variable)  # fmt: skip
    if "logits" in contrib:
        root["logits"] = contrib.ds["logits"].variable
        root["prediction"] = ("sample", np.asarray(contrib.ds["logits"].values).argmax(1))
    if kernel:
        root["flow_kernel"] = flow_kernel(tr)
    return root


def concept_analysis(
    contributions: xr.DataTree,
    *,
    labels: Any = None,
    flow_seed: str = "activity",
    k: int = 64,
    theta: float = 0.9,
    min_support: int = 5,
    distance_threshold: float = 0.7,
    rows: str = "path",
    method: str = "beam",
    n_permutations: int = 1000,
    kernel: bool = False,
    rng: Any = 0,
    seed: str | None = None,
    unit: str | None = None,
) -> xr.DataTree:
    """Run the whole path and concept analysis on a model's edge contributions.

    This is the numpy part of :func:`netphys.experiments.concept_analysis`, which computes
    the contributions of a torch model first (:func:`netphys.recorder.edge_contributions`).

    Parameters
    ----------
    contributions : xarray.DataTree
        Edge contributions per sample (output of :func:`netphys.recorder.edge_contributions`).
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
    kernel : bool, default=False
        Also compute the exact flow kernel (sample x sample; O(T^2), up to ~2000 samples).
    rng : int, Generator or None, default=0
        Randomness of the permutations and embeddings.
    seed, unit : str, optional
        Deprecated names of ``flow_seed`` and ``rows``.

    Returns
    -------
    xarray.DataTree
        Root: per-sample ``n_eff``, ``coverage``, ``lost_mass``, ``certified``, ``k_theta``,
        ``npf_active_fraction``, ``logits``, ``prediction`` (and ``label``, ``flow_kernel``),
        0-d ``n_paths``. Children ``flow`` (one child per layer: ``marginal``, ``edge_flow``,
        ``inhibitory_share`` and, with labels, ``class_edge_flow`` (category, node, pre)),
        ``top``, ``matrix``, ``concepts``, ``activity`` and, with labels, ``selectivity`` and
        ``overlap`` (see :func:`netphys.experiments.concept_analysis`).

    Examples
    --------
    >>> from netphys.population.paths._synthetic import relu_mlp_contributions
    >>> tree = concept_analysis(relu_mlp_contributions(n_samples=40), k=8, min_support=2)
    >>> sorted(tree.children)
    ['activity', 'concepts', 'flow', 'matrix', 'top']
    >>> tree["flow"]["layer_1"]["edge_flow"].dims
    ('sample', 'node', 'pre')
    """
    func = "concept_analysis"
    flow_seed = renamed_argument(flow_seed, seed, func=func, new="flow_seed", old="seed",
                                 default="activity")  # fmt: skip
    rows = renamed_argument(rows, unit, func=func, new="rows", old="unit", default="path")
    rows = check_choice(rows, ("path", "edge"), func=func, name="rows")
    k = check_int(k, func=func, name="k", minimum=1)
    contrib = as_tree(contributions, func)
    n = len(samples(contrib))
    y = None if labels is None else check_labels(labels, n, func=func)
    tr = path_transitions(contrib, flow_seed=flow_seed, labels=y)
    flow = path_flow(tr)
    top = top_paths(tr, k=k, theta=theta, method=method, beam_width=max(1024, k))
    mat = (
        path_matrix(top, min_support=min_support)
        if rows == "path"
        else edge_matrix(flow, min_support=min_support)
    )
    con = path_concepts(mat, distance_threshold=distance_threshold, rng=rng)
    act = concept_activity(mat, con)
    root = _root(contrib, flow, top, tr, kernel)
    nodes: dict[str, Any] = {
        "flow": _flow_node(flow, tr, y),
        "top": top.drop_vars(["coverage", "certified", "k_theta"]),
        "matrix": mat.drop_vars([v for v in ("coverage", "certified") if v in mat]),
        "concepts": con,
        "activity": act.to_dataset(name="concept_activity"),
    }
    if y is not None:
        root["label"] = ("sample", y)
        nodes["selectivity"] = concept_selectivity(act, y, n_permutations=n_permutations, rng=rng)
        nodes["overlap"] = class_path_overlap(mat, y)
    root_ds = xr.Dataset(root, coords={"sample": samples(contrib)})
    root_ds.attrs = {
        "layers": list(contrib.attrs["layers"]),
        "methods": list(contrib.attrs["methods"]),
        "flow_seed": flow_seed, "k": k, "theta": float(theta), "rows": rows,
        "min_support": int(mat.attrs["min_support"]),
        "distance_threshold": float(distance_threshold),
        "residual_fraction": [float(v) for v in contrib.ds["residual_fraction"].values],
    }  # fmt: skip
    tree = xr.DataTree.from_dict({"/": root_ds, **{f"/{key}": ds for key, ds in nodes.items()}})
    return portable_strings(tree)  # text coords as variable-length strings: portable Zarr v3


def _softmax_confusion(logits: np.ndarray, y: np.ndarray, cats: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    conf = np.stack([p[y == c].mean(0) for c in cats])
    return np.asarray((conf + conf.T) / 2)


def _label_summary(tree: xr.DataTree, root: xr.Dataset) -> dict[str, Any]:
    """Collect the selectivity, purity and class-overlap numbers of a labelled analysis."""
    sel = tree["selectivity"].to_dataset()
    ov = tree["overlap"].to_dataset()
    out: dict[str, Any] = {
        "nmi": float(sel["nmi"].values),
        "ari": float(sel["ari"].values),
        "purity": float(sel["purity_global"].values),
        "n_selective": int((sel["p_value"].values < 0.01).sum()),
    }
    if "logits" in root:
        cats = ov["category"].values
        conf = _softmax_confusion(root["logits"].values, root["label"].values, cats)
        iu = np.triu_indices(len(cats), 1)
        for key in ("jaccard", "weighted_jaccard"):
            res = stats.spearmanr(ov[key].values[iu], conf[iu])
            rho, p = float(res.statistic), float(res.pvalue)
            out[f"{key}_rho"] = rho if np.isfinite(rho) else 0.0
            out[f"{key}_p"] = p if np.isfinite(p) else 1.0
        out["path_classifier_agreement"] = path_classifier_agreement(ov, root["prediction"].values)
    return out


def concept_summary(tree: xr.DataTree) -> dict[str, Any]:
    """Collect the headline numbers of a :func:`concept_analysis` result (JSON-safe).

    Parameters
    ----------
    tree : xarray.DataTree
        Output of :func:`concept_analysis` (numpy or torch level).

    Returns
    -------
    dict
        ``n_eff_median``, ``n_paths``, ``coverage_median``, ``certified_fraction``,
        ``n_vocabulary``, ``n_concepts``, ``npf_active_fraction_median``,
        ``kept_mass_fraction`` (path rows), and with labels ``nmi``, ``ari``, ``purity``,
        ``n_selective`` (p < 0.01), ``jaccard_rho`` / ``jaccard_p`` (binary class Jaccard vs
        symmetrised softmax confusion, Spearman over class pairs), ``weighted_jaccard_rho`` /
        ``weighted_jaccard_p``, ``path_classifier_agreement``.

    Examples
    --------
    >>> from netphys.population.paths._synthetic import relu_mlp_contributions
    >>> tree = concept_analysis(relu_mlp_contributions(n_samples=40), k=8, min_support=2)
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
        out.update(_label_summary(tree, root))
    return out


def unit_baseline(
    contributions: xr.DataTree, labels: Any, n_permutations: int = 1000, rng: Any = 0
) -> dict[str, Any]:
    """Cluster the node x sample activity like paths: the unit-level baseline of a concept analysis.

    Parameters
    ----------
    contributions : xarray.DataTree
        Edge contributions (the ``activity`` of every layer is used).
    labels : array-like
        Category per sample.
    n_permutations : int, default=1000
        Label shuffles of the selectivity p-values.
    rng : int, Generator or None, default=0
        Seed of the clustering and permutations.

    Returns
    -------
    dict
        ``n_units``, ``n_concepts``, ``nmi``, ``purity``.

    Examples
    --------
    >>> import numpy as np
    >>> from netphys.population.paths._synthetic import relu_mlp_contributions
    >>> c = relu_mlp_contributions(n_samples=30)
    >>> sorted(unit_baseline(c, np.arange(30) % 2, n_permutations=10))
    ['n_concepts', 'n_units', 'nmi', 'purity']
    """
    func = "unit_baseline"
    contrib = as_tree(contributions, func)
    act = np.concatenate(
        [values(contrib, li, "activity") for li in range(len(layer_names(contrib)))], axis=1
    )
    y = check_labels(labels, act.shape[0], func=func)
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
