"""Population analyses on (sample, unit) arrays: numpy, scipy, scikit-learn, dask, rastermap.

Never imports torch. Every function takes a numpy array or an xarray DataArray with dims
(sample, 'unit') and returns labelled xarray objects.
"""

from __future__ import annotations

__all__: list[str] = []

# --- population analyses (issue 3) ---------------------------------------------------------
from netphys.population.cvpca import cvpca, repeat_responses
from netphys.population.nulls import shuffle_null
from netphys.population.powerlaw import fit_power_law
from netphys.population.report import population_report
from netphys.population.rrr import ReducedRankRegression, reduced_rank_regression, svca_predict
from netphys.population.simulate import simulate_population
from netphys.population.sorting import rastermap_sort
from netphys.population.spectra import category_autocorrelation, correlation_matrix, eigenspectrum
from netphys.population.svca import split_time_blocks, split_units, svca

__all__ += [
    "ReducedRankRegression",
    "category_autocorrelation",
    "correlation_matrix",
    "cvpca",
    "eigenspectrum",
    "fit_power_law",
    "population_report",
    "rastermap_sort",
    "reduced_rank_regression",
    "repeat_responses",
    "shuffle_null",
    "simulate_population",
    "split_time_blocks",
    "split_units",
    "svca",
    "svca_predict",
]

# --- paths and concepts (issue 4) ----------------------------------------------------------
from netphys.population.concept_plots import (  # noqa: E402
    plot_concept_selectivity,
    plot_path_embedding,
    plot_path_raster,
)
from netphys.population.concepts import (  # noqa: E402
    as_sparse,
    class_path_overlap,
    concept_activity,
    concept_selectivity,
    edge_matrix,
    path_classifier_agreement,
    path_concepts,
    path_embedding,
    path_matrix,
    unit_matrix,
)
from netphys.population.paths import (  # noqa: E402
    effective_paths,
    flow_kernel,
    mean_field_contributions,
    path_flow,
    path_transitions,
    top_paths,
)

__all__ += [
    "as_sparse",
    "class_path_overlap",
    "concept_activity",
    "concept_selectivity",
    "edge_matrix",
    "effective_paths",
    "flow_kernel",
    "mean_field_contributions",
    "path_classifier_agreement",
    "path_concepts",
    "path_embedding",
    "path_flow",
    "path_matrix",
    "path_transitions",
    "plot_concept_selectivity",
    "plot_path_embedding",
    "plot_path_raster",
    "top_paths",
    "unit_matrix",
]

# --- real data comparison, calcium model (issue 5) -----------------------------------------
from netphys.population.calcium import INDICATOR_TAU, simulate_calcium  # noqa: E402
from netphys.population.compare import compare, compare_files, plot_compare  # noqa: E402

__all__ += ["INDICATOR_TAU", "compare", "compare_files", "plot_compare", "simulate_calcium"]

# --- learning across sessions (issue 6) ----------------------------------------------------
from netphys.population.session_plots import (  # noqa: E402
    plot_concept_persistence,
    plot_spectrum_over_sessions,
    plot_subspace_alignment,
    plot_tuning_drift,
)
from netphys.population.sessions import (  # noqa: E402
    concept_persistence,
    spectrum_over_sessions,
    subspace_alignment,
    tuning_drift,
)

__all__ += [
    "concept_persistence",
    "plot_concept_persistence",
    "plot_spectrum_over_sessions",
    "plot_subspace_alignment",
    "plot_tuning_drift",
    "spectrum_over_sessions",
    "subspace_alignment",
    "tuning_drift",
]
