"""Sparse row x sample matrices: selected paths, exact edge flows, or unit activity.

Sparse matrices are carried inside xarray Datasets as COO arrays (``entry_path``,
``entry_sample``, ``entry_flow`` along dim ``entry``) so that every result saves with
``Dataset.to_zarr(path, consolidated=False)`` next to its recording (text coords are
variable-length strings, portable Zarr v3); :func:`as_sparse` gives the scipy matrix back.
Algorithm: ``reference/paths.md`` section 3.4.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import xarray as xr

from netphys._validation import check_int, check_population
from netphys.population.paths._layers import LAYER, n_layers, portable_strings, samples

__all__ = ["as_sparse", "edge_matrix", "path_matrix", "unit_matrix"]


def check_matrix(ds: Any, func: str) -> xr.Dataset:
    """Check that ``ds`` is a matrix Dataset of path_matrix / edge_matrix / unit_matrix."""
    if not isinstance(ds, xr.Dataset) or "entry_flow" not in ds:
        raise TypeError(
            f"{func}(): `matrix` must be the Dataset returned by path_matrix() or edge_matrix(); "
            f"got {type(ds).__name__}. Build it with path_matrix(top_paths(...))."
        )
    return ds


def as_sparse(matrix: xr.Dataset) -> sp.csr_matrix:
    """Return the row x sample matrix of a :func:`path_matrix` Dataset as scipy CSR.

    Parameters
    ----------
    matrix : xarray.Dataset
        Output of :func:`path_matrix`, :func:`edge_matrix` or :func:`unit_matrix`.

    Returns
    -------
    scipy.sparse.csr_matrix
        Shape (path, sample), float32.

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
    m = check_matrix(matrix, "as_sparse")
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


def _entries(row: np.ndarray, col: np.ndarray, val: np.ndarray, n_rows: int) -> dict[str, Any]:
    """Return the COO variables and the row mass of a matrix Dataset."""
    return {
        "mass": (("path",), np.bincount(row, weights=val, minlength=n_rows)),
        "entry_path": (("entry",), row.astype(np.int64)),
        "entry_sample": (("entry",), col.astype(np.int64)),
        "entry_flow": (("entry",), val.astype(np.float32)),
    }


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
        Coordinate ``path`` = path id. Attrs ``rows='path'``.

    Examples
    --------
    >>> from netphys.population.paths import path_transitions, top_paths
    >>> from netphys.population.paths._synthetic import relu_mlp_contributions
    >>> top = top_paths(path_transitions(relu_mlp_contributions(n_samples=30)), k=8)
    >>> mat = path_matrix(top, min_support=3)
    >>> mat["nodes"].dims, mat.attrs["rows"]
    (('path', 'layer'), 'path')
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
    thr = max(min_support, int(np.ceil(0.005 * n)))
    keys, row, col, val, support = _pack(
        top["path_id"].values[t_idx, r_idx], t_idx, top["flow"].values[t_idx, r_idx], n, thr
    )
    if keys.size > max_paths:
        order = np.lexsort((keys, -support))[:max_paths]
        keep = np.zeros(keys.size, bool)
        keep[order] = True
        remap = np.cumsum(keep) - 1
        m = keep[row]
        keys, support, row, col, val = keys[keep], support[keep], remap[row[m]], col[m], val[m]
    widths = top["widths"].values
    rad = np.cumprod(np.concatenate([[1], widths[:-1]])).astype(np.int64)
    sel_flow = (top["flow"].values * sel).sum(-1)
    kept = np.bincount(col, weights=val, minlength=n)
    ds = xr.Dataset(
        {
            "nodes": (("path", "layer"), (keys[:, None] // rad[None, :]) % widths[None, :]),
            "support": (("path",), support),
            **_entries(row, col, val, keys.size),
            "kept_mass": (
                ("sample",),
                np.where(sel_flow > 0, kept / np.where(sel_flow > 0, sel_flow, 1), 0.0),
            ),
            "kept_mass_fraction": ((), float(kept.sum() / max(sel_flow.sum(), 1e-300))),
            "coverage": (("sample",), top["coverage"].values),
            "certified": (("sample",), top["certified"].values),
        },
        coords={"path": keys, "layer": top["layer"].values, "sample": top["sample"].values},
    )
    ds.attrs = {**top.attrs, "rows": "path", "min_support": thr, "max_paths": max_paths}
    return portable_strings(ds)


def edge_matrix(flow: xr.DataTree, *, min_support: int = 5, min_flow: float = 1e-6) -> xr.Dataset:
    """Build the sparse edge x sample matrix of exact edge flows (the ``rows='edge'`` variant).

    Parameters
    ----------
    flow : xarray.DataTree
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
        Attrs ``rows='edge'``.

    Examples
    --------
    >>> from netphys.population.paths import path_flow, path_transitions
    >>> from netphys.population.paths._synthetic import relu_mlp_contributions
    >>> fl = path_flow(path_transitions(relu_mlp_contributions(n_samples=10, widths=(3, 2))))
    >>> em = edge_matrix(fl)
    >>> int(em["edge_layer"].min()), em.attrs["rows"]
    (1, 'edge')
    """
    func = "edge_matrix"
    n_lay = n_layers(flow) if isinstance(flow, xr.DataTree) else 0
    top = flow[LAYER.format(1)] if n_lay >= 2 else None
    if top is None or not ("edge_flow" in top or "edge_selected" in top):
        raise TypeError(
            f"{func}(): `flow` must be the DataTree returned by path_flow() or effective_paths() "
            f"with 2+ layers; got {type(flow).__name__}."
        )
    var = "edge_flow" if "edge_flow" in top else "edge_selected"
    min_support = check_int(min_support, func=func, name="min_support", minimum=1)
    rows, cols, vals, meta = [], [], [], []
    offset = 0
    for li in range(1, n_lay):
        e = np.asarray(flow[LAYER.format(li)][var].values, dtype=np.float64)
        wj, wi = e.shape[1:]
        t, j, i = np.nonzero(e > min_flow)
        rows.append(offset + j * wi + i)
        cols.append(t)
        vals.append(e[t, j, i])
        jj, ii = np.divmod(np.arange(wj * wi), wi)
        meta.append(np.stack([np.full(wj * wi, li), jj, ii], 1))
        offset += wj * wi
    n = len(samples(flow))
    thr = max(min_support, int(np.ceil(0.005 * n)))
    keys, row, col, val, support = _pack(
        np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), n, thr
    )
    meta_all = np.concatenate(meta)[keys]
    ds = xr.Dataset(
        {
            "edge_layer": (("path",), meta_all[:, 0]),
            "edge_post": (("path",), meta_all[:, 1]),
            "edge_pre": (("path",), meta_all[:, 2]),
            "support": (("path",), support),
            **_entries(row, col, val, keys.size),
        },
        coords={"path": keys, "sample": samples(flow)},
    )
    ds.attrs = {**flow.attrs, "rows": "edge", "min_support": thr}
    return portable_strings(ds)


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
        Rows along ``path`` are units (coordinate = unit index); attrs ``rows='unit'``.

    Examples
    --------
    >>> import numpy as np
    >>> unit_matrix(np.eye(6)[:, :2], min_support=1)["path"].values
    array([0, 1])
    """
    func = "unit_matrix"
    da = check_population(activity, func=func)
    min_support = check_int(min_support, func=func, name="min_support", minimum=1)
    a = np.maximum(np.asarray(da.values, dtype=np.float64), 0.0)
    n = a.shape[0]
    t, u = np.nonzero(a > 0)
    thr = max(min_support, int(np.ceil(0.005 * n)))
    keys, row, col, val, support = _pack(u, t, a[t, u], n, thr)
    ds = xr.Dataset(
        {"support": (("path",), support), **_entries(row, col, val, keys.size)},
        coords={"path": keys, "sample": np.arange(n)},
    )
    ds.attrs = {"rows": "unit", "min_support": thr}
    return ds
