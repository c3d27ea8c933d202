"""Readability fixes of the figures: log axes cut at numerical zeros, labelled rasters, concepts."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

from netphys.plot import plot_concept_selectivity, plot_raster
from netphys.plot._compare import _DECADES, _tidy_loglog
from netphys.plot._concepts import MAX_COLORED, _concept_colors


def test_loglog_axis_stops_above_numerical_zeros() -> None:
    fig = Figure()
    ax = fig.add_subplot()
    y = np.r_[np.logspace(0, -3, 20), 1e-20, 1e-18]
    ax.loglog(np.arange(1, 23), y)
    _tidy_loglog(ax)
    lo, hi = ax.get_ylim()
    assert lo >= 10.0**-_DECADES / 1.5 and hi == pytest.approx(1.5)
    fig.canvas.draw()  # one label per decade at most: no overlapping tick labels
    labels = [t for t in ax.get_yticklabels() if t.get_text() and lo <= t.get_position()[1] <= hi]
    assert len(labels) <= _DECADES + 1


def test_raster_names_its_label_groups() -> None:
    x = np.random.default_rng(0).random((9, 4))
    fig = plot_raster(x, labels=[0, 0, 0, 1, 1, 2, 2, 2, 2])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
    np.testing.assert_allclose(ax.get_xticks(), [1.0, 3.5, 6.5])
    with pytest.raises(ValueError, match="one value per sample"):
        plot_raster(x, labels=[0, 1])


def test_only_the_largest_concepts_get_colours() -> None:
    concept = np.repeat(np.arange(15), np.arange(15, 0, -1))  # concept k has 15 - k paths
    colors, handles = _concept_colors(concept, MAX_COLORED)
    grey = np.all(colors[:, :3] == 0.82, axis=1)
    assert set(concept[~grey]) == set(range(MAX_COLORED))  # the 10 largest
    assert set(concept[grey]) == set(range(MAX_COLORED, 15))
    assert handles[-1].get_label() == "5 others"


def test_selectivity_stars_follow_the_given_p_values() -> None:
    sel = xr.Dataset(
        {
            "selectivity": (("concept", "category"), [[0.9, -0.2], [0.1, 0.0], [0.5, 0.4]]),
            "p_value": ("concept", [0.001, 0.001, 0.001]),
            "mass": ("concept", [3.0, 2.0, 1.0]),
            "purity_global": 0.5,
            "nmi": 0.1,
        },
        coords={"concept": [0, 1, 2], "category": [0, 1]},
    )
    fig = plot_concept_selectivity(sel, p_values=[0.01, 0.5, 0.2], alpha=0.05, test="vs control")
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == ["0*", "1", "2"]
    assert "vs control; 1 of 3" in fig.axes[0].get_ylabel()
    with pytest.raises(ValueError, match="one value per concept"):
        plot_concept_selectivity(sel, p_values=[0.1])
