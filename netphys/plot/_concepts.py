"""Figures of the path and concept analysis; each function returns a matplotlib Figure."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from netphys.plot._population import _label_groups
from netphys.population.paths import as_sparse

__all__ = ["plot_concept_selectivity", "plot_path_embedding", "plot_path_raster"]


def _figure(
    figsize: tuple[float, float], ncols: int = 1, width_ratios: list[float] | None = None
) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, ncols, width_ratios=width_ratios)
    return fig, axes


#: Concepts drawn in colour (the largest, by number of paths); the rest are grey.
MAX_COLORED = 10


def _concept_colors(concept: np.ndarray, max_colored: int) -> tuple[np.ndarray, list[Any]]:
    """RGBA per path: the ``max_colored`` largest concepts in tab10, the others light grey."""
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    ids, counts = np.unique(concept[concept >= 0], return_counts=True)
    top = ids[np.argsort(-counts, kind="stable")[:max_colored]]
    cmap = colormaps["tab10"]
    colors = np.tile(np.array([0.82, 0.82, 0.82, 1.0]), (len(concept), 1))
    handles: list[Any] = []
    for i, c in enumerate(top):
        colors[concept == c] = cmap(i % 10)
        handles.append(Patch(color=cmap(i % 10), label=f"concept {int(c)}"))
    if len(ids) > len(top):
        handles.append(Patch(color=(0.82, 0.82, 0.82), label=f"{len(ids) - len(top)} others"))
    return colors, handles


def plot_path_raster(
    matrix: xr.Dataset,
    embedding: xr.Dataset,
    *,
    labels: Any = None,
    concepts: xr.Dataset | None = None,
) -> Any:
    """Plot the path x sample flow raster, paths sorted by rastermap, samples by category.

    Parameters
    ----------
    matrix : xarray.Dataset
        Output of :func:`netphys.population.paths.path_matrix`.
    embedding : xarray.Dataset
        Output of :func:`netphys.population.paths.path_embedding` (its ``isort``).
    labels : array-like, optional
        One category per sample; samples are grouped by it and the groups are marked.
    concepts : xarray.Dataset, optional
        Output of :func:`netphys.population.paths.path_concepts`; a side bar shows them.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from netphys.population.paths import path_embedding
    >>> m = xr.Dataset({"entry_path": ("entry", [0, 1, 2]), "entry_sample": ("entry", [0, 1, 2]),
    ...                 "entry_flow": ("entry", np.ones(3, np.float32))},
    ...                coords={"path": [0, 1, 2], "sample": [0, 1, 2]})
    >>> fig = plot_path_raster(m, path_embedding(m, rastermap=False))
    """
    x = as_sparse(matrix).toarray()
    isort = np.asarray(embedding["isort"].values)
    order = (
        np.arange(x.shape[1]) if labels is None else np.argsort(np.asarray(labels), kind="stable")
    )
    x = x[isort][:, order]
    # z-score rows for display, as rastermap shows neurons
    xs = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-12)
    if concepts is not None:
        fig, axes = _figure((9, 5), 2, width_ratios=[30, 1])
    else:
        fig, axes = _figure((9, 5))
    ax = axes[0] if concepts is not None else axes
    ax.imshow(xs, aspect="auto", cmap="gray_r", vmin=0, vmax=2.0, interpolation="nearest")
    ax.set_xlabel("sample (grouped by category)" if labels is not None else "sample")
    ax.set_ylabel("path (rastermap order)")
    ax.set_title(f"path raster: {x.shape[0]} paths x {x.shape[1]} samples")
    if labels is not None:  # a red line between categories, each named under its group
        _label_groups(ax, np.asarray(labels)[order], x.shape[1])
    if concepts is not None:
        lab = np.asarray(concepts["concept"].values)[isort]
        colors, handles = _concept_colors(lab, MAX_COLORED)
        axes[1].imshow(colors[:, None, :], aspect="auto", interpolation="nearest")
        axes[1].set_xticks([])
        axes[1].set_yticks([])
        axes[1].set_title("concept", fontsize=7)
        fig.legend(handles=handles, loc="outside right upper", fontsize=6, frameon=False)
    return fig


def plot_path_embedding(
    embedding: xr.Dataset, *, labels: Any = None, concepts: xr.Dataset | None = None
) -> Any:
    """Plot samples and paths in the first two SVD components of the flow matrix.

    Parameters
    ----------
    embedding : xarray.Dataset
        Output of :func:`netphys.population.paths.path_embedding` (2+ components).
    labels : array-like, optional
        Colours the samples by category.
    concepts : xarray.Dataset, optional
        Colours the paths by concept.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> emb = xr.Dataset({"sample_coords": (("sample", "component"), np.eye(3)[:, :2]),
    ...                   "path_coords": (("path", "component"), np.eye(3)[:, :2]),
    ...                   "participation_ratio": 2.0})
    >>> fig = plot_path_embedding(emb, labels=[0, 1, 1])
    """
    fig, axes = _figure((10, 4.5), 2)
    s = np.asarray(embedding["sample_coords"].values)
    p = np.asarray(embedding["path_coords"].values)
    if s.shape[1] < 2:
        s = np.c_[s, np.zeros(len(s))]
        p = np.c_[p, np.zeros(len(p))]
    c = None if labels is None else np.unique(np.asarray(labels), return_inverse=True)[1]
    sc = axes[0].scatter(s[:, 0], s[:, 1], c=c, s=6, **({"cmap": "tab10"} if c is not None else {}))
    if labels is not None:
        cats = np.unique(np.asarray(labels))
        handles = [
            axes[0].scatter([], [], color=sc.cmap(sc.norm(i)), s=12, label=str(cat))
            for i, cat in enumerate(cats)
        ]
        axes[0].legend(handles=handles, fontsize=6, title="category", loc="best")
    pr = float(embedding["participation_ratio"])
    axes[0].set_title(f"samples (participation ratio {pr:.1f})")
    if concepts is None:
        axes[1].scatter(p[:, 0], p[:, 1], s=6)
    else:
        colors, handles = _concept_colors(np.asarray(concepts["concept"].values), MAX_COLORED)
        grey = colors[:, 0] == colors[:, 1]
        axes[1].scatter(p[grey, 0], p[grey, 1], c=colors[grey], s=5)
        axes[1].scatter(p[~grey, 0], p[~grey, 1], c=colors[~grey], s=7)
        axes[1].legend(handles=handles, fontsize=6, loc="best", frameon=False)
    title = f"paths ({MAX_COLORED} largest concepts coloured)" if concepts is not None else "paths"
    axes[1].set_title(title)
    for ax in axes:
        ax.set_xlabel("component 1")
        ax.set_ylabel("component 2")
    return fig


def plot_concept_selectivity(
    selectivity: xr.Dataset,
    *,
    alpha: float = 0.01,
    max_concepts: int = 40,
    p_values: Any = None,
    test: str = "label permutation",
) -> Any:
    """Plot concept x category selectivity, marking concepts with p < alpha.

    Parameters
    ----------
    selectivity : xarray.Dataset
        Output of :func:`netphys.population.paths.concept_selectivity`.
    alpha : float, default=0.01
        Concepts with ``p_value < alpha`` get a star.
    max_concepts : int, default=40
        Show at most this many concepts, the largest by flow mass.
    p_values : array-like or xarray.DataArray, optional
        One p-value per concept replacing ``selectivity["p_value"]``, e.g. against the
        untrained control from :func:`netphys.population.paths.selectivity_vs_reference`.
    test : str, default="label permutation"
        Name of the test behind the p-values, shown on the y axis.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import xarray as xr
    >>> from netphys.population.paths import concept_selectivity
    >>> a = xr.DataArray([[1., 1, 0, 0], [0, 0, 1, 1]], dims=("concept", "sample"))
    >>> fig = plot_concept_selectivity(concept_selectivity(a, [0, 0, 1, 1], n_permutations=5))
    """
    keep = np.sort(
        np.argsort(-np.asarray(selectivity["mass"].values), kind="stable")[:max_concepts]
    )
    si = np.asarray(selectivity["selectivity"].values)[keep]
    p_all = selectivity["p_value"].values if p_values is None else np.asarray(p_values)
    if len(p_all) != selectivity.sizes["concept"]:
        raise ValueError(
            f"plot_concept_selectivity(): `p_values` needs one value per concept "
            f"({selectivity.sizes['concept']}); got {len(p_all)}."
        )
    pv = np.asarray(p_all, dtype=float)[keep]
    names = np.asarray(selectivity["concept"].values)[keep]
    cats = selectivity["category"].values
    fig, ax = _figure((2.0 + 0.45 * max(len(cats), 1), 1.5 + 0.15 * max(si.shape[0], 1)))
    if si.size == 0:
        ax.text(0.5, 0.5, "no concepts", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    im = ax.imshow(si, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(cats)), [str(c) for c in cats])
    ax.set_yticks(
        range(si.shape[0]),
        [f"{k}{'*' if p < alpha else ''}" for k, p in zip(names, pv, strict=False)],
        fontsize=6,
    )
    ax.set_xlabel("category")
    ax.set_ylabel(f"concept (* p < {alpha}, {test}; {int((pv < alpha).sum())} of {len(pv)})")
    ax.set_title(
        f"selectivity; purity {float(selectivity['purity_global']):.2f}, "
        f"NMI {float(selectivity['nmi']):.2f}"
    )
    fig.colorbar(im, ax=ax, label="SI")
    return fig
