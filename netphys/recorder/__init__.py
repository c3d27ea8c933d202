"""Recording PyTorch models: forward hooks, unit selection, staging, background writing,
graph weights and per-sample edge contributions.

This subpackage is the only part of netphys that imports torch.
"""

from __future__ import annotations

from netphys.recorder.concept_report import (
    concept_analysis,
    concept_report,
    concept_summary,
    reinitialised,
)
from netphys.recorder.graph import edge_contributions, node_weights
from netphys.recorder.record import record
from netphys.recorder.recorder import Recorder

__all__ = [
    "Recorder",
    "concept_analysis",
    "concept_report",
    "concept_summary",
    "edge_contributions",
    "node_weights",
    "record",
    "reinitialised",
]
