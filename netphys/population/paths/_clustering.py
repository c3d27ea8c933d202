"""Concepts: clusters of paths that are active together across samples; their embedding.

Algorithm: ``reference/paths.md`` section 3.5. Never imports torch.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import as_rng, check_choice, check_int, check_positive_float
from netphys.population.paths._matrices import as_sparse, check_matrix

__all__ = ["concept_activity", "path_concepts", "path_embedding"]


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


def _agglomerative(corr: np.ndarray, n_concepts: int | None, threshold: float) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    n_paths = corr.shape[0]
    kw: dict[str, Any] = (
        {"n_clusters": min(n_concepts, n_paths)} if n_concepts else
        {"n_clusters": None, "distance_threshold": threshold}
    )  # fmt: skip
    return np.asarray(
        AgglomerativeClustering(metric="precomputed", linkage="average", **kw).fit_predict(
            np.maximum(1.0 - corr, 0.0)
        )
    )


def _spectral(corr: np.ndarray, n_concepts: int | None, seed: int) -> np.ndarray:
    from sklearn.cluster import SpectralClustering

    n_paths = corr.shape[0]
    aff = np.maximum(corr, 0.0)
    k = n_concepts
    if k is None:  # eigengap of the normalised Laplacian
        d = aff.sum(1)
        dn = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0)
        lap = np.eye(n_paths) - dn[:, None] * aff * dn[None, :]
        ev = np.sort(np.linalg.eigvalsh(lap))[: min(n_paths, 50)]
        k = int(np.argmax(np.diff(ev)) + 1)
    with warnings.catch_warnings():  # disconnected concepts are the expected case
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        return np.asarray(
            SpectralClustering(
                n_clusters=max(1, min(k, n_paths)),
                affinity="precomputed",
                random_state=seed,
                assign_labels="cluster_qr",
            ).fit_predict(aff)
        )


def path_concepts(
    matrix: xr.Dataset,
    *,
    distance_threshold: float = 0.7,
    n_concepts: int | None = None,
    method: str = "agglomerative",
    min_size: int = 3,
    rng: Any = 0,
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
    rng : int, Generator or None, default=0
        Seed of the spectral method's k-means.

    Returns
    -------
    xarray.Dataset
        ``concept`` (path) label, -1 = unassigned, numbered by size; ``n_concepts`` (0-d);
        ``correlation`` (path, path_) Pearson correlation of the rows. Attrs ``rows`` from
        the matrix.

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
    func = "path_concepts"
    m = check_matrix(matrix, func)
    method = check_choice(method, ("agglomerative", "spectral"), func=func, name="method")
    min_size = check_int(min_size, func=func, name="min_size", minimum=1)
    distance_threshold = check_positive_float(
        distance_threshold, func=func, name="distance_threshold", allow_zero=True
    )
    if n_concepts is not None:
        n_concepts = check_int(n_concepts, func=func, name="n_concepts", minimum=1)
    n_paths = m.sizes["path"]
    x = as_sparse(m).toarray().astype(np.float64)
    corr = _corr(x) if n_paths else np.zeros((0, 0))
    if n_paths < 2:
        labels = np.zeros(n_paths, dtype=np.int64)
    elif method == "agglomerative":
        labels = _agglomerative(corr, n_concepts, distance_threshold)
    else:
        labels = _spectral(corr, n_concepts, int(as_rng(rng, func=func).integers(2**31 - 1)))
    labels = _relabel(labels, min_size)
    ds = xr.Dataset(
        {
            "concept": (("path",), labels),
            "n_concepts": ((), int(labels.max() + 1) if labels.size else 0),
            "correlation": (("path", "path_"), corr),
        },
        coords={"path": m["path"].values, "path_": m["path"].values},
    )
    ds.attrs = {"method": method, "distance_threshold": distance_threshold,
                "min_size": min_size, "rows": m.attrs.get("rows", "path")}  # fmt: skip
    return ds


def concept_activity(matrix: xr.Dataset, concepts: xr.Dataset) -> xr.DataArray:
    """Sum the flow of each concept's paths per sample: A[k, t] = sum_{p in k} X[p, t].

    Parameters
    ----------
    matrix : xarray.Dataset
        Output of :func:`path_matrix`, :func:`edge_matrix` or :func:`unit_matrix`.
    concepts : xarray.Dataset
        Output of :func:`path_concepts` on the same matrix.

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
    m = check_matrix(matrix, "concept_activity")
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


def _svd(xc: np.ndarray, n_components: int, seed: int) -> tuple[np.ndarray, ...]:
    """Sign-fixed truncated SVD of the row-centred matrix, and all singular values."""
    from sklearn.utils.extmath import randomized_svd

    nc = max(1, min(n_components, *xc.shape)) if xc.size else 0
    if not nc:
        return np.zeros((xc.shape[0], 0)), np.zeros(0), np.zeros((0, xc.shape[1])), np.zeros(0)
    u, s, vt = randomized_svd(xc, nc, random_state=seed)
    sign = np.sign(u[np.abs(u).argmax(0), np.arange(nc)])
    u, vt = u * sign, vt * sign[:, None]
    s_all = np.linalg.svd(xc, compute_uv=False) if min(xc.shape) <= 2000 else s
    return u, s, vt, s_all


def _rastermap_order(x: np.ndarray, n_clusters: int | None) -> np.ndarray:
    from rastermap import Rastermap

    model = Rastermap(
        n_clusters=n_clusters or max(2, min(100, x.shape[0] // 4)),
        n_PCs=min(128, x.shape[1] - 1, x.shape[0] - 1),
        locality=0.0, time_lag_window=0, verbose=False,
    )  # fmt: skip
    return np.asarray(model.fit(x.astype(np.float32)).isort)


def path_embedding(
    matrix: xr.Dataset,
    *,
    n_components: int = 2,
    rastermap: bool = True,
    n_clusters: int | None = None,
    rng: Any = 0,
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
    rng : int, Generator or None, default=0
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
    func = "path_embedding"
    m = check_matrix(matrix, func)
    n_components = check_int(n_components, func=func, name="n_components", minimum=1)
    x = as_sparse(m).toarray().astype(np.float64)
    seed = int(as_rng(rng, func=func).integers(2**31 - 1))
    u, s, vt, s_all = _svd(x - x.mean(1, keepdims=True), n_components, seed)
    nc = s.size
    lam = s_all**2
    pr = float(lam.sum() ** 2 / (lam**2).sum()) if lam.size and lam.sum() > 0 else 0.0
    isort = np.argsort(-u[:, 0], kind="stable") if nc else np.arange(x.shape[0])
    if rastermap and x.shape[0] > 50 and x.shape[1] >= 3:  # rastermap needs > 50 rows
        isort = _rastermap_order(x, n_clusters)
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
