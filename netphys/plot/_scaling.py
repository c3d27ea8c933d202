"""Figure of the scaling analysis: reliable variance and dimensions versus units sampled."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

__all__ = ["plot_scaling"]


def plot_scaling(result: xr.Dataset) -> Figure:
    """Plot the number of significant SVCs and the reliable fraction against units sampled.

    Parameters
    ----------
    result : xarray.Dataset
        The result of :func:`netphys.population.scaling_analysis`.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels (log-log significant SVCs; reliable fraction), repeats as dots, mean as line.

    Raises
    ------
    ValueError
        When ``result`` lacks the scaling variables.

    Examples
    --------
    >>> from netphys.population import scaling_analysis, simulate_population
    >>> sim = simulate_population(120, 400, snr=5.0, rng=0)
    >>> res = scaling_analysis(sim["activity"], sizes=[40, 120], n_repeats=1, n_null=0,
    ...                        n_components=10, block_length=20)
    >>> len(plot_scaling(res).axes)
    2
    """
    needed = ("n_significant", "reliable_fraction")
    if not isinstance(result, xr.Dataset) or any(v not in result for v in needed):
        raise ValueError(
            "plot_scaling(): `result` must be the Dataset returned by scaling_analysis() "
            f"(with {list(needed)})."
        )
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    n = np.asarray(result["n_units"].values)
    labels = {"n_significant": "significant SVCs", "reliable_fraction": "reliable fraction"}
    for ax, name in zip(fig.subplots(1, 2), needed, strict=True):
        vals = np.asarray(result[name].values, dtype=float)
        for r in range(vals.shape[1]):
            ax.plot(n, vals[:, r], "o", color="0.6", ms=3)
        ax.plot(n, vals.mean(axis=1), "-", color="C0", lw=2)
        ax.set_xscale("log")
        if name == "n_significant" and (vals > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel("units sampled")
        ax.set_ylabel(labels[name])
    fig.suptitle(f"scaling ({result.attrs.get('sampling', '')})")
    return fig
