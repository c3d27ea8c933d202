"""Figures of the population analyses (matplotlib; each function returns the Figure).

Figures are created with :class:`matplotlib.figure.Figure`, not pyplot, so nothing stays
open in a global registry; pass ``ax`` to draw into an existing axes instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from netphys._validation import check_population

__all__ = [
    "plot_category_autocorrelation",
    "plot_correlation_matrix",
    "plot_raster",
    "plot_reliable_fraction",
    "plot_rrr",
    "plot_rrr_sessions",
    "plot_shuffle_null",
    "plot_spectra",
]

_SPECTRUM_VARIABLES = ("reliable_variance", "signal_variance", "variance", "spectrum")


def _axes(ax: Axes | None, figsize: tuple[float, float] = (5.0, 4.0)) -> tuple[Figure, Axes]:
    if ax is not None:
        fig = ax.get_figure()
        assert isinstance(fig, Figure)
        return fig, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _as_mapping(results: Any, func: str) -> dict[str, xr.Dataset]:
    if isinstance(results, xr.Dataset):
        return {"": results}
    if isinstance(results, Mapping) and all(isinstance(v, xr.Dataset) for v in results.values()):
        return {str(k): v for k, v in results.items()}
    raise TypeError(
        f"{func}(): `results` must be a Dataset or a dict of Datasets (label -> result); got "
        f"{type(results).__name__}."
    )


def _check_vars(ds: xr.Dataset, names: tuple[str, ...], func: str, source: str) -> None:
    missing = [n for n in names if n not in ds]
    if missing:
        raise ValueError(
            f"{func}(): the result lacks {missing}; pass the Dataset returned by {source}."
        )


def plot_raster(
    activity: Any,
    *,
    order: Any = None,
    bin_size: int = 1,
    vmax: float = 1.5,
    labels: Any = None,
    ax: Axes | None = None,
) -> Figure:
    """Plot z-scored activity as a units x samples image, optionally sorted.

    Parameters
    ----------
    activity : numpy.ndarray or xarray.DataArray with dims (sample, 'unit')
        Population activity (loaded into memory).
    order : xarray.Dataset, array-like of int or None, default=None
        Unit order (positions into the unit axis), or the result of
        :func:`~netphys.population.rastermap_sort`.
    bin_size : int, default=1
        Average this many consecutive units (after sorting) per row.
    vmax : float, default=1.5
        Upper colour limit in z units (lower limit 0, as in rastermap figures).
    labels : array-like or None, default=None
        One category per sample, for samples already grouped by category: the groups are
        separated by lines and named on the x axis (e.g. the digit shown).
    ax : matplotlib.axes.Axes or None, default=None
        Axes to draw into; a new Figure otherwise.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.

    Examples
    --------
    >>> import numpy as np
    >>> fig = plot_raster(np.random.default_rng(0).standard_normal((50, 20)))
    """
    da = check_population(activity, func="plot_raster")
    x = np.asarray(da.values, dtype=np.float64).T
    sd = x.std(axis=1, keepdims=True)
    x = (x - x.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
    if order is not None:
        idx = order["order_index"].values if isinstance(order, xr.Dataset) else np.asarray(order)
        x = x[idx]
    if bin_size > 1:
        n = x.shape[0] // bin_size * bin_size
        x = x[:n].reshape(-1, bin_size, x.shape[1]).mean(axis=1)
    fig, ax = _axes(ax, (8.0, 4.0))
    im = ax.imshow(x, aspect="auto", cmap="gray_r", vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_xlabel(str(da.dims[0]))
    ax.set_ylabel("units" + (" (sorted)" if order is not None else ""))
    if labels is not None:
        _label_groups(ax, np.asarray(labels), x.shape[1])
    fig.colorbar(im, ax=ax, label="z-score")
    return fig


def _label_groups(ax: Axes, labels: np.ndarray, n: int) -> None:
    """Mark runs of equal labels along x: a line between runs, the label at each run's centre."""
    if labels.shape != (n,):
        raise ValueError(
            f"plot_raster(): `labels` needs one value per sample ({n}); got shape {labels.shape}."
        )
    starts = np.r_[0, np.flatnonzero(labels[1:] != labels[:-1]) + 1]
    stops = np.r_[starts[1:], n]
    for s in starts[1:]:
        ax.axvline(s - 0.5, color="tab:red", lw=0.6)
    ax.set_xticks((starts + stops - 1) / 2, [str(v) for v in labels[starts]])


def plot_correlation_matrix(results: Any, *, ax: Axes | None = None) -> Figure:
    """Plot correlation matrices side by side (results of ``correlation_matrix``).

    Parameters
    ----------
    results : xarray.Dataset or dict of str to xarray.Dataset
        One result or several labelled ones.
    ax : matplotlib.axes.Axes or None, default=None
        Axes to draw into (single result only).

    Returns
    -------
    matplotlib.figure.Figure
        The figure.

    Examples
    --------
    >>> import numpy as np
    >>> from netphys.population import correlation_matrix
    >>> fig = plot_correlation_matrix(correlation_matrix(np.random.default_rng(0).random((30, 5))))
    """
    func = "plot_correlation_matrix"
    res = _as_mapping(results, func)
    if ax is not None and len(res) == 1:
        fig, axes = _axes(ax)[0], [ax]
    else:
        fig = Figure(figsize=(4.0 * len(res), 3.6), layout="constrained")
        axes = [fig.add_subplot(1, len(res), i + 1) for i in range(len(res))]
    im = None
    for a, (label, ds) in zip(axes, res.items(), strict=True):
        _check_vars(ds, ("correlation",), func, "correlation_matrix()")
        im = a.imshow(ds["correlation"].values, cmap="RdBu_r", vmin=-1, vmax=1)
        a.set_title(label or "correlation")
        a.set_xlabel("unit")
        a.set_ylabel("unit")
    if im is not None:
        fig.colorbar(im, ax=axes, label="Pearson r")
    return fig


def plot_shuffle_null(result: xr.Dataset, *, ax: Axes | None = None) -> Figure:
    """Plot histograms of real and circularly shifted pairwise correlations (log counts).

    Parameters
    ----------
    result : xarray.Dataset
        The result of :func:`~netphys.population.shuffle_null`.
    ax : matplotlib.axes.Axes or None, default=None
        Axes to draw into; a new Figure otherwise.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.

    Examples
    --------
    >>> import numpy as np
    >>> from netphys.population import shuffle_null
    >>> x = np.random.default_rng(0).standard_normal((200, 10))
    >>> fig = plot_shuffle_null(shuffle_null(x, min_shift=20, rng=0))
    """
    func = "plot_shuffle_null"
    _check_vars(result, ("real_count", "null_count", "bin"), func, "shuffle_null()")
    fig, ax = _axes(ax)
    centres = result["bin"].values
    for name, colour, label in (("real_count", "k", "real"), ("null_count", "tab:red", "shifted")):
        counts = result[name].values.astype(float)
        ax.plot(centres, np.log10(np.where(counts > 0, counts, np.nan)), color=colour, label=label)
    for name, colour in (("real_percentiles", "k"), ("null_percentiles", "tab:red")):
        p = result[name].sel(percentile=[5.0, 95.0]).values
        for v in p:
            ax.axvline(v, color=colour, lw=0.8, ls="--")
    ax.set_xlabel("pairwise correlation")
    ax.set_ylabel("log10 count")
    ax.set_title(f"spread ratio {float(result['spread_ratio']):.2f}")
    ax.legend(frameon=False)
    return fig


def plot_spectra(results: Any, *, variable: str | None = None, ax: Axes | None = None) -> Figure:
    """Plot normalised spectra on log-log axes with their power-law fits.

    Parameters
    ----------
    results : xarray.Dataset or dict of str to xarray.Dataset
        Results of :func:`~netphys.population._svca`, :func:`~netphys.population._cvpca`,
        :func:`~netphys.population.eigenspectrum` or
        :func:`~netphys.population.fit_power_law`, optionally labelled (e.g. per session).
    variable : str or None, default=None
        Spectrum variable; None picks the first of ``reliable_variance``, ``signal_variance``,
        ``variance``, ``spectrum`` that exists.
    ax : matplotlib.axes.Axes or None, default=None
        Axes to draw into; a new Figure otherwise.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.

    Examples
    --------
    >>> import numpy as np
    >>> from netphys.population import fit_power_law
    >>> fig = plot_spectra(fit_power_law(np.arange(1, 200) ** -1.0, fit_range=(2, 100)))
    """
    func = "plot_spectra"
    res = _as_mapping(results, func)
    fig, ax = _axes(ax)
    for i, (label, ds) in enumerate(res.items()):
        name = variable or next((v for v in _SPECTRUM_VARIABLES if v in ds), None)
        if name is None or name not in ds:
            raise ValueError(
                f"{func}(): no spectrum variable ({', '.join(_SPECTRUM_VARIABLES)}) in result "
                f"{label!r}; pass `variable=`."
            )
        ss = ds[name].values.astype(float)
        n = np.arange(1, len(ss) + 1)
        total = np.nansum(ss[ss > 0])
        colour = f"C{i % 10}"
        alpha = float(ds["alpha"]) if "alpha" in ds else np.nan
        text = f"{label} " if label else ""
        ax.loglog(
            n,
            np.where(ss > 0, ss / total, np.nan),
            color=colour,
            lw=1,
            label=f"{text}α={alpha:.2f}",
        )
        if "fitted" in ds and np.isfinite(alpha):
            lo, hi = int(ds["fit_start"]), int(ds["fit_stop"])
            fitted = ds["fitted"].values[lo - 1 : hi] / total
            ax.loglog(n[lo - 1 : hi], fitted, color=colour, ls="--", lw=1.5)
    ax.set_xlabel("dimension")
    ax.set_ylabel("variance (normalised)")
    ax.legend(frameon=False, fontsize="small")
    return fig


def plot_reliable_fraction(results: Any, *, ax: Axes | None = None) -> Figure:
    """Plot the reliable share of variance per SVC (results of ``svca``), in percent.

    Parameters
    ----------
    results : xarray.Dataset or dict of str to xarray.Dataset
        One :func:`~netphys.population._svca` result or several labelled ones.
    ax : matplotlib.axes.Axes or None, default=None
        Axes to draw into; a new Figure otherwise.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.

    Examples
    --------
    >>> from netphys.population import simulate_population, svca
    >>> sim = simulate_population(100, 400, snr=5.0, rng=0)
    >>> fig = plot_reliable_fraction(svca(sim["activity"], block_length=10, n_components=20))
    """
    func = "plot_reliable_fraction"
    res = _as_mapping(results, func)
    fig, ax = _axes(ax)
    for i, (label, ds) in enumerate(res.items()):
        _check_vars(ds, ("reliable_fraction",), func, "svca()")
        ax.semilogx(
            ds["component"].values,
            100 * ds["reliable_fraction"].values,
            color=f"C{i % 10}",
            label=label or None,
        )
    ax.set_xlabel("SVC")
    ax.set_ylabel("% reliable variance")
    ax.axhline(0, color="0.6", lw=0.5)
    if len(res) > 1 or next(iter(res)):
        ax.legend(frameon=False, fontsize="small")
    return fig


def plot_rrr(result: xr.Dataset, *, ax: Axes | None = None) -> Figure:
    """Plot variance explained against RRR rank.

    Parameters
    ----------
    result : xarray.Dataset
        The result of :func:`~netphys.population.reduced_rank_regression` (variance explained
        per rank) or of :func:`~netphys.population.svca_predict` (share of the reliable
        variance of SVCs 1-128 explained, per rank).
    ax : matplotlib.axes.Axes or None, default=None
        Axes to draw into; a new Figure otherwise.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.

    Examples
    --------
    >>> import numpy as np
    >>> from netphys.population import reduced_rank_regression
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((100, 4))
    >>> fig = plot_rrr(reduced_rank_regression(x, x @ rng.standard_normal((4, 6)), rng=0))
    """
    func = "plot_rrr"
    fig, ax = _axes(ax)
    if "explained_fraction_128" in result:
        y, label = result["explained_fraction_128"], "explained share of reliable variance"
    elif "variance_explained" in result:
        y, label = result["variance_explained"], "cross-validated variance explained"
    else:
        raise ValueError(
            f"{func}(): pass the result of reduced_rank_regression() or svca_predict()."
        )
    ax.semilogx(result["rank"].values, y.values, "o-", color="k", base=2)
    ax.set_xlabel("rank")
    ax.set_ylabel(label)
    return fig


def plot_category_autocorrelation(result: xr.Dataset, *, ax: Axes | None = None) -> Figure:
    """Plot mean PCA-projection correlation between and within categories.

    Parameters
    ----------
    result : xarray.Dataset
        The result of :func:`~netphys.population.category_autocorrelation`.
    ax : matplotlib.axes.Axes or None, default=None
        Axes to draw into; a new Figure otherwise.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.

    Examples
    --------
    >>> from netphys.population import category_autocorrelation, simulate_population
    >>> sim = simulate_population(50, 200, n_categories=3, rng=0)
    >>> fig = plot_category_autocorrelation(category_autocorrelation(sim["activity"]))
    """
    func = "plot_category_autocorrelation"
    _check_vars(result, ("category_correlation",), func, "category_autocorrelation()")
    fig, ax = _axes(ax)
    mat = result["category_correlation"].values
    lim = float(np.nanmax(np.abs(mat))) or 1.0
    im = ax.imshow(mat, cmap="RdBu_r", vmin=-lim, vmax=lim)
    cats = result["category"].values
    if len(cats) <= 20:
        ax.set_xticks(range(len(cats)), [str(c) for c in cats])
        ax.set_yticks(range(len(cats)), [str(c) for c in cats])
    ax.set_xlabel("category")
    ax.set_ylabel("category")
    ax.set_title(f"within {float(result['within']):.2f}, across {float(result['across']):.2f}")
    fig.colorbar(im, ax=ax, label="mean correlation")
    return fig


def plot_rrr_sessions(results: Mapping[str, xr.Dataset]) -> Figure:
    """Draw several :func:`~netphys.population.svca_predict` results on one axis, one per label.

    Parameters
    ----------
    results : mapping of str to xarray.Dataset
        Label (e.g. ``"session 3"``) to a reduced-rank regression result.

    Returns
    -------
    matplotlib.figure.Figure
        Explained fraction against rank, one coloured line per result.

    Examples
    --------
    >>> from netphys.population import reduced_rank_regression
    >>> import numpy as np
    >>> gen = np.random.default_rng(0)
    >>> x = gen.standard_normal((200, 5))
    >>> res = reduced_rank_regression(x, x @ gen.standard_normal((5, 8)), ranks=[1, 2, 3])
    >>> len(plot_rrr_sessions({"a": res, "b": res}).axes[0].lines)
    2
    """
    fig, ax = _axes(None)
    for i, (key, res) in enumerate(results.items()):
        plot_rrr(res, ax=ax)
        ax.lines[-1].set_color(f"C{i % 10}")
        ax.lines[-1].set_label(str(key))
    ax.legend(frameon=False, fontsize="small")
    return fig
