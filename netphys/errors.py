"""Exception and warning classes of netphys.

Every exception subclasses a builtin so that ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "ConservationWarning",
    "FitRangeWarning",
    "MissingDependencyError",
    "NetphysWarning",
    "NotACutError",
    "RecordingError",
    "RecordingFormatError",
    "ResourceLimitError",
    "TrainingModeError",
    "UnsafeFileError",
    "UnsupportedModuleError",
]


class NetphysWarning(UserWarning):
    """Base class of the warnings netphys emits."""


class ConservationWarning(NetphysWarning):
    """Edge contributions do not add up to a node's activity within tolerance."""


class FitRangeWarning(NetphysWarning):
    """A power-law fit used fewer components than its range asked for (or none: alpha NaN)."""


class RecordingFormatError(ValueError):
    """A file or store is not a valid recording of the expected format."""


class RecordingError(RuntimeError):
    """Recording failed (hooks, writer thread, disk)."""


class MissingDependencyError(ImportError):
    """An optional dependency is needed; the message names the pip extra."""


class UnsafeFileError(ValueError):
    """A file asks for something netphys refuses to do (e.g. unpickling arbitrary objects)."""


class ResourceLimitError(UnsafeFileError):
    """A file declares more data than the reader's ``max_bytes`` limit allows."""


class NotACutError(ValueError):
    """A recorded layer does not separate the input from the next recorded layer."""


class TrainingModeError(ValueError):
    """A module is in training mode where eval mode is required (e.g. BatchNorm)."""


class UnsupportedModuleError(ValueError):
    """A module between recorded layers cannot be decomposed exactly."""
