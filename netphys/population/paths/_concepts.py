"""Concepts: clusters of computational paths that are active together across samples.

Takes the per-sample top paths of :func:`netphys.population.paths.top_paths` (or the exact
edge flows of :func:`netphys.population.paths.path_flow`), builds the sparse path x sample
matrix, clusters paths by their correlation across samples, and scores the clusters against
categories. Algorithm: ``reference/paths.md`` sections 3.4-3.6. Never imports torch.

Sparse matrices are carried inside xarray Datasets as COO arrays (``entry_path``,
``entry_sample``, ``entry_flow`` along dim ``entry``) so that every result saves with
``Dataset.to_zarr`` next to its recording; :func:`as_sparse` gives the scipy matrix back.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import xarray as xr

from netphys._validation import as_rng, check_choice, check_int

__all__ = [
    "as_sparse",
    "class_path_overlap",
    "concept_activity",
    "concept_selectivity",
    "edge_matrix",
    "path_classifier_agreement",
    "path_concepts",
    "path_embedding",
    "path_matrix",
    "unit_matrix",
]


def _check_matrix(ds: Any, func: str) -> xr.Dataset:
    if not isinstance(ds, xr.Dataset) or "entry_flow" not in ds:
        raise TypeError(
            f"{func}(): `matrix` must be the Dataset returned by path_matrix() or edge_matrix(); "
            f"got {type(ds).__name__}. Build it with path_matrix(top_paths(...))."
        )
    return ds


def _check_labels(labels: Any, n: int, func: str, name: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(
            f"{func}(): `{name}` must have one entry per sample ({n}); got shape {y.shape}. "
            "Pass the labels of the same samples, in order."
        )
    return y


def as_sparse(matrix: xr.Dataset) -> sp.csr_matrix:
    """Return the path x sample matrix of a :func:`path_matrix` Dataset as scipy CSR.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> m = xr.Dataset({"entry_path": ("entry", [0, 1]), "entry_sample": ("entry", [1, 0]),
    ...                 "entry_flow": ("entry", np.float32([.5, .2]))},
    ...                coords={"path": [7, 9], "sample": [0, 1]})
    >>> as_sparse(m).toarray()
    array([[0. , 0.5],
           [0.2, 0. ]], dtype=float32)
    """
    m = _check_matrix(matrix, "as_sparse")
    shape = (m.sizes["path"], m.sizes["sample"])
    return sp.csr_matrix(
        (m["entry_flow"].values, (m["entry_path"].values, m["entry_sample"].values)), shape=shape
    )


def _pack(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_samples: int, min_support: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Filter rows by support; return kept row keys, new row index, cols, vals, support."""
    keys, inv = np.unique(rows, return_inverse=True)
    support = np.bincount(inv, minlength=keys.size)
    keep = support >= min_support
    new_index = np.cumsum(keep) - 1
    m = keep[inv]
    return keys[keep], new_index[inv[m]], cols[m], vals[m], support[keep]


def path_matrix(top: xr.Dataset, *, min_support: int = 5, max_paths: int = 20000) -> xr.Dataset:
    """Build the sparse path x sample flow matrix from the selected paths of each sample.

    Parameters
    ----------
    top : xarray.Dataset
        Output of :func:`netphys.population.paths.top_paths`.
    min_support : int, default=5
        Keep paths selected in at least ``max(min_support, 0.005 * n_samples)`` samples.
    max_paths : int, default=20000
        Keep at most this many paths, by support (ties by path id).

    Returns
    -------
    xarray.Dataset
        Dims path, layer, sample, entry. ``nodes`` (path, layer) node per layer; ``support``
        (path) number of samples; ``mass`` (path) total flow; COO entries ``entry_path``,
        ``entry_sample``, ``entry_flow`` (float32); ``kept_mass`` (sample) = kept flow / selected
        flow; ``kept_mass_fraction`` (0-d); ``coverage``, ``certified`` (sample) from ``top``.
        Coordinate ``path`` = path id.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from netphys.population.paths._flows import top_paths
    >>> tr = xr.Dataset({"activity_0": (("sample", "node_0"), np.ones((3, 2))),
    ...                  "seed_mass": (("sample", "node_0"), [[1., 0], [.9, .1], [.2, .8]])})
    >>> path_matrix(top_paths(tr, k=2), min_support=1)["path"].values
    array([0, 1])
    """
    func = "path_matrix"
    if not isinstance(top, xr.Dataset) or "selected" not in top:
        raise TypeError(
            f"{func}(): `top` must be the Dataset returned by top_paths(); got {type(top).__name__}."
        )
    min_support = check_int(min_support, func=func, name="min_support", minimum=1)
    max_paths = check_int(max_paths, func=func, name="max_paths", minimum=1)
    n = top.sizes["sample"]
    sel = top["selected"].values
    t_idx, r_idx = np.nonzero(sel)
    pid = top["path_id"].values[t_idx, r_idx]
    flow = top["flow"].values[t_idx, r_idx]
    thr = max(min_support, int(np.ceil(0.005 * n)))
    keys, row, col, val, support = _pack(pid, t_idx, flow, n, thr)
    if keys.size > max_paths:
        order = np.lexsort((keys, -support))[:max_paths]
        keep = np.zeros(keys.size, bool)
        keep[order] = True
        remap = np.cumsum(keep) - 1
        m = keep[row]
        keys, support, row, col, val = keys[keep], support[keep], remap[row[m]], col[m], val[m]
    widths = top["widths"].values
    rad = np.cumprod(np.concatenate([[1], widths[:-1]])).astype(np.int64)
    nodes = (keys[:, None] // rad[None, :]) % widths[None, :]
    sel_flow = (top["flow"].values * sel).sum(-1)
    kept = np.bincount(col, weights=val, minlength=n)
    kept_mass = np.where(sel_flow > 0, kept / np.where(sel_flow > 0, sel_flow, 1), 0.0)
    mass = np.bincount(row, weights=val, minlength=keys.size)
    ds = xr.Dataset(
        {
            "nodes": (("path", "layer"), nodes),
            "support": (("path",), support),
            "mass": (("path",), mass),
            "entry_path": (("entry",), row.astype(np.int64)),
            "entry_sample": (("entry",), col.astype(np.int64)),
            "entry_flow": (("entry",), val.astype(np.float32)),
            "kept_mass": (("sample",), kept_mass),
            "kept_mass_fraction": ((), float(kept.sum() / max(sel_flow.sum(), 1e-300))),
            "coverage": (("sample",), top["coverage"].values),
            "certified": (("sample",), top["certified"].values),
        },
        coords={"path": keys, "layer": top["layer"].values, "sample": top["sample"].values},
    )
    ds.attrs = {**top.attrs, "unit": "path", "min_support": thr, "max_paths": max_paths}
    return ds


def edge_matrix(flow: xr.Dataset, *, min_support: int = 5, min_flow: float = 1e-6) -> xr.Dataset:
    """Build the sparse edge x sample matrix of exact edge flows (the ``unit='edge'`` variant).

    Parameters
    ----------
    flow : xarray.Dataset
        Output of :func:`netphys.population.paths.path_flow` (edge flows), or of
        :func:`netphys.population.paths.effective_paths` (binary effective-path edges).
    min_support : int, default=5
        Keep edges whose flow exceeds ``min_flow`` in at least ``max(min_support, 0.005 T)``
        samples.
    min_flow : float, default=1e-6
        Entries below this flow are dropped (exact marginals otherwise; no coverage loss).

    Returns
    -------
    xarray.Dataset
        Same layout as :func:`path_matrix`, rows along ``path`` are edges; ``edge_layer``,
        ``edge_post``, ``edge_pre`` (path) name them (layer index of the post node).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> f = xr.Dataset({"edge_flow_1": (("sample", "node_1", "node_0"), np.ones((5, 1, 2)) / 2)})
    >>> edge_matrix(f)["edge_pre"].values
    array([0, 1])
    """
    func = "edge_matrix"
    if not isinstance(flow, xr.Dataset) or not ("edge_flow_1" in flow or "edge_selected_1" in flow):
        raise TypeError(
            f"{func}(): `flow` must be the Dataset returned by path_flow() or effective_paths() "
            f"with 2+ layers; got {type(flow).__name__}."
        )
    prefix = "edge_flow_" if "edge_flow_1" in flow else "edge_selected_"
    min_support = check_int(min_support, func=func, name="min_support", minimum=1)
    rows, cols, vals, meta = [], [], [], []
    offset = 0
    li = 1
    n = flow.sizes["sample"]
    while f"{prefix}{li}" in flow:
        e = np.asarray(flow[f"{prefix}{li}"].values, dtype=np.float64)
        wj, wi = e.shape[1:]
        t, j, i = np.nonzero(e > min_flow)
        rows.append(offset + j * wi + i)
        cols.append(t)
        vals.append(e[t, j, i])
        jj, ii = np.divmod(np.arange(wj * wi), wi)
        meta.append(np.stack([np.full(wj * wi, li), jj, ii], 1))
        offset += wj * wi
        li += 1
    row, col, val = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    thr = max(min_support, int(np.ceil(0.005 * n)))
    keys, row, col, val, support = _pack(row, col, val, n, thr)
    meta_all = np.concatenate(meta)[keys]
    ds = xr.Dataset(
        {
            "edge_layer": (("path",), meta_all[:, 0]),
            "edge_post": (("path",), meta_all[:, 1]),
            "edge_pre": (("path",), meta_all[:, 2]),
            "support": (("path",), support),
            "mass": (("path",), np.bincount(row, weights=val, minlength=keys.size)),
            "entry_path": (("entry",), row.astype(np.int64)),
            "entry_sample": (("entry",), col.astype(np.int64)),
            "entry_flow": (("entry",), val.astype(np.float32)),
        },
        coords={"path": keys, "sample": flow["sample"].values},
    )
    ds.attrs = {**flow.attrs, "unit": "edge", "min_support": thr}
    return ds


def unit_matrix(activity: Any, *, min_support: int = 5) -> xr.Dataset:
    """Put a (sample, unit) activity array in the matrix layout of :func:`path_matrix`.

    The unit-level baseline (co-active units, as in Fiacco et al. 2019): rows are units, with
    their positive activity; the same clustering and metrics then apply, so one can check
    whether path concepts beat unit concepts.

    Parameters
    ----------
    activity : array-like or xarray.DataArray, (sample, unit)
        Unit or node activity.
    min_support : int, default=5
        Keep units active (> 0) in at least ``max(min_support, 0.005 T)`` samples.

    Returns
    -------
    xarray.Dataset
        Rows along ``path`` are units (coordinate = unit index); attrs ``unit='unit'``.

    Examples
    --------
    >>> unit_matrix(np.eye(6)[:, :2], min_support=1)["path"].values
    array([0, 1])
    """
    from netphys._validation import check_population

    func = "unit_matrix"
    da = check_population(activity, func=func)
    min_support = check_int(min_support, func=func, name="min_support", minimum=1)
    a = np.maximum(np.asarray(da.values, dtype=np.float64), 0.0)
    n = a.shape[0]
    t, u = np.nonzero(a > 0)
    thr = max(min_support, int(np.ceil(0.005 * n)))
    keys, row, col, val, support = _pack(u, t, a[t, u], n, thr)
    ds = xr.Dataset(
        {
            "support": (("path",), support),
            "mass": (("path",), np.bincount(row, weights=val, minlength=keys.size)),
            "entry_path": (("entry",), row.astype(np.int64)),
            "entry_sample": (("entry",), col.astype(np.int64)),
            "entry_flow": (("entry",), val.astype(np.float32)),
        },
        coords={"path": keys, "sample": np.arange(n)},
    )
    ds.attrs = {"unit": "unit", "min_support": thr}
    return ds


def _corr(x: np.ndarray) -> np.ndarray:
    """Pearson correlation between rows (0 for constant rows)."""
    xc = x - x.mean(1, keepdims=True)
    nrm = np.linalg.norm(xc, axis=1, keepdims=True)
    xc = np.where(nrm > 0, xc / np.where(nrm > 0, nrm, 1), 0.0)
    c = xc @ xc.T
    np.fill_diagonal(c, 1.0)
    return np.asarray(np.clip(c, -1.0, 1.0))


def _relabel(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop clusters smaller than min_size (-1); renumber by size desc, then first member."""
    out = np.full(labels.shape, -1, dtype=np.int64)
    uniq = [u for u in np.unique(labels) if u >= 0]
    info = []
    for u in uniq:
        idx = np.flatnonzero(labels == u)
        if idx.size >= min_size:
            info.append((-idx.size, idx[0], idx))
    for new, (_, _, idx) in enumerate(sorted(info, key=lambda v: (v[0], v[1]))):
        out[idx] = new
    return out


def path_concepts(
    matrix: xr.Dataset,
    *,
    distance_threshold: float = 0.7,
    n_concepts: int | None = None,
    method: str = "agglomerative",
    min_size: int = 3,
    rng: Any = None,
) -> xr.Dataset:
    """Cluster paths into concepts by the correlation of their flow across samples.

    Parameters
    ----------
    matrix : xarray.Dataset
        Output of :func:`path_matrix` or :func:`edge_matrix`.
    distance_threshold : float, default=0.7
        Average-linkage cut on ``1 - corr`` (tau_c); ignored when ``n_concepts`` is given.
    n_concepts : int, optional
        Number of clusters instead of a distance cut (for 'spectral', default: eigengap).
    method : {'agglomerative', 'spectral'}, default='agglomerative'
        AgglomerativeClustering(metric='precomputed', linkage='average') on ``1 - corr``, or
        SpectralClustering(affinity='precomputed') on ``max(corr, 0)``.
    min_size : int, default=3
        Clusters with fewer paths get label -1 (unassigned).
    rng : int, Generator or None, default=None
        Seed of the spectral method's k-means.

    Returns
    -------
    xarray.Dataset
        ``concept`` (path) label, -1 = unassigned, numbered by size; ``n_concepts`` (0-d);
        ``correlation`` (path, path_) Pearson correlation of the rows.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> m = xr.Dataset({"entry_path": ("entry", np.repeat(np.arange(6), 4)),
    ...                 "entry_sample": ("entry", np.r_[np.tile([0, 1, 2, 3], 3), np.tile([4, 5, 6, 7], 3)]),
    ...                 "entry_flow": ("entry", np.ones(24, np.float32))},
    ...                coords={"path": np.arange(6), "sample": np.arange(8)})
    >>> path_concepts(m)["concept"].values
    array([0, 0, 0, 1, 1, 1])
    """
    from sklearn.cluster import AgglomerativeClustering, SpectralClustering

    func = "path_concepts"
    m = _check_matrix(matrix, func)
    method = check_choice(method, ("agglomerative", "spectral"), func=func, name="method")
    min_size = check_int(min_size, func=func, name="min_size", minimum=1)
    n_paths = m.sizes["path"]
    if n_concepts is not None:
        n_concepts = check_int(n_concepts, func=func, name="n_concepts", minimum=1)
    x = as_sparse(m).toarray().astype(np.float64)
    corr = _corr(x) if n_paths else np.zeros((0, 0))
    if n_paths < 2:
        labels = np.zeros(n_paths, dtype=np.int64)
    elif method == "agglomerative":
        kw: dict[str, Any] = (
            {"n_clusters": min(n_concepts, n_paths)} if n_concepts else
            {"n_clusters": None, "distance_threshold": float(distance_threshold)}
        )  # fmt: skip
        labels = AgglomerativeClustering(metric="precomputed", linkage="average", **kw).fit_predict(
            np.maximum(1.0 - corr, 0.0)
        )
    else:
        aff = np.maximum(corr, 0.0)
        k = n_concepts
        if k is None:
            d = aff.sum(1)
            dn = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0)
            lap = np.eye(n_paths) - dn[:, None] * aff * dn[None, :]
            ev = np.sort(np.linalg.eigvalsh(lap))[: min(n_paths, 50)]
            k = int(np.argmax(np.diff(ev)) + 1)
        seed = int(as_rng(rng, func=func).integers(2**31 - 1))
        with warnings.catch_warnings():  # disconnected concepts are the expected case
            warnings.filterwarnings("ignore", message="Graph is not fully connected")
            labels = SpectralClustering(
                n_clusters=max(1, min(k, n_paths)),
                affinity="precomputed",
                random_state=seed,
                assign_labels="cluster_qr",
            ).fit_predict(aff)
    labels = _relabel(np.asarray(labels), min_size)
    ds = xr.Dataset(
        {
            "concept": (("path",), labels),
            "n_concepts": ((), int(labels.max() + 1) if labels.size else 0),
            "correlation": (("path", "path_"), corr),
        },
        coords={"path": m["path"].values, "path_": m["path"].values},
    )
    ds.attrs = {"method": method, "distance_threshold": float(distance_threshold),
                "min_size": min_size, "unit": m.attrs.get("unit", "path")}  # fmt: skip
    return ds


def concept_activity(matrix: xr.Dataset, concepts: xr.Dataset) -> xr.DataArray:
    """Sum the flow of each concept's paths per sample: A[k, t] = sum_{p in k} X[p, t].

    Returns
    -------
    xarray.DataArray
        Dims (concept, sample).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> m = xr.Dataset({"entry_path": ("entry", [0, 1]), "entry_sample": ("entry", [0, 0]),
    ...                 "entry_flow": ("entry", np.float32([.5, .2]))},
    ...                coords={"path": [3, 4], "sample": [0, 1]})
    >>> c = xr.Dataset({"concept": ("path", [0, 0]), "n_concepts": 1})
    >>> concept_activity(m, c).values
    array([[0.7, 0. ]])
    """
    m = _check_matrix(matrix, "concept_activity")
    lab = np.asarray(concepts["concept"].values)
    k = int(concepts["n_concepts"].values)
    rows = lab[m["entry_path"].values]
    keep = rows >= 0
    a = np.zeros((k, m.sizes["sample"]))
    np.add.at(
        a,
        (rows[keep], m["entry_sample"].values[keep]),
        m["entry_flow"].values[keep].astype(np.float64),
    )
    return xr.DataArray(
        a, dims=("concept", "sample"),
        coords={"concept": np.arange(k), "sample": m["sample"].values}, name="concept_activity",
    )  # fmt: skip


def _class_means(a: np.ndarray, y_idx: np.ndarray, n_cls: int) -> tuple[np.ndarray, np.ndarray]:
    oh = np.zeros((y_idx.size, n_cls))
    oh[np.arange(y_idx.size), y_idx] = 1.0
    cnt = oh.sum(0)
    tot = a.sum(1, keepdims=True)
    mu = (a @ oh) / np.maximum(cnt, 1)
    mu_not = (tot - a @ oh) / np.maximum(y_idx.size - cnt, 1)
    return mu, mu_not


def concept_selectivity(
    activity: xr.DataArray,
    labels: Any,
    *,
    n_permutations: int = 1000,
    rng: Any = None,
) -> xr.Dataset:
    """Score concepts against categories: selectivity, p-values, purity, NMI/ARI, IoU.

    Parameters
    ----------
    activity : xarray.DataArray
        Concept activity (concept, sample) from :func:`concept_activity`.
    labels : array-like
        One category per sample.
    n_permutations : int, default=1000
        Label shuffles for the p-value of each concept's maximal selectivity.
    rng : int, Generator or None, default=None
        Randomness of the shuffles.

    Returns
    -------
    xarray.Dataset
        ``mean_activity`` and ``selectivity`` (concept, category): SI = (mu_c - mu_notc) /
        (mu_c + mu_notc); ``preferred`` (concept); ``p_value`` (concept) of max_c SI;
        ``purity`` and ``mass`` (concept); ``purity_global`` (mass-weighted); ``iou`` (concept,
        category), dissection-style with a class-fraction quantile; ``dominant`` (sample)
        argmax concept (-1 if no activity); ``nmi`` and ``ari`` of dominant vs labels.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> a = xr.DataArray([[1., 1, 0, 0], [0, 0, 1, 1]], dims=("concept", "sample"))
    >>> float(concept_selectivity(a, [0, 0, 1, 1], n_permutations=10, rng=0)["nmi"])
    1.0
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    func = "concept_selectivity"
    if not isinstance(activity, xr.DataArray) or "concept" not in activity.dims:
        raise TypeError(
            f"{func}(): `activity` must be the (concept, sample) DataArray of concept_activity()."
        )
    sample_dim = next(d for d in activity.dims if d != "concept")
    a = np.asarray(activity.transpose("concept", sample_dim).values, np.float64)
    n = a.shape[1]
    y = _check_labels(labels, n, func)
    n_permutations = check_int(n_permutations, func=func, name="n_permutations", minimum=0)
    gen = as_rng(rng, func=func)
    cats, y_idx = np.unique(y, return_inverse=True)
    n_cls = cats.size
    mu, mu_not = _class_means(a, y_idx, n_cls)
    si = (mu - mu_not) / (mu + mu_not + 1e-12)
    obs = si.max(1) if n_cls else np.zeros(a.shape[0])
    ge = np.zeros(a.shape[0])
    for _ in range(n_permutations):
        pm, pn = _class_means(a, gen.permutation(y_idx), n_cls)
        ge += ((pm - pn) / (pm + pn + 1e-12)).max(1) >= obs - 1e-12
    p_value = (1.0 + ge) / (1.0 + n_permutations)
    sums = np.zeros((a.shape[0], n_cls))
    for c in range(n_cls):
        sums[:, c] = a[:, y_idx == c].sum(1)
    mass = a.sum(1)
    purity = np.where(mass > 0, sums.max(1) / np.where(mass > 0, mass, 1), 0.0)
    purity_global = float((purity * mass).sum() / mass.sum()) if mass.sum() > 0 else 0.0
    dominant = np.where(a.sum(0) > 0, a.argmax(0) if a.size else -1, -1)
    nmi = float(normalized_mutual_info_score(y_idx, dominant))
    ari = float(adjusted_rand_score(y_idx, dominant))
    iou = np.zeros((a.shape[0], n_cls))
    for c in range(n_cls):
        in_c = y_idx == c
        q = np.quantile(a, 1 - in_c.mean(), axis=1)
        top = a >= q[:, None]
        inter = (top & in_c[None]).sum(1)
        union = (top | in_c[None]).sum(1)
        iou[:, c] = inter / np.maximum(union, 1)
    ds = xr.Dataset(
        {
            "mean_activity": (("concept", "category"), mu),
            "selectivity": (("concept", "category"), si),
            "preferred": (("concept",), cats[mu.argmax(1)] if n_cls and a.shape[0] else cats[:0]),
            "p_value": (("concept",), p_value),
            "purity": (("concept",), purity),
            "mass": (("concept",), mass),
            "purity_global": ((), purity_global),
            "iou": (("concept", "category"), iou),
            "dominant": ((sample_dim,), dominant),
            "nmi": ((), nmi),
            "ari": ((), ari),
        },
        coords={
            "concept": activity["concept"].values,
            "category": cats,
            sample_dim: activity[sample_dim].values,
        },
    )
    ds.attrs = {"n_permutations": n_permutations}
    return ds


def _class_sets(
    x: sp.csr_matrix, y_idx: np.ndarray, n_cls: int, min_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    xb = (x > 0).astype(np.float64)
    frac = np.zeros((x.shape[0], n_cls))
    mean = np.zeros((x.shape[0], n_cls))
    for c in range(n_cls):
        idx = np.flatnonzero(y_idx == c)
        frac[:, c] = np.asarray(xb[:, idx].mean(1)).ravel()
        mean[:, c] = np.asarray(x[:, idx].mean(1)).ravel()
    return frac >= min_fraction, mean


def class_path_overlap(matrix: xr.Dataset, labels: Any, *, min_fraction: float = 0.1) -> xr.Dataset:
    """Compare the path sets of categories (binary and weighted Jaccard, Qiu-style similarity).

    Parameters
    ----------
    matrix : xarray.Dataset
        Output of :func:`path_matrix` or :func:`edge_matrix`.
    labels : array-like
        One category per sample.
    min_fraction : float, default=0.1
        A path belongs to class c's path set if it is active in at least this fraction of
        class-c samples.

    Returns
    -------
    xarray.Dataset
        ``jaccard`` and ``weighted_jaccard`` (category, category_); ``class_paths``
        (path, category) bool membership; ``class_similarity`` (sample, category) = share of a
        sample's flow on each class path set.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> m = xr.Dataset({"entry_path": ("entry", [0, 1, 1, 2]), "entry_sample": ("entry", [0, 0, 1, 1]),
    ...                 "entry_flow": ("entry", np.ones(4, np.float32))},
    ...                coords={"path": [0, 1, 2], "sample": [0, 1]})
    >>> class_path_overlap(m, [0, 1])["jaccard"].values[0, 1]
    np.float64(0.3333333333333333)
    """
    func = "class_path_overlap"
    m = _check_matrix(matrix, func)
    x = as_sparse(m).astype(np.float64)
    y = _check_labels(labels, m.sizes["sample"], func)
    cats, y_idx = np.unique(y, return_inverse=True)
    n_cls = cats.size
    member, mean = _class_sets(x, y_idx, n_cls, float(min_fraction))
    inter = member.T.astype(float) @ member.astype(float)
    size = member.sum(0)
    union = size[:, None] + size[None, :] - inter
    jac = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    wj = np.zeros((n_cls, n_cls))
    for c in range(n_cls):
        mn = np.minimum(mean[:, c : c + 1], mean).sum(0)
        mx = np.maximum(mean[:, c : c + 1], mean).sum(0)
        wj[c] = np.where(mx > 0, mn / np.where(mx > 0, mx, 1), 0.0)
    tot = np.asarray(x.sum(0)).ravel()
    on = np.asarray(x.T @ member.astype(float))
    sim = np.where(tot[:, None] > 0, on / np.where(tot > 0, tot, 1)[:, None], 0.0)
    return xr.Dataset(
        {
            "jaccard": (("category", "category_"), jac),
            "weighted_jaccard": (("category", "category_"), wj),
            "class_paths": (("path", "category"), member),
            "class_similarity": (("sample", "category"), sim),
        },
        coords={
            "category": cats,
            "category_": cats,
            "path": m["path"].values,
            "sample": m["sample"].values,
        },
        attrs={"min_fraction": float(min_fraction)},
    )


def path_classifier_agreement(overlap: xr.Dataset, predictions: Any) -> float:
    """Fraction of samples whose most similar class path set is the model's prediction.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> o = xr.Dataset({"class_similarity": (("sample", "category"), [[.9, .1], [.2, .8]])},
    ...                coords={"category": [0, 1]})
    >>> path_classifier_agreement(o, [0, 0])
    0.5
    """
    sim = overlap["class_similarity"].values
    pred = _check_labels(predictions, sim.shape[0], "path_classifier_agreement", "predictions")
    best = overlap["category"].values[sim.argmax(1)]
    return float(np.mean(best == pred))


def path_embedding(
    matrix: xr.Dataset,
    *,
    n_components: int = 2,
    rastermap: bool = True,
    n_clusters: int | None = None,
    rng: Any = None,
) -> xr.Dataset:
    """Embed paths and samples in a low-dimensional space; sort paths with rastermap.

    Parameters
    ----------
    matrix : xarray.Dataset
        Output of :func:`path_matrix` or :func:`edge_matrix`.
    n_components : int, default=2
        Components of the TruncatedSVD of the row-centred matrix.
    rastermap : bool, default=True
        Also sort the paths with Rastermap (locality=0, time_lag_window=0); otherwise paths
        are ordered by their first component. Needs more than 50 paths.
    n_clusters : int, optional
        Rastermap clusters; default ``min(100, n_paths // 4)``. Its travelling-salesman step
        grows steeply with it (100 clusters: ~70 s on 2 CPU cores; 30: ~2 s).
    rng : int, Generator or None, default=None
        Seed of the SVD.

    Returns
    -------
    xarray.Dataset
        ``path_coords`` (path, component); ``sample_coords`` (sample, component);
        ``singular_values`` (component); ``participation_ratio`` (0-d) of the squared
        singular values; ``isort`` (path_rank) path order.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> g = np.random.default_rng(0)
    >>> m = xr.Dataset({"entry_path": ("entry", np.repeat(np.arange(8), 10)),
    ...                 "entry_sample": ("entry", np.tile(np.arange(10), 8)),
    ...                 "entry_flow": ("entry", g.random(80).astype(np.float32))},
    ...                coords={"path": np.arange(8), "sample": np.arange(10)})
    >>> path_embedding(m, rastermap=False)["path_coords"].shape
    (8, 2)
    """
    from sklearn.utils.extmath import randomized_svd

    func = "path_embedding"
    m = _check_matrix(matrix, func)
    n_components = check_int(n_components, func=func, name="n_components", minimum=1)
    x = as_sparse(m).toarray().astype(np.float64)
    xc = x - x.mean(1, keepdims=True)
    nc = max(1, min(n_components, *xc.shape)) if xc.size else 0
    seed = int(as_rng(rng, func=func).integers(2**31 - 1))
    if nc:
        u, s, vt = randomized_svd(xc, nc, random_state=seed)
        sign = np.sign(u[np.abs(u).argmax(0), np.arange(nc)])
        u, vt = u * sign, vt * sign[:, None]
        s_all = np.linalg.svd(xc, compute_uv=False) if min(xc.shape) <= 2000 else s
    else:
        u, s, vt, s_all = (
            np.zeros((x.shape[0], 0)),
            np.zeros(0),
            np.zeros((0, x.shape[1])),
            np.zeros(0),
        )
    lam = s_all**2
    pr = float(lam.sum() ** 2 / (lam**2).sum()) if lam.size and lam.sum() > 0 else 0.0
    isort = np.argsort(-u[:, 0], kind="stable") if nc else np.arange(x.shape[0])
    if rastermap and x.shape[0] > 50 and x.shape[1] >= 3:  # rastermap needs > 50 rows
        from rastermap import Rastermap

        model = Rastermap(
            n_clusters=n_clusters or max(2, min(100, x.shape[0] // 4)), n_PCs=min(128, x.shape[1] - 1, x.shape[0] - 1),
            locality=0.0, time_lag_window=0, verbose=False,
        )  # fmt: skip
        isort = np.asarray(model.fit(x.astype(np.float32)).isort)
    return xr.Dataset(
        {
            "path_coords": (("path", "component"), u * s if nc else u),
            "sample_coords": (("sample", "component"), vt.T * s if nc else vt.T),
            "singular_values": (("component",), s),
            "participation_ratio": ((), pr),
            "isort": (("path_rank",), isort),
        },
        coords={
            "path": m["path"].values,
            "sample": m["sample"].values,
            "component": np.arange(1, nc + 1),
        },
    )
