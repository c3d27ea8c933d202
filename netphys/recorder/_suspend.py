"""Forward passes that no Recorder may record: weight probes, cut tests, Jacobians.

netphys runs extra forward passes of a user's model (the weight probe of a session, the
probe, cut test and Jacobians of :func:`netphys.recorder.edge_contributions`). Any Recorder
attached to the same model, in this thread, must not record them as frames, and they must
not change the model's state (BatchNorm running statistics, counters in buffers, train/eval
flags, the random generators).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["preserved_state", "recording_suspended", "suspended"]

_state = threading.local()


def suspended() -> bool:
    """Return True inside :func:`recording_suspended` (in this thread)."""
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def recording_suspended() -> Iterator[None]:
    """Context in which no Recorder of this thread records a forward call.

    Examples
    --------
    >>> with recording_suspended():
    ...     suspended()
    True
    """
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Run netphys' own forward passes without a trace: recording suspended, state restored.

    Buffers (e.g. BatchNorm running statistics), every module's train/eval flag and the torch
    random generators are saved on entry and restored on exit.

    Examples
    --------
    >>> bn = nn.BatchNorm1d(2).train()
    >>> with preserved_state(bn):
    ...     _ = bn(torch.randn(4, 2) + 5)
    >>> bool(bn.running_mean.abs().max() == 0)
    True
    """
    modes = {m: m.training for m in model.modules()}
    buffers = [
        (mod, name, buf, buf.detach().clone())
        for mod in model.modules()
        for name, buf in mod._buffers.items()
        if buf is not None
    ]
    cpu_state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        with recording_suspended():
            yield
    finally:
        for m, flag in modes.items():
            m.training = flag
        with torch.no_grad():
            for mod, name, buf, saved in buffers:
                mod._buffers[name] = buf  # a forward may have rebound it (x = x + 1)
                if not torch.equal(buf, saved):  # untouched buffers keep their autograd version
                    buf.copy_(saved)
        torch.random.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
