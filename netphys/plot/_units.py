"""The per-unit page: one figure of a unit's tuning, preferred stimuli, sessions, spontaneous."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.gridspec import SubplotSpec

__all__ = ["plot_unit"]

_NEEDS = ("tuning_mean", "tuning_sem", "top_response", "stimulus_mean", "spontaneous_trace")


def plot_unit(profile: xr.Dataset) -> Figure:
    """Draw a unit as a neuroscientist looks at a cell.

    Parameters
    ----------
    profile : xarray.Dataset
        Output of :func:`netphys.experiments.unit_profile`.

    Returns
    -------
    matplotlib.figure.Figure
        Top: tuning curve over labels (mean +- SEM over presentations), the top-k stimuli
        (images when the profile has ``top_image``, else a bar per stimulus id). Bottom:
        stimulus and spontaneous response across sessions, and the spontaneous trace.

    Raises
    ------
    TypeError
        If ``profile`` is not a ``unit_profile`` Dataset.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> prof = xr.Dataset(
    ...     {"tuning_mean": ("label", [1.0, 2.0]), "tuning_sem": ("label", [0.1, 0.2]),
    ...      "top_response": ("rank", [3.0, 2.5]), "top_label": ("rank", [1, 1]),
    ...      "stimulus_mean": ("session", [1.0, 1.5]), "stimulus_sem": ("session", [0.1, 0.1]),
    ...      "spontaneous_mean": ("session", [0.2, 0.3]),
    ...      "spontaneous_sem": ("session", [0.0, 0.0]),
    ...      "spontaneous_trace": ("frame", np.zeros(5))},
    ...     coords={"label": [0, 1], "rank": [1, 2], "top_stimulus": ("rank", [7, 3]),
    ...             "session": [0, 1]}, attrs={"layer": "fc", "unit": 0, "session": 1})
    >>> len(plot_unit(prof).axes)
    4
    """
    if not isinstance(profile, xr.Dataset) or any(k not in profile for k in _NEEDS):
        raise TypeError(
            "plot_unit(): `profile` must be the Dataset of netphys.experiments.unit_profile() "
            f"(with {', '.join(_NEEDS)}); got {type(profile).__name__}."
        )
    a = profile.attrs
    fig = Figure(figsize=(11, 6.5), layout="constrained")
    grid = fig.add_gridspec(2, 2)
    _tuning_panel(fig.add_subplot(grid[0, 0]), profile)
    _top_panel(fig, grid[0, 1], profile)
    _sessions_panel(fig.add_subplot(grid[1, 0]), profile)
    _spontaneous_panel(fig.add_subplot(grid[1, 1]), profile)
    where = ", ".join(f"{k} {a[k]}" for k in ("unit_id", "channel", "y", "x") if k in a)
    fig.suptitle(f"layer {a.get('layer')}, unit {a.get('unit')} ({where})")
    return fig


def _tuning_panel(ax: Axes, p: xr.Dataset) -> None:
    ax.errorbar(
        p["label"].values, p["tuning_mean"].values, yerr=p["tuning_sem"].values,
        fmt="o-", capsize=3,
    )  # fmt: skip
    ax.set(
        title=f"tuning, session {p.attrs.get('session')} (mean ± SEM over presentations)",
        xlabel="label", ylabel="response (a.u.)", xticks=p["label"].values,
    )  # fmt: skip


def _top_panel(fig: Figure, cell: SubplotSpec, p: xr.Dataset) -> None:
    ranks = p["rank"].values
    stim, resp = p["top_stimulus"].values, p["top_response"].values
    labels = p["top_label"].values if "top_label" in p else np.full(len(ranks), -1)
    if "top_image" not in p:
        ax = fig.add_subplot(cell)
        ax.bar(range(len(ranks)), resp)
        ax.set_xticks(range(len(ranks)), [f"#{s}\n({lab})" for s, lab in zip(stim, labels, strict=True)],
                      fontsize=7)  # fmt: skip
        ax.set(title=f"top {len(ranks)} stimuli (id, label)", ylabel="mean response")
        return
    ncols = -(-len(ranks) // 2)
    sub = cell.subgridspec(2, ncols)
    for i, img in enumerate(p["top_image"].values):
        ax = fig.add_subplot(sub[i // ncols, i % ncols])
        ax.imshow(img, cmap="gray_r", interpolation="nearest")
        ax.set_title(f"#{stim[i]} ({labels[i]}): {resp[i]:.2f}", fontsize=7)
        ax.set_axis_off()


def _sessions_panel(ax: Axes, p: xr.Dataset) -> None:
    s = p["session"].values
    for cond, style in (("stimulus", "o-"), ("spontaneous", "s--")):
        ax.errorbar(
            s,
            p[f"{cond}_mean"].values,
            yerr=p[f"{cond}_sem"].values,
            fmt=style,
            capsize=3,
            label=cond,
        )
    ax.set(
        title="mean response across sessions (± SEM)",
        xlabel="session",
        ylabel="response (a.u.)",
        xticks=s,
    )
    ax.legend(frameon=False, fontsize=8)


def _spontaneous_panel(ax: Axes, p: xr.Dataset) -> None:
    trace = p["spontaneous_trace"].values
    if trace.size == 0:
        ax.text(0.5, 0.5, "no spontaneous frames", ha="center", transform=ax.transAxes)
    ax.plot(np.arange(trace.size), trace, lw=0.8, color="0.3")
    ax.set(title=f"spontaneous activity, session {p.attrs.get('session')} (noise frames)",
           xlabel="spontaneous frame", ylabel="response (a.u.)")  # fmt: skip
