"""Figure of the model-versus-mouse comparison (:func:`netphys.population.compare`)."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["plot_compare"]


#: Log axes show at most this many decades below their largest value (numerical zeros such as
#: 1e-20 otherwise squash the informative part of a spectrum).
_DECADES = 5


def _tidy_loglog(ax: Axes) -> None:
    """Limit a log-log spectrum axis to ``_DECADES`` decades; one tick label per decade."""
    from matplotlib.ticker import LogLocator, NullFormatter

    ys = [ln.get_ydata() for ln in ax.get_lines()]
    values = np.concatenate([np.asarray(y, dtype=float) for y in ys]) if ys else np.array([])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size:
        top = values.max()
        ax.set_ylim(max(values.min(), top * 10.0**-_DECADES) / 1.5, top * 1.5)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, numticks=6))
        axis.set_minor_formatter(NullFormatter())


def plot_compare(result: xr.Dataset) -> Figure:
    """Draw a :func:`netphys.population.compare` result as one figure.

    Parameters
    ----------
    result : xarray.Dataset
        Output of :func:`netphys.population.compare`.

    Returns
    -------
    matplotlib.figure.Figure
        Top row: SVCA reliable spectra, eigenspectra (log-log, with exponents), correlation
        histograms against their shuffle nulls, and a bar chart of participation ratio / N,
        reliable fraction and sparseness. Bottom row: the two rastermap-sorted rasters.

    Examples
    --------
    >>> from netphys.population import compare, simulate_population
    >>> a = simulate_population(40, 300, rng=0)["activity"]
    >>> fig = plot_compare(compare(a, a * 2 + 1, sort=False))
    >>> len(fig.axes) >= 6
    True
    """
    if not isinstance(result, xr.Dataset) or "raster" not in result:
        raise TypeError(
            "plot_compare(): `result` must be the Dataset returned by compare(); "
            f"got {type(result).__name__}."
        )
    labels = [str(v) for v in result["recording"].values]
    colors = ["tab:blue", "tab:orange"]
    fig = Figure(figsize=(14, 7.5), layout="constrained")
    grid = fig.add_gridspec(2, 4, height_ratios=[1, 1.2])
    panels = (
        (
            "svca_reliable",
            "svca_alpha",
            "SVCA reliable variance",
            "SVC",
            "fraction of SVC variance",
        ),
        ("eigen_variance", "eigen_alpha", "eigenspectrum", "PC", "explained variance ratio"),
    )
    for col, (var, alpha, title, xlabel, ylabel) in enumerate(panels):
        ax = fig.add_subplot(grid[0, col])
        for i, lab in enumerate(labels):
            y = result[var].isel(recording=i).values
            k = np.arange(1, len(y) + 1)
            ok = np.isfinite(y) & (y > 0)
            ax.loglog(
                k[ok], y[ok], color=colors[i], label=f"{lab}: α={float(result[alpha][i]):.2f}"
            )
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.legend(fontsize=8)
    for a in fig.axes:
        _tidy_loglog(a)
    ax = fig.add_subplot(grid[0, 2])
    bins = result["corr_bin"].values
    for i, lab in enumerate(labels):
        ax.plot(bins, result["corr_real"].isel(recording=i), color=colors[i], label=lab)
        ax.plot(
            bins,
            result["corr_null"].isel(recording=i),
            color=colors[i],
            ls=":",
            label=f"{lab} shuffled",
        )
    real = result["corr_real"].values + result["corr_null"].values
    nz = np.flatnonzero(real.sum(axis=0) > 0)
    if nz.size:
        ax.set_xlim(bins[nz[0]], bins[nz[-1]])
    ax.set(title="pairwise correlations", xlabel="correlation", ylabel="fraction of pairs")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[0, 3])
    keys = [
        ("participation_ratio_per_unit", "PR / N"),
        ("svca_reliable_fraction", "reliable"),
        ("sparsity", "sparseness"),
    ]
    xs = np.arange(len(keys))
    for i, lab in enumerate(labels):
        ax.bar(
            xs + (i - 0.5) * 0.38,
            [float(result[k][i]) for k, _ in keys],
            width=0.38,
            color=colors[i],
            label=lab,
        )
    ax.set_xticks(xs, [name for _, name in keys])
    ax.set(title=f"N={int(result.attrs['n_units'])}, T={int(result.attrs['n_frames'])}")
    ax.legend(fontsize=8)
    for i, lab in enumerate(labels):
        ax = fig.add_subplot(grid[1, 2 * i : 2 * i + 2])
        ax.imshow(
            result["raster"].isel(recording=i).values,
            aspect="auto",
            cmap="gray_r",
            vmin=0,
            vmax=2,
            interpolation="nearest",
        )
        ax.set(title=f"{lab}: rastermap-sorted units", xlabel="frame", ylabel="unit (sorted)")
    return fig
