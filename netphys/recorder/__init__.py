"""Recording PyTorch models.

Forward hooks, unit selection, staging, background writing, graph weights and per-sample edge
contributions. This subpackage is the only part of netphys that imports torch. It does no
analysis: the concept analysis of a model is :func:`netphys.experiments.concept_analysis`.
"""

from __future__ import annotations

from netphys.recorder._distributed import DistributedRecorder
from netphys.recorder._layers import list_layers
from netphys.recorder._record import present, present_spontaneous, record, spontaneous_inputs
from netphys.recorder._weights import layer_weights
from netphys.recorder.graph import edge_contributions, node_weights
from netphys.recorder.recorder import Recorder

__all__ = [
    "DistributedRecorder",
    "Recorder",
    "edge_contributions",
    "layer_weights",
    "list_layers",
    "node_weights",
    "present",
    "present_spontaneous",
    "record",
    "spontaneous_inputs",
]
