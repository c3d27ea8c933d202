"""Tests of the population figures: each returns a Figure with the expected content."""

from __future__ import annotations

import io

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

from netphys import plot as plots
from netphys.population import (
    category_autocorrelation,
    correlation_matrix,
    eigenspectrum,
    rastermap_sort,
    reduced_rank_regression,
    shuffle_null,
    simulate_population,
    svca,
    svca_predict,
)


@pytest.fixture(scope="module")
def sim() -> xr.Dataset:
    return simulate_population(80, 600, snr=3.0, n_categories=3, rng=0)


def rendered(fig: Figure) -> Figure:
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getbuffer().nbytes > 1000
    return fig


def test_raster(sim: xr.Dataset) -> None:
    order = rastermap_sort(sim["activity"])
    fig = rendered(plots.plot_raster(sim["activity"], order=order, bin_size=2))
    assert fig.axes[0].images[0].get_array().shape == (40, 600)


def test_correlation_matrices(sim: xr.Dataset) -> None:
    a = correlation_matrix(sim["activity"][:300])
    b = correlation_matrix(sim["activity"][300:])
    fig = rendered(plots.plot_correlation_matrix({"first": a, "second": b}))
    assert [ax.get_title() for ax in fig.axes[:2]] == ["first", "second"]


def test_shuffle_null_plot(sim: xr.Dataset) -> None:
    fig = rendered(plots.plot_shuffle_null(shuffle_null(sim["activity"], min_shift=100, rng=0)))
    assert len(fig.axes[0].lines) == 2 + 4  # two histograms, 5th/95th percentiles of each


def test_spectra_and_reliable_fraction(sim: xr.Dataset) -> None:
    res = {
        "a": svca(sim["activity"], block_length=10, fit_range=(2, 20)),
        "b": eigenspectrum(sim["activity"], fit_range=(2, 20)),
    }
    fig = rendered(plots.plot_spectra(res))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("a α=")
    assert len(fig.axes[0].lines) == 4
    fig = rendered(plots.plot_reliable_fraction({"a": res["a"]}))
    np.testing.assert_allclose(
        fig.axes[0].lines[0].get_ydata(), 100 * res["a"]["reliable_fraction"].values
    )


def test_rrr_and_category(sim: xr.Dataset) -> None:
    rrr = reduced_rank_regression(sim["behaviour"], sim["activity"], rng=0)
    rendered(plots.plot_rrr(rrr))
    pred = svca_predict(sim["activity"], sim["behaviour"], n_components=10, block_length=10)
    fig = rendered(plots.plot_rrr(pred))
    np.testing.assert_allclose(
        fig.axes[0].lines[0].get_ydata(), pred["explained_fraction_128"].values
    )
    fig = rendered(plots.plot_category_autocorrelation(category_autocorrelation(sim["activity"])))
    assert fig.axes[0].get_title().startswith("within")


def test_errors(sim: xr.Dataset) -> None:
    with pytest.raises(TypeError, match=r"plot_spectra\(\): `results` must be a Dataset or a dict"):
        plots.plot_spectra([1, 2])
    with pytest.raises(
        ValueError, match=r"lacks \['reliable_fraction'\]; pass the Dataset returned by svca"
    ):
        plots.plot_reliable_fraction(xr.Dataset())
    with pytest.raises(ValueError, match=r"no spectrum variable"):
        plots.plot_spectra(xr.Dataset())
