"""Host staging blocks and the background writer thread.

Hooks copy each batch into a *block*: host buffers holding ``chunk_frames`` frames of every
recorded layer (pinned memory when the model is on a GPU, so device-to-host copies do not
block). Full blocks go to a writer thread that compresses and writes whole Zarr chunks. A
fixed pool of blocks bounds host memory: when the writer falls behind, the model waits.
Host blocks are numpy arrays seen through torch (``torch.from_numpy``), so that their memory
is visible to :mod:`tracemalloc` like the writer's (the memory-cap tests measure both).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from netphys.errors import RecordingError
from netphys.io.recording import FRAME_FIELDS, RecordingWriter

__all__ = ["Block", "BlockPool", "WriterThread", "derive_behaviour"]

logger = logging.getLogger(__name__)

_NUMPY = {
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.int64: np.int64,
}


@dataclass
class Block:
    """Host buffers for ``capacity`` frames of every layer, the frame table and behaviour."""

    capacity: int
    activity: dict[str, torch.Tensor]
    nodes: dict[str, torch.Tensor]
    table: dict[str, np.ndarray]
    behaviour: dict[str, torch.Tensor] | None
    start: int = 0
    n: int = 0
    event: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def numpy_views(
        self,
    ) -> tuple[
        dict[str, np.ndarray],
        dict[str, tuple[np.ndarray, np.ndarray]],
        dict[str, np.ndarray] | None,
    ]:
        n = self.n
        table = {k: v[:n] for k, v in self.table.items()}
        layers = {
            k: (self.activity[k][:n].numpy(), self.nodes[k][:n].numpy()) for k in self.activity
        }
        beh = (
            None
            if self.behaviour is None
            else {k: v[:n].numpy() for k, v in self.behaviour.items()}
        )
        return table, layers, beh


@torch.no_grad()
def derive_behaviour(block: Block) -> None:
    """Fill a block's prediction, confidence and loss from its logits and labels.

    Hooks copy only the logits of each batch; the rest is derived here once per block (a few
    torch calls on thousands of frames instead of a dozen per batch). Frames of width 1 get
    ``sigmoid`` confidence and ``logit > 0`` predictions; the loss is the cross-entropy to
    labels in ``[0, width)`` and NaN elsewhere (or for width 1).
    """
    beh, n = block.behaviour, block.n
    if beh is None or n == 0:
        return
    logits = beh["logits"][:n]
    if logits.shape[1] > 1:
        confidence, prediction = torch.softmax(logits, dim=1).max(dim=1)
    else:
        confidence = torch.sigmoid(logits[:, 0])
        prediction = (logits[:, 0] > 0).long()
    beh["confidence"][:n] = confidence
    beh["prediction"][:n] = prediction
    loss = beh["loss"][:n]
    loss.fill_(float("nan"))
    labels = torch.from_numpy(block.table["label"][:n])
    ok = (labels >= 0) & (labels < logits.shape[1])
    if logits.shape[1] > 1 and bool(ok.any()):
        loss[ok] = F.cross_entropy(logits[ok], labels[ok], reduction="none")


class BlockPool:
    """A fixed set of blocks, handed out to hooks and returned by the writer."""

    def __init__(
        self,
        n_blocks: int,
        capacity: int,
        layer_shapes: Mapping[str, tuple[int, int]],
        dtype: torch.dtype,
        behaviour_width: int | None,
        pin: bool,
    ) -> None:
        self.free: queue.Queue[Block] = queue.Queue()
        self.capacity = capacity
        self.n_blocks = 0
        self._spec = (layer_shapes, dtype, behaviour_width, pin)
        self.grow(n_blocks)

    def grow(self, n_blocks: int) -> None:
        """Add ``n_blocks`` blocks (a batch larger than the pool needs them all at once)."""
        layer_shapes, dtype, behaviour_width, pin = self._spec
        capacity = self.capacity
        self.n_blocks += n_blocks

        def empty(shape: tuple[int, ...], dt: torch.dtype) -> torch.Tensor:
            if pin:  # page-locked for asynchronous device-to-host copies
                return torch.empty(shape, dtype=dt, pin_memory=True)
            return torch.from_numpy(np.empty(shape, _NUMPY[dt]))  # seen by tracemalloc

        for _ in range(n_blocks):
            activity = {k: empty((capacity, u), dtype) for k, (u, _) in layer_shapes.items()}
            nodes = {k: empty((capacity, c), torch.float32) for k, (_, c) in layer_shapes.items()}
            table = {k: np.empty(capacity, dtype=dt) for k, (dt, _) in FRAME_FIELDS.items()}
            beh = None
            if behaviour_width is not None:
                beh = {
                    "logits": empty((capacity, behaviour_width), torch.float32),
                    "prediction": empty((capacity,), torch.int64),
                    "confidence": empty((capacity,), torch.float32),
                    "loss": empty((capacity,), torch.float32),
                }
            self.free.put(Block(capacity, activity, nodes, table, beh))

    def acquire(self, writer: WriterThread) -> Block:
        """Take a free block, waiting for the writer; raise if the writer failed."""
        while True:
            writer.raise_if_failed()
            if self.free.empty():
                writer.write_held()  # an inline writer's held-back block frees one
            try:
                return self.free.get(timeout=0.5)
            except queue.Empty:
                if not writer.is_alive():
                    writer.raise_if_failed()
                    raise RecordingError(
                        "Recorder: the writer thread stopped unexpectedly."
                    ) from None

    def release(self, block: Block) -> None:
        block.n = 0
        block.event = None
        self.free.put(block)


class WriterThread(threading.Thread):
    """Write submitted blocks to the store in order; keep the first error.

    With ``inline=True`` no thread is started: :meth:`submit` writes the block at once in the
    caller's thread. On a CPU whose cores all run the model and writes that go through the
    page cache, this is faster than a background writer, whose work stalls every intra-op
    thread of the model at each parallel region (``O_DIRECT`` writes leave the CPU to the
    model, so there the background thread wins). One
    exception: while the store is still creating its arrays (``store.creating()``, started at
    the first forward call), submitted blocks are held back, all but one of the pool's, and
    written once the creation is over or a block is needed (or at :meth:`finish`), so that the
    model's next forward calls run while the arrays are created instead of waiting for them.
    """

    def __init__(self, store: RecordingWriter, pool: BlockPool, *, inline: bool = False) -> None:
        super().__init__(name="netphys-writer", daemon=True)
        self.store = store
        self.pool = pool
        self.inline = inline
        self.queue: queue.Queue[Block | None] = queue.Queue()
        self.error: BaseException | None = None
        self._held: list[Block] = []  # inline, while the store is creating its arrays
        self.frames_written = 0
        self.bytes_written = 0

    def start(self) -> None:
        if not self.inline:
            super().start()

    def is_alive(self) -> bool:
        return True if self.inline else super().is_alive()

    def submit(self, block: Block) -> None:
        self.raise_if_failed()
        if not self.inline:
            self.queue.put(block)
            return
        if len(self._held) < self.pool.n_blocks - 1 and self.store.creating():
            self._held.append(block)
            return
        self.write_held()
        self._write(block)
        self.raise_if_failed()

    def write_held(self) -> None:
        """Write the blocks held back while the store was creating its arrays (if any)."""
        while self._held:
            self._write(self._held.pop(0))

    def run(self) -> None:
        while True:
            block = self.queue.get()
            if block is None:
                return
            self._write(block)

    def _write(self, block: Block) -> None:
        try:
            if self.error is None:
                if block.event is not None:
                    block.event.synchronize()
                derive_behaviour(block)
                table, layers, beh = block.numpy_views()
                self.store.write(block.start, table, layers, beh)
                self.frames_written += block.n
                self.bytes_written += sum(a.nbytes + b.nbytes for a, b in layers.values())
        except BaseException as exc:
            logger.debug("writer failed", exc_info=True)
            self.error = exc
        finally:
            self.pool.release(block)

    def raise_if_failed(self) -> None:
        if self.error is not None:
            exc = self.error
            if isinstance(exc, OSError):
                raise RecordingError(
                    f"Recorder: writing to {str(self.store.path)!r} failed: {exc}. "
                    "Frames committed before the failure are kept; free disk space or choose "
                    "another `path`."
                ) from exc
            raise RecordingError(f"Recorder: the writer thread failed: {exc!r}") from exc

    def finish(self) -> None:
        if self.inline:
            self.write_held()
            return
        self.queue.put(None)
        self.join()
