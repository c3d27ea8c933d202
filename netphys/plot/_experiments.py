"""Overview figures of the experiments (the demo's sessions, the continual-learning methods)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_continual_overview", "plot_session_summary"]


def plot_session_summary(sessions: Sequence[Mapping[str, Any]]) -> Figure:
    """Draw accuracy, mean activity and the PCA exponent across training sessions.

    Parameters
    ----------
    sessions : sequence of dict
        One row per session with ``session``, ``test_accuracy``, ``mean_activity``,
        ``mean_spontaneous_activity`` (or None) and optionally ``pca_alpha``.

    Returns
    -------
    matplotlib.figure.Figure
        Three panels against the session number.

    Examples
    --------
    >>> rows = [{"session": s, "test_accuracy": 0.1 + 0.2 * s, "mean_activity": 1.0,
    ...          "mean_spontaneous_activity": None, "pca_alpha": 1.5} for s in range(3)]
    >>> len(plot_session_summary(rows).axes)
    3
    """
    x = [s["session"] for s in sessions]
    fig = Figure(figsize=(10, 3), layout="constrained")
    axes = fig.subplots(1, 3)
    axes[0].plot(x, [s["test_accuracy"] for s in sessions], "o-")
    axes[0].set_ylabel("held-out accuracy")
    axes[0].set_title("accuracy")
    axes[1].plot(x, [s["mean_activity"] for s in sessions], "o-", label="stimulus")
    spont = [s.get("mean_spontaneous_activity") for s in sessions]
    axes[1].plot(x, [np.nan if v is None else v for v in spont], "o--", label="spontaneous")
    axes[1].set_ylabel("mean unit activity")
    axes[1].set_title("activity")
    axes[1].legend(frameon=False)
    axes[2].plot(x, [s.get("pca_alpha", np.nan) for s in sessions], "o-")
    axes[2].set_ylabel("PCA power-law exponent α")
    axes[2].set_title("eigenspectrum exponent")
    for ax in axes:
        ax.set_xlabel("session (epoch)")
        ax.set_xticks(x)
    return fig


def plot_continual_overview(
    results: Mapping[str, Mapping[str, Any]],
    metrics: Mapping[str, str],
    *,
    reference: int,
) -> Figure:
    """Draw forgetting next to population change, one line per training method.

    Parameters
    ----------
    results : mapping
        Per method, a dict with ``sessions``: rows with ``session``, ``task1_accuracy``,
        ``task2_accuracy`` and the keys of ``metrics``.
    metrics : mapping of str to str
        Row keys to draw (besides the two accuracies) and their panel titles (six at most).
    reference : int
        Last session of task 1 (a dashed line after it).

    Returns
    -------
    matplotlib.figure.Figure
        A 2 x 4 grid of panels against the session number.

    Examples
    --------
    >>> rows = [{"session": s, "task1_accuracy": 1 - s / 4, "task2_accuracy": s / 4}
    ...         for s in range(5)]
    >>> fig = plot_continual_overview({"finetune": {"sessions": rows}}, {}, reference=2)
    >>> len(fig.axes)
    8
    """
    fig = Figure(figsize=(14, 6.5), layout="constrained")
    axes = fig.subplots(2, 4).ravel()
    colors = {"finetune": "tab:red", "replay": "tab:blue", "ewc": "tab:purple"}
    panels = [("task1_accuracy", "task-1 accuracy (forgetting)"),
              ("task2_accuracy", "task-2 accuracy"), *metrics.items()]  # fmt: skip
    for ax, (key, title) in zip(axes, panels, strict=False):
        for i, (method, res) in enumerate(results.items()):
            rows = [r for r in res["sessions"] if key in r]
            ax.plot([r["session"] for r in rows], [r[key] for r in rows], "o-", ms=3,
                    color=colors.get(method, f"C{i}"), label=method)  # fmt: skip
        ax.axvline(reference + 0.5, color="0.5", ls="--", lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("session (epoch)")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    fig.suptitle("task 1 (digits 0-4) | task 2 (digits 5-9): forgetting next to population change")
    return fig
