"""netphys: record an artificial neural network like a mouse, analyse it like one.

Importing netphys does not import torch: ``Recorder`` and ``record`` load the recorder
subpackage (and torch) on first use.

Examples
--------
>>> import netphys
>>> netphys.__version__ != ""
True
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from netphys.io.recording import layer_activity, node_activity, open_recording, recover

try:
    __version__ = version("netphys")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [  # noqa: RUF022 - grouped by topic
    # recording (torch, loaded lazily)
    "DistributedRecorder",
    "Recorder",
    "record",
    # weight spectra of a model or recording (torch, loaded lazily)
    "anatomy",
    # reading
    "layer_activity",
    "node_activity",
    "open_recording",
    "recover",
    # subpackages (imported on first use)
    "io",
    "population",
    "plot",
    "recorder",
    "experiments",
    "variability",
    "__version__",
]

_LAZY = {
    "DistributedRecorder": "netphys.recorder",
    "Recorder": "netphys.recorder",
    "record": "netphys.recorder",
    "anatomy": "netphys.experiments",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    if name in ("io", "population", "plot", "recorder", "experiments", "variability"):
        return import_module(f"netphys.{name}")
    raise AttributeError(f"module 'netphys' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
