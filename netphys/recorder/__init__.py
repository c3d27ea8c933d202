"""Recording PyTorch models: forward hooks, unit selection, staging, background writing.

This subpackage is the only part of netphys that imports torch.
"""

from __future__ import annotations

from netphys.recorder.record import record
from netphys.recorder.recorder import Recorder

__all__ = ["Recorder", "record"]
