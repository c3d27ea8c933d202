"""Experiments: the orchestration that combines recorder, io, analyses and figures.

Only this subpackage and the command line put the parts together: train and record a model
(:func:`run_demo`, :func:`run_continual`), analyse a recording per session and write figures
(:func:`population_report`), run the concept analysis of a model beside its re-initialised
control (:func:`concept_analysis`, :func:`concept_report`), and compare recordings on disk
(:func:`compare_recordings`, :func:`compare_files`), and gather one unit's page
(:func:`unit_profile`). Importing it imports torch.
"""

from __future__ import annotations

from netphys.experiments._common import json_safe, save_figure, write_json
from netphys.experiments._models import DEMO_LAYERS, DemoCNN, load_digits_split
from netphys.experiments.anatomy import anatomy
from netphys.experiments.compare import compare_files, compare_recordings
from netphys.experiments.concepts import concept_analysis, concept_report, reinitialised
from netphys.experiments.continual import METHODS, run_continual
from netphys.experiments.demo import run_demo, train_and_record
from netphys.experiments.report import population_report
from netphys.experiments.units import unit_profile
from netphys.experiments.width import run_width

__all__ = [  # noqa: RUF022 - grouped by topic
    # the demo and its data
    "run_demo",
    "train_and_record",
    "DemoCNN",
    "DEMO_LAYERS",
    "load_digits_split",
    # continual learning
    "run_continual",
    "METHODS",
    # width sweep
    "run_width",
    # reports
    "population_report",
    "concept_analysis",
    "concept_report",
    "reinitialised",
    "unit_profile",
    # model versus mouse on files
    "compare_recordings",
    "compare_files",
    # weight spectra of a model, per-session weights or a recording
    "anatomy",
    # helpers
    "json_safe",
    "write_json",
    "save_figure",
]
