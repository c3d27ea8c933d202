"""plot_compare: one figure of a compare() result."""

from __future__ import annotations

import pytest

from netphys.plot import plot_compare
from netphys.population import compare, simulate_population


@pytest.fixture(scope="module")
def pair():
    a = simulate_population(120, 1200, alpha=1.0, snr=5.0, timescale=5.0, rng=1)["activity"]
    b = simulate_population(150, 1500, alpha=2.0, snr=5.0, timescale=5.0, rng=2)["activity"]
    return a, b


def test_plot(pair):
    a, b = pair
    fig = plot_compare(compare(a, b, n_units=40, n_frames=400, sort=False, n_boot=0, rng=0))
    assert len(fig.axes) == 6


def test_plot_refuses_other_input(pair):
    with pytest.raises(TypeError, match="plot_compare"):
        plot_compare(pair[0])
