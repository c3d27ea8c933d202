"""Figures of the cross-session analyses (matplotlib; each function returns the Figure).

Figures are made with :class:`matplotlib.figure.Figure`, not pyplot, so nothing stays open in a
global registry.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "plot_concept_persistence",
    "plot_spectrum_over_sessions",
    "plot_subspace_alignment",
    "plot_tuning_drift",
]

_STATUS_COLORS = {"kept": "tab:green", "changed": "tab:orange", "lost": "tab:red"}


def _check(ds: Any, names: tuple[str, ...], func: str, source: str) -> xr.Dataset:
    if not isinstance(ds, xr.Dataset):
        raise TypeError(
            f"{func}(): `result` must be the Dataset returned by {source}; got {type(ds).__name__}."
        )
    missing = [n for n in names if n not in ds]
    if missing:
        raise ValueError(
            f"{func}(): the result lacks {missing}; pass the Dataset returned by {source}."
        )
    return ds


def _matrix(fig: Figure, ax: Axes, da: xr.DataArray, title: str, vmin: float, vmax: float,
            cmap: str = "viridis") -> None:  # fmt: skip
    im = ax.imshow(da.values, vmin=vmin, vmax=vmax, cmap=cmap, origin="upper")
    ticks = np.arange(da.shape[0])
    labels_a = [str(v) for v in da[da.dims[0]].values.tolist()]
    labels_b = [str(v) for v in da[da.dims[1]].values.tolist()]
    step = max(1, len(ticks) // 12)
    ax.set_yticks(ticks[::step], labels_a[::step])
    ax.set_xticks(np.arange(da.shape[1])[::step], labels_b[::step])
    ax.set_ylabel(str(da.dims[0]).replace("_", " "))
    ax.set_xlabel(str(da.dims[1]).replace("_", " "))
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)


def plot_tuning_drift(result: xr.Dataset) -> Figure:
    """Plot the session x session tuning and population-vector correlations of a drift result.

    Parameters
    ----------
    result : xarray.Dataset
        Output of :func:`netphys.population.tuning_drift`.

    Returns
    -------
    matplotlib.figure.Figure
        Three panels: median per-unit tuning correlation, share of stable units, mean
        population-vector correlation.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from netphys.population._sessions import tuning_drift
    >>> x = np.random.default_rng(0).normal(size=(80, 10))
    >>> act = xr.DataArray(x, dims=("time", "unit"), coords={
    ...     "session": ("time", np.repeat([0, 1], 40)), "label": ("time", np.tile([0, 1], 40))})
    >>> fig = plot_tuning_drift(tuning_drift(act))
    >>> len(fig.axes) >= 3
    True
    """
    func = "plot_tuning_drift"
    names = ("tuning_correlation", "fraction_stable", "population_correlation_mean")
    ds = _check(result, names, func, "tuning_drift()")
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    thr = ds.attrs.get("stable_threshold", 0.5)
    titles = ("median tuning correlation", f"fraction of units with r >= {thr}",
              "population-vector correlation")  # fmt: skip
    for ax, name, title in zip(axes, names, titles, strict=True):
        _matrix(fig, ax, ds[name], title, vmin=0.0 if name == "fraction_stable" else -1.0,
                vmax=1.0, cmap="viridis" if name == "fraction_stable" else "RdBu_r")  # fmt: skip
    return fig


def plot_subspace_alignment(result: xr.Dataset) -> Figure:
    """Plot mean principal angle and captured variance between the sessions' subspaces.

    Parameters
    ----------
    result : xarray.Dataset
        Output of :func:`netphys.population.subspace_alignment`.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels: mean principal angle (degrees) and the variance of session A captured by
        session B's components (relative to A's own).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from netphys.population._sessions import subspace_alignment
    >>> x = np.random.default_rng(0).normal(size=(80, 10))
    >>> act = xr.DataArray(x, dims=("time", "unit"),
    ...                    coords={"session": ("time", np.repeat([0, 1], 40))})
    >>> fig = plot_subspace_alignment(subspace_alignment(act, n_components=3))
    >>> len(fig.axes) >= 2
    True
    """
    func = "plot_subspace_alignment"
    ds = _check(result, ("principal_angle", "captured_variance"), func, "subspace_alignment()")
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    method = str(ds.attrs.get("method", "pca")).upper()
    k = ds.sizes["angle"]
    _matrix(fig, ax1, ds["principal_angle"].mean("angle"),
            f"mean principal angle ({method}, {k} dims), degrees", 0.0, 90.0, "magma")  # fmt: skip
    what = "reliable variance" if method == "SVCA" else "variance"
    _matrix(fig, ax2, ds["captured_variance"], f"{what} of A captured by B's components",
            0.0, 1.0)  # fmt: skip
    return fig


def plot_spectrum_over_sessions(result: xr.Dataset) -> Figure:
    """Plot per-session spectra and their power-law exponents and reliable fractions.

    Parameters
    ----------
    result : xarray.Dataset
        Output of :func:`netphys.population.spectrum_over_sessions`.

    Returns
    -------
    matplotlib.figure.Figure
        Left: PCA explained-variance spectra (log-log), one line per session coloured by
        session order. Middle: PCA and SVCA exponents per session. Right: reliable fraction.

    Examples
    --------
    >>> from netphys.population import simulate_population
    >>> from netphys.population._sessions import spectrum_over_sessions
    >>> a = simulate_population(60, 150, rng=0)["activity"]
    >>> res = spectrum_over_sessions({0: a, 1: a}, n_components=20, fit_range=(2, 15))
    >>> len(plot_spectrum_over_sessions(res).axes)
    3
    """
    func = "plot_spectrum_over_sessions"
    names = ("pca_explained_variance_ratio", "pca_alpha", "svca_alpha", "reliable_fraction")
    ds = _check(result, names, func, "spectrum_over_sessions()")
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    import matplotlib as mpl

    cmap = mpl.colormaps["viridis"]
    ids = ds["session"].values
    n = len(ids)
    comp = ds["component"].values
    for i, sid in enumerate(ids):
        ax1.loglog(comp, ds["pca_explained_variance_ratio"].values[i],
                   color=cmap(i / max(n - 1, 1)), lw=1, label=f"session {sid}")  # fmt: skip
    ax1.set_xlabel("PC")
    ax1.set_ylabel("explained variance ratio")
    ax1.set_title("PCA spectrum per session", fontsize=10)
    if n <= 10:
        ax1.legend(fontsize=7)
    x = np.arange(n)
    ax2.plot(x, ds["pca_alpha"].values, "o-", label="PCA")
    ax2.plot(x, ds["svca_alpha"].values, "s-", label="SVCA (reliable)")
    ax2.set_ylabel("power-law exponent alpha")
    ax2.legend(fontsize=8)
    ax2.set_title("exponent per session", fontsize=10)
    ax3.plot(x, ds["reliable_fraction"].values, "o-", color="tab:green")
    ax3.set_ylim(0, 1)
    ax3.set_ylabel("reliable / total variance (SVCA)")
    ax3.set_title("reliable fraction per session", fontsize=10)
    for ax in (ax2, ax3):
        ax.set_xticks(x, [str(v) for v in ids.tolist()])
        ax.set_xlabel("session")
    return fig


def plot_concept_persistence(result: xr.Dataset) -> Figure:
    """Plot the Jaccard matrix of two sessions' concepts and the shares kept, changed, lost.

    Parameters
    ----------
    result : xarray.Dataset
        Output of :func:`netphys.population.concept_persistence`.

    Returns
    -------
    matplotlib.figure.Figure
        Left: Jaccard index (concept_a x concept_b) with each A concept's match marked and
        coloured by status. Right: fractions kept, changed and lost.

    Examples
    --------
    >>> import xarray as xr
    >>> from netphys.population._sessions import concept_persistence
    >>> a = xr.Dataset({"concept": ("path", [0, 0, 1, 1])}, coords={"path": [1, 2, 3, 4]})
    >>> b = xr.Dataset({"concept": ("path", [0, 0, 1])}, coords={"path": [1, 2, 9]})
    >>> len(plot_concept_persistence(concept_persistence(a, b)).axes) >= 2
    True
    """
    func = "plot_concept_persistence"
    names = ("jaccard", "match", "status", "fraction_kept")
    ds = _check(result, names, func, "concept_persistence()")
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
    jac = ds["jaccard"]
    if jac.size:
        _matrix(fig, ax1, jac, "Jaccard of path sets", 0.0, 1.0, "Greys")
        for i, (j, st) in enumerate(zip(ds["match"].values, ds["status"].values, strict=True)):
            if j >= 0:
                ax1.plot(j, i, "o", mfc="none", mec=_STATUS_COLORS[str(st)], ms=7, mew=1.5)
    else:
        ax1.text(0.5, 0.5, "no concepts", ha="center", va="center", transform=ax1.transAxes)
    shares = [float(ds[f"fraction_{s}"]) for s in _STATUS_COLORS]
    ax2.bar(list(_STATUS_COLORS), shares, color=list(_STATUS_COLORS.values()))
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("share of session A's concepts")
    ax2.set_title(f"{ds.sizes['concept_a']} concepts in A, {ds.sizes['concept_b']} in B",
                  fontsize=10)  # fmt: skip
    return fig
