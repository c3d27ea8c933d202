"""Computational paths and concepts: from per-sample edge contributions to clustered concepts.

The torch part (edge contributions of a model) is :func:`netphys.recorder.edge_contributions`;
everything here works on its output, an :class:`xarray.DataTree` with one child per recorded
layer (``layer_0`` ... ``layer_{L-1}``, dims ``node`` and ``pre`` for the layer below) and a
child ``output``. Transitions, flows and effective paths keep that layout, so
``path_flow(tr)["layer_1"]["edge_flow"]`` is the (sample, node, pre) edge flow into layer 1;
:func:`layer_names` lists the layer children in order. Figures are in :mod:`netphys.plot`.
"""

from __future__ import annotations

from netphys.population.paths._analysis import concept_analysis, concept_summary, unit_baseline
from netphys.population.paths._clustering import concept_activity, path_concepts, path_embedding
from netphys.population.paths._flows import effective_paths, flow_kernel, path_flow
from netphys.population.paths._layers import layer_names
from netphys.population.paths._matrices import as_sparse, edge_matrix, path_matrix, unit_matrix
from netphys.population.paths._reference import selectivity_vs_reference
from netphys.population.paths._scores import (
    class_path_overlap,
    concept_selectivity,
    path_classifier_agreement,
)
from netphys.population.paths._top import top_paths
from netphys.population.paths._transitions import mean_field_contributions, path_transitions

__all__ = [  # noqa: RUF022 - grouped by topic
    # flows over the graph
    "path_transitions",
    "mean_field_contributions",
    "path_flow",
    "flow_kernel",
    "effective_paths",
    "top_paths",
    "layer_names",
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
