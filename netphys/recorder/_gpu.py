"""Device-to-host staging on a side CUDA stream, so copies overlap the model's next kernels.

The recorder converts a layer's output on the model's stream, then copies it into pinned host
blocks on this copy stream (which first waits for the model's stream). The source tensors are
marked as used by the copy stream, so the caching allocator does not hand their memory to the
model before the copy finished. A block's CUDA event is recorded on the copy stream; the
writer thread waits on it before reading the block, and the model never waits on the disk
unless every staging block is full (the ``max_host_memory`` cap).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["CopyStream"]


class CopyStream:
    """A side stream for non-blocking device-to-host copies on ``device``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)

    @contextlib.contextmanager
    def copying(self, *sources: torch.Tensor) -> Iterator[None]:
        """Run the copies issued in the block on the copy stream, after the model's work."""
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            yield
        for t in sources:
            if t.is_cuda:
                t.record_stream(self.stream)

    def event(self) -> torch.cuda.Event:
        """Return an event recorded on the copy stream (after every copy issued so far)."""
        event = torch.cuda.Event()
        event.record(self.stream)
        return event
