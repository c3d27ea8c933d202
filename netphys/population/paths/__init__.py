"""Computational paths and concepts: from per-sample edge contributions to clustered concepts.

The torch part (edge contributions of a model) is :func:`netphys.recorder.edge_contributions`;
everything here works on its numpy/xarray output. Figures are in :mod:`netphys.plot`.
"""

from __future__ import annotations

from netphys.population.paths._analysis import concept_analysis, concept_summary, unit_baseline
from netphys.population.paths._concepts import (
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
from netphys.population.paths._flows import (
    effective_paths,
    flow_kernel,
    mean_field_contributions,
    path_flow,
    path_transitions,
    top_paths,
)
from netphys.population.paths._reference import selectivity_vs_reference

__all__ = [  # noqa: RUF022 - grouped by topic
    # flows over the graph
    "path_transitions",
    "mean_field_contributions",
    "path_flow",
    "flow_kernel",
    "effective_paths",
    "top_paths",
    # concept matrices and clustering
    "path_matrix",
    "edge_matrix",
    "unit_matrix",
    "as_sparse",
    "path_concepts",
    "concept_activity",
    "path_embedding",
    # scores
    "concept_selectivity",
    "class_path_overlap",
    "path_classifier_agreement",
    "selectivity_vs_reference",
    # the whole analysis
    "concept_analysis",
    "concept_summary",
    "unit_baseline",
]
