"""Population analyses on (sample, unit) arrays: numpy, scipy, scikit-learn, dask, rastermap.

Never imports torch or matplotlib and never touches files. Every function takes a numpy array
or an xarray DataArray with dims (sample, 'unit') and returns labelled xarray objects. Figures
of these results are in :mod:`netphys.plot`; paths and concepts in
:mod:`netphys.population.paths`.
"""

from __future__ import annotations

from netphys.population._calcium import INDICATOR_TAU, simulate_calcium
from netphys.population._compare import COMPARE_SCALARS, compare
from netphys.population._cvpca import cvpca, repeat_responses
from netphys.population._deconvolve import deconvolve
from netphys.population._nulls import shuffle_null
from netphys.population._powerlaw import fit_power_law
from netphys.population._rrr import ReducedRankRegression, reduced_rank_regression, svca_predict
from netphys.population._scaling import scaling_analysis
from netphys.population._sessions import (
    concept_persistence,
    spectrum_over_sessions,
    subspace_alignment,
    tuning_drift,
)
from netphys.population._similarity import linear_cka, rdm, rsa, similarity
from netphys.population._simulate import simulate_population
from netphys.population._sorting import rastermap_sort
from netphys.population._sparseness import sparseness, sparseness_summary
from netphys.population._spectra import category_autocorrelation, correlation_matrix, eigenspectrum
from netphys.population._svca import split_time_blocks, split_units, svca
from netphys.population._weights import fit_power_law_tail, weight_spectra, weight_spectrum

__all__ = [  # noqa: RUF022 - grouped by topic
    # reliable variance and spectra
    "svca",
    "split_units",
    "split_time_blocks",
    "cvpca",
    "repeat_responses",
    "eigenspectrum",
    "fit_power_law",
    "scaling_analysis",
    # correlations and their nulls
    "correlation_matrix",
    "shuffle_null",
    "category_autocorrelation",
    # activity versus behaviour
    "reduced_rank_regression",
    "ReducedRankRegression",
    "svca_predict",
    # sparseness of the code
    "sparseness",
    "sparseness_summary",
    # weight spectra ("anatomy")
    "weight_spectrum",
    "weight_spectra",
    "fit_power_law_tail",
    # sorting
    "rastermap_sort",
    # across sessions
    "tuning_drift",
    "subspace_alignment",
    "spectrum_over_sessions",
    "concept_persistence",
    # model versus mouse
    "compare",
    "COMPARE_SCALARS",
    "similarity",
    "rdm",
    "rsa",
    "linear_cka",
    "simulate_calcium",
    "deconvolve",
    "INDICATOR_TAU",
    # simulation
    "simulate_population",
]
