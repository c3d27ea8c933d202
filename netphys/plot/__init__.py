"""Every matplotlib figure of netphys.

Each ``plot_*`` function takes a result (an xarray Dataset of :mod:`netphys.population`) and
returns a :class:`matplotlib.figure.Figure` built without pyplot: nothing stays open, no backend
is chosen here, and in a notebook the figure shows as an image when it is the cell's value.
"""

from __future__ import annotations

from netphys.plot._anatomy import plot_anatomy_sessions, plot_weight_spectra, plot_width_sweep
from netphys.plot._compare import plot_compare
from netphys.plot._concepts import plot_concept_selectivity, plot_path_embedding, plot_path_raster
from netphys.plot._experiments import plot_continual_overview, plot_session_summary
from netphys.plot._population import (
    plot_category_autocorrelation,
    plot_correlation_matrix,
    plot_raster,
    plot_reliable_fraction,
    plot_rrr,
    plot_rrr_sessions,
    plot_shuffle_null,
    plot_spectra,
)
from netphys.plot._scaling import plot_scaling
from netphys.plot._sessions import (
    plot_concept_persistence,
    plot_spectrum_over_sessions,
    plot_subspace_alignment,
    plot_tuning_drift,
)
from netphys.plot._units import plot_unit

__all__ = [  # noqa: RUF022 - grouped by topic
    # population analyses
    "plot_raster",
    "plot_spectra",
    "plot_reliable_fraction",
    "plot_correlation_matrix",
    "plot_shuffle_null",
    "plot_rrr",
    "plot_rrr_sessions",
    "plot_category_autocorrelation",
    "plot_scaling",
    # paths and concepts
    "plot_path_raster",
    "plot_path_embedding",
    "plot_concept_selectivity",
    # across sessions
    "plot_tuning_drift",
    "plot_subspace_alignment",
    "plot_spectrum_over_sessions",
    "plot_concept_persistence",
    # one unit
    "plot_unit",
    # model versus mouse
    "plot_compare",
    # sparseness and weight spectra ("anatomy")
    "plot_weight_spectra",
    "plot_anatomy_sessions",
    "plot_width_sweep",
    # experiment overviews
    "plot_session_summary",
    "plot_continual_overview",
]
