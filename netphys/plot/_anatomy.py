"""Figures of sparseness and weight spectra ("anatomy"), per session and across widths."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from scipy import stats

__all__ = ["plot_anatomy_sessions", "plot_weight_spectra", "plot_width_sweep"]


def _need(ds: Any, names: tuple[str, ...], func: str, source: str) -> xr.Dataset:
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"{func}(): expected the Dataset of {source}; got {type(ds).__name__}.")
    missing = [n for n in names if n not in ds]
    if missing:
        raise ValueError(f"{func}(): the Dataset lacks {missing}; pass the result of {source}.")
    return ds


def _mp_density(x: np.ndarray, sigma2: float, q: float) -> np.ndarray:
    """Marchenko-Pastur density of eigenvalues of W^T W / N, ratio 1/q, element variance sigma2."""
    r = 1.0 / q
    lo, hi = sigma2 * (1 - np.sqrt(r)) ** 2, sigma2 * (1 + np.sqrt(r)) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.sqrt(np.maximum((hi - x) * (x - lo), 0)) / (2 * np.pi * sigma2 * r * x)
    return np.where((x > lo) & (x < hi), d, 0.0)


def plot_weight_spectra(result: xr.Dataset, *, session: Any = None) -> Figure:
    """Plot each layer's eigenvalue density with its Marchenko-Pastur fit and power-law tail.

    Parameters
    ----------
    result : xarray.Dataset
        Output of :func:`netphys.population.weight_spectra` or :func:`netphys.anatomy`.
    session : optional
        Session to draw when ``result`` has a ``session`` dim (default: the last).

    Returns
    -------
    matplotlib.figure.Figure
        One log-log panel per layer: histogram of the ESD, the MP density of the same shape
        and scale, the spike threshold, and the fitted tail ``x^-alpha`` from ``xmin``.

    Examples
    --------
    >>> import numpy as np
    >>> from netphys.population import weight_spectra
    >>> rng = np.random.default_rng(0)
    >>> ds = weight_spectra({"a": rng.standard_normal((80, 40)), "b": rng.standard_normal((60, 30))})
    >>> len(plot_weight_spectra(ds).axes)
    2
    """
    func = "plot_weight_spectra"
    ds = _need(result, ("eigenvalue", "sigma2", "aspect_ratio", "alpha", "xmin"), func,
               "weight_spectra()")  # fmt: skip
    if "session" in ds.dims:
        ds = ds.sel(session=ds["session"].values[-1] if session is None else session)
    layers = ds["layer"].values if "layer" in ds.dims else [None]
    fig = Figure(figsize=(3.2 * len(layers), 3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(layers)))
    for ax, layer in zip(axes, layers, strict=True):
        row = ds if layer is None else ds.sel(layer=layer)
        eig = row["eigenvalue"].values
        eig = eig[np.isfinite(eig) & (eig > 0)]
        bins = np.geomspace(eig.min(), eig.max() * 1.001, max(8, min(40, len(eig) // 2)))
        ax.hist(eig, bins=bins, density=True, color="0.6", label=f"ESD ({len(eig)} eig.)")
        s2, q = float(row["sigma2"]), float(row["aspect_ratio"])
        x = np.geomspace(bins[0], bins[-1], 400)
        ax.plot(x, _mp_density(x, s2, q), color="tab:blue", label="Marchenko-Pastur")
        if "spike_threshold" in row:
            ax.axvline(float(row["spike_threshold"]), color="tab:blue", ls="--", lw=1)
        alpha, xmin = float(row["alpha"]), float(row["xmin"])
        if np.isfinite(alpha):
            tail = eig[eig >= xmin]
            xs = np.geomspace(xmin, eig.max(), 50)
            # tail density scaled to the share of eigenvalues in the tail
            ax.plot(xs, (len(tail) / len(eig)) * (alpha - 1) / xmin * (xs / xmin) ** -alpha,
                    color="tab:red", label=f"tail α={alpha:.2f}")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue of WᵀW/N")
        title = "" if layer is None else str(layer)
        n_sp = int(row["n_spikes"]) if "n_spikes" in row else 0
        ax.set_title(f"{title}  ({n_sp} spikes)", fontsize=10)
        ax.legend(frameon=False, fontsize=7)
    axes[0].set_ylabel("density")
    return fig


def plot_anatomy_sessions(sparseness: xr.Dataset, weights: xr.Dataset | None = None) -> Figure:
    """Plot sparseness per layer and weight-spectrum numbers per layer across sessions.

    Parameters
    ----------
    sparseness : xarray.Dataset
        Output of :func:`netphys.population.sparseness_summary` with dims (session, layer).
    weights : xarray.Dataset, optional
        Output of :func:`netphys.population.weight_spectra` with dims (session, layer).

    Returns
    -------
    matplotlib.figure.Figure
        Population sparseness, fraction active and lifetime kurtosis per layer; with
        ``weights`` also the tail exponent alpha and the number of spikes per weight layer.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> sp = xr.Dataset({k: (("session", "layer"), np.ones((3, 2))) for k in
    ...                  ("population_sparseness", "fraction_active", "lifetime_kurtosis")},
    ...                 coords={"session": [0, 1, 2], "layer": ["a", "b"]})
    >>> len(plot_anatomy_sessions(sp).axes)
    3
    """
    func = "plot_anatomy_sessions"
    sp = _need(sparseness, ("population_sparseness", "fraction_active", "lifetime_kurtosis"),
               func, "sparseness_summary(by=('session', 'layer'))")  # fmt: skip
    panels: list[tuple[xr.Dataset, str, str]] = [
        (sp, "population_sparseness", "population sparseness (stimulus)"),
        (sp, "fraction_active", "fraction of units active"),
        (sp, "lifetime_kurtosis", "lifetime kurtosis (median unit)"),
    ]
    if weights is not None:
        _need(weights, ("alpha", "n_spikes"), func, "weight_spectra()")
        panels += [(weights, "alpha", "weight ESD tail exponent α"),
                   (weights, "n_spikes", "eigenvalues above MP edge")]  # fmt: skip
    fig = Figure(figsize=(3.2 * len(panels), 3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (ds, name, title) in zip(axes, panels, strict=True):
        for i, layer in enumerate(ds["layer"].values):
            da = ds[name].sel(layer=layer)
            ax.plot(ds["session"].values, da.values, "o-", ms=3, color=f"C{i}", label=str(layer))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("session (epoch)")
        ax.legend(frameon=False, fontsize=7)
    return fig


_WIDTH_PANELS = (
    ("test_accuracy", None, "held-out accuracy"),
    ("population_sparseness", "population_sparseness_init", "population sparseness"),
    ("fraction_active", "fraction_active_init", "fraction of units active"),
    ("n_concepts", "n_concepts_control", "number of concepts"),
    ("purity", "purity_control", "concept purity"),
    ("svca_alpha", None, "SVCA reliable-variance α"),
    ("weight_alpha_fc1", "weight_alpha_fc1_init", "fc1 weight ESD tail α"),
    ("weight_n_spikes", None, "weight eigenvalues above MP edge"),
)


def _mean_ci(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds (axis 1) and the half-width of the 95% t-interval (0 for one seed)."""
    mean = np.nanmean(values, axis=1)
    n = np.isfinite(values).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.nanstd(values, axis=1, ddof=1) if values.shape[1] > 1 else np.zeros(len(mean))
        half = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sd / np.sqrt(n), 0.0)
    return mean, half


def plot_width_sweep(table: xr.Dataset) -> Figure:
    """Plot the width experiment: each metric against width, mean and 95% interval over seeds.

    Parameters
    ----------
    table : xarray.Dataset
        Dims (``width``, ``seed``), one variable per metric (see
        :func:`netphys.experiments.run_width`); missing variables leave their panel empty.

    Returns
    -------
    matplotlib.figure.Figure
        Eight panels; the trained networks in black, the untrained (session 0) or
        re-initialised control in grey; single seeds as dots.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> t = xr.Dataset({"test_accuracy": (("width", "seed"), np.full((2, 3), 0.9))},
    ...                coords={"width": [4, 8], "seed": [0, 1, 2]})
    >>> len(plot_width_sweep(t).axes)
    8
    """
    ds = _need(table, (), "plot_width_sweep", "run_width()")
    if "width" not in ds.dims or "seed" not in ds.dims:
        raise ValueError(
            f"plot_width_sweep(): `table` needs dims (width, seed); got {dict(ds.sizes)}."
        )
    w = ds["width"].values
    fig = Figure(figsize=(13, 6), layout="constrained")
    axes = fig.subplots(2, 4).ravel()
    for ax, (name, control, title) in zip(axes, _WIDTH_PANELS, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xscale("log", base=2)
        ax.set_xticks(w, [str(v) for v in w])
        ax.set_xlabel("width (conv1 channels)")
        for var, color, label in ((control, "0.6", "untrained / control"), (name, "k", "trained")):
            if var is None or var not in ds:
                continue
            vals = ds[var].transpose("width", "seed").values.astype(float)
            mean, half = _mean_ci(vals)
            ax.errorbar(w, mean, yerr=half, color=color, marker="o", ms=4, capsize=3, label=label)
            for j in range(vals.shape[1]):
                ax.plot(w, vals[:, j], ".", color=color, alpha=0.4, ms=4)
        if control is not None and control in ds:
            ax.legend(frameon=False, fontsize=7)
    n_seeds = ds.sizes["seed"]
    fig.suptitle(f"demo CNN versus width: mean and 95% interval over {n_seeds} seed(s)")
    return fig
