"""Staging of one forward call into host blocks: layouts, frame table, behaviour.

The :class:`Staging` mixin holds the Recorder's per-recording state (layouts, pool, writer)
and the code that copies a batch into host blocks. The hooks live in
:mod:`netphys.recorder.recorder`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from netphys._validation import check_int_values
from netphys.errors import RecordingError
from netphys.io._chunks import O_DIRECT_AVAILABLE
from netphys.io._recording_layout import choose_compression
from netphys.io.recording import FRAME_FIELDS, RecordingWriter
from netphys.recorder._gpu import CopyStream
from netphys.recorder._layers import (
    LayerLayout,
    channel_dim_for,
    choose_units,
    extract_tensor,
    site_of,
)
from netphys.recorder._staging import Block, BlockPool, WriterThread

__all__ = ["DTYPES", "Staging"]

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "float64": torch.float64}
_MAX_BEHAVIOUR_WIDTH = 4096
#: Host blocks in the staging pool: one being filled, one being written, one queued.
_POOL_BLOCKS = 3
#: Room kept under ``max_host_memory`` for the writer's transient copies, in blocks: the
#: encoder threads work on distinct chunks of one block and hold, per chunk, its compressed
#: bytes and (for a partial last block) its copy padded to the full chunk.
_WRITE_RESERVE = 2


class Staging:
    """Per-recording staging state and the copy of each batch into host blocks."""

    model: nn.Module
    layers: list[str]
    dtype: str | None
    max_units: int | Mapping[str, int] | None
    chunk_frames: int | None
    max_host_memory: int
    frame_rate: float
    channel_dims: dict[str, int]
    field_of_view: float
    layer_spacing: float
    writer: str
    compression: str
    direct_io: bool
    _unit_rng: np.random.Generator
    _seed_attr: int | None
    _store: RecordingWriter | None
    _frame: int
    _session: int
    _session_started: bool
    _epoch: int
    _step: int
    _pending: dict[str, Any]
    _first: dict[str, torch.Tensor]
    _layouts: dict[str, LayerLayout]
    _index: dict[str, torch.Tensor]
    _pool: BlockPool | None
    _writer: WriterThread | None
    _block: Block | None
    _segments: list[tuple[Block, int, int, int]]
    _cuda: bool
    _copies: CopyStream | None
    _training: bool

    # -- setup (first recorded forward) ------------------------------------------------------
    def _max_units_of(self, name: str) -> int | None:
        mu = self.max_units
        return mu.get(name) if isinstance(mu, Mapping) else mu

    def _resolve_dtype(self) -> str:
        if self.dtype is not None:
            return self.dtype
        stored = {self._store.layer_dtype(n) for n in self.layers} if self._store else set()
        stored.discard(None)
        if len(stored) == 1:
            return str(stored.pop())  # appending: keep the store's precision
        wide = any(t.dtype == torch.float64 for t in self._first.values())
        return "float64" if wide else "float32"

    def _setup(self, output: Any) -> None:
        """First recorded forward: unit layouts, store groups, staging pool, writer."""
        assert self._store is not None
        self.dtype = self._resolve_dtype()
        self._store.check_append(self.layers, self.dtype)
        modules = dict(self.model.named_modules())
        shapes: dict[str, tuple[int, int]] = {}
        frame_bytes = 0
        itemsize = np.dtype(self.dtype).itemsize
        for depth, name in enumerate(self.layers):
            t = self._first[name]
            module_name = site_of(name)[0]
            module = modules[module_name]
            cd = self.channel_dims.get(name, self.channel_dims.get(module_name))
            layout = LayerLayout(
                name=name,
                module_type=type(module).__name__,
                raw_shape=tuple(t.shape[1:]),
                channel_dim=channel_dim_for(module, t.ndim, cd),
                depth=depth,
                selection=choose_units(
                    int(np.prod(t.shape[1:])), self._max_units_of(name), self._unit_rng
                ),
                field_of_view=self.field_of_view,
                layer_spacing=self.layer_spacing,
            )
            self._layouts[name] = layout
            shapes[name] = (layout.n_units, layout.n_channels)
            frame_bytes += layout.n_units * itemsize + layout.n_channels * 4
        self._index = {
            name: torch.as_tensor(lay.selection, device=self._first[name].device)
            for name, lay in self._layouts.items()
            if lay.selection is not None
        }
        width = self._behaviour_width(output)
        frame_bytes += sum(np.dtype(dt).itemsize for dt, _ in FRAME_FIELDS.values())
        if width is not None:  # logits, prediction, confidence, loss
            frame_bytes += width * 4 + 8 + 4 + 4
        capacity = self._plan_capacity(frame_bytes)
        for name, layout in self._layouts.items():
            attrs = layout.attrs() | {
                "max_units": self._max_units_of(name),
                "seed": self._seed_attr,
            }
            codec = None
            if self.compression == "auto":
                codec, ratio = choose_compression(self._codec_sample(name))
                attrs |= {"compression": codec, "lz4_ratio_first_batch": round(ratio, 3)}
            self._store.add_layer(
                name,
                unit_coords=layout.unit_coords(),
                n_nodes=layout.n_channels,
                dtype=self.dtype,
                attrs=attrs,
                compression=codec,
            )
        if width is not None:
            self._store.add_behaviour(width)
        self._store.prepare()  # create the groups while the model fills the first block
        device = next(iter(self._first.values())).device
        self._cuda = device.type == "cuda"
        self._copies = CopyStream(device) if self._cuda else None
        self._pool = BlockPool(
            _POOL_BLOCKS, capacity, shapes, DTYPES[self.dtype], width, pin=self._cuda
        )
        self._writer = WriterThread(self._store, self._pool, inline=self._inline_writes())
        self._writer.start()
        self._block = None

    def _units_of(self, name: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``t`` channel first and its recorded units as (batch, units)."""
        layout = self._layouts[name]
        if layout.channel_dim != 1:
            t = t.movedim(layout.channel_dim, 1)
        flat = t.reshape(t.shape[0], -1)
        if layout.selection is not None:
            flat = flat.index_select(1, self._index[name])
        return t, flat

    def _codec_sample(self, name: str) -> np.ndarray:
        """Up to 1 MiB of the first batch's activity of ``name``, as it will be stored."""
        _, flat = self._units_of(name, self._first[name])
        itemsize = np.dtype(self.dtype).itemsize
        rows = max(1, (1 << 20) // max(1, flat.shape[1] * itemsize))
        sample = flat[:rows].to(DTYPES[str(self.dtype)]).cpu()
        return sample.numpy()

    def _plan_capacity(self, frame_bytes: int) -> int:
        """Frames per host block (= per time chunk on disk) within ``max_host_memory``.

        The pool's blocks plus the writer's transient copies (:data:`_WRITE_RESERVE`) fit in
        the cap; only a single batch larger than the pool's blocks grows it (see
        :meth:`_segments_for`).
        """
        assert self._store is not None
        n_blocks = _POOL_BLOCKS + _WRITE_RESERVE
        new_store = self._store.frames == 0 and not self._store.layers
        chunk = self._store.chunk_frames
        if new_store and self.chunk_frames is None:
            chunk = int(2 ** np.clip(np.round(np.log2((32 << 20) / frame_bytes)), 8, 14))
        capacity = max(1, min(chunk, self.max_host_memory // (n_blocks * frame_bytes)))
        if capacity < chunk:
            if capacity >= 64:
                capacity -= capacity % 64
            logger.info("time chunks of %d frames to respect max_host_memory", capacity)
        if new_store:
            self._store.chunk_frames = capacity
        return capacity

    def _inline_writes(self) -> bool:
        """Write inline when the model uses every CPU core and writes use the page cache."""
        if self.writer == "thread":
            return False
        if self.writer == "inline":
            return True
        if self._cuda:
            return False  # the GPU computes while the host writes
        if self.direct_io and O_DIRECT_AVAILABLE:
            return False  # O_DIRECT writes wait for the disk, not for a CPU core
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return torch.get_num_threads() >= (cores or 1)

    def _behaviour_width(self, output: Any) -> int | None:
        try:
            t = extract_tensor(output, "<model output>")
        except RecordingError:
            logger.info("model output is not a tensor; no behaviour recorded")
            return None
        batch = next(iter(self._first.values())).shape[0]
        if not t.is_floating_point() or t.ndim < 1 or t.shape[0] != batch:
            logger.info("model output is not batch-first floats; no behaviour recorded")
            return None
        width = int(np.prod(t.shape[1:])) if t.ndim > 1 else 1
        if width > _MAX_BEHAVIOUR_WIDTH:
            logger.info("model output has %d values per frame; behaviour not recorded", width)
            return None
        return width

    # -- staging -----------------------------------------------------------------------------
    def _segments_for(self, b: int) -> list[tuple[Block, int, int, int]]:
        """Rows (block, row0, batch0, batch1) that the current batch of ``b`` frames fills."""
        if self._segments:
            return self._segments
        assert self._pool is not None
        assert self._writer is not None
        segs = []
        done = 0
        block = self._block
        offset = 0 if block is None else block.n
        room = 0 if block is None else block.capacity - block.n
        n_new = -(-max(0, b - room) // self._pool.capacity)
        held = n_new + (block is not None)
        if held > self._pool.n_blocks - 1:
            # one batch spans more blocks than the pool has: grow it (memory ~ one batch)
            self._pool.grow(held + 1 - self._pool.n_blocks)
        while done < b:
            if block is None or offset >= block.capacity:
                block = self._pool.acquire(self._writer)
                block.n = 0
                block.start = -1
                offset = 0
            take = min(b - done, block.capacity - offset)
            segs.append((block, offset, done, done + take))
            done += take
            offset += take
        self._segments = segs
        return segs

    def _release_segments(self) -> None:
        """Give back the blocks a failed forward took from the pool (its rows are dropped)."""
        assert self._pool is not None
        seen: set[int] = set()
        for block, _, _, _ in self._segments:
            if block is not self._block and id(block) not in seen:
                seen.add(id(block))
                self._pool.release(block)
        self._segments = []

    def _stage_layer(self, name: str, t: torch.Tensor) -> None:
        layout = self._layouts[name]
        b = t.shape[0]
        if tuple(t.shape[1:]) != layout.raw_shape:
            raise RecordingError(
                f"Recorder: module {name!r} output has per-sample shape {tuple(t.shape[1:])} but "
                f"{layout.raw_shape} when the recording started; inputs of one recording must "
                "have the same shape (this batch is not recorded)."
            )
        t, flat = self._units_of(name, t)
        segments = self._segments_for(b)
        if not self._cuda and t.dtype == torch.float32:
            # one torch call per array, the channel mean straight into the block. No
            # `torch.set_num_threads(1)` around small copies: switching the intra-op thread
            # count at every batch made the demo CNN's own forward 1.7x slower (10x the page
            # faults; measured with perf stat)
            per_channel = t.reshape(b, layout.n_channels, -1)
            for block, r0, b0, b1 in segments:
                block.activity[name][r0 : r0 + b1 - b0].copy_(flat[b0:b1])
                torch.mean(per_channel[b0:b1], -1, out=block.nodes[name][r0 : r0 + b1 - b0])
            return
        nodes = t.reshape(b, layout.n_channels, -1).float().mean(-1)
        if self._cuda:
            assert self.dtype is not None
            flat = flat.to(DTYPES[self.dtype])
        with self._copying(flat, nodes):  # on the GPU: on the copy stream (_gpu.py)
            for block, r0, b0, b1 in segments:
                block.activity[name][r0 : r0 + b1 - b0].copy_(flat[b0:b1], non_blocking=self._cuda)
                block.nodes[name][r0 : r0 + b1 - b0].copy_(nodes[b0:b1], non_blocking=self._cuda)

    def _copying(self, *sources: torch.Tensor) -> Any:
        """Device-to-host copies on the side stream (GPU), or in place (CPU)."""
        if self._copies is None:
            return contextlib.nullcontext()
        return self._copies.copying(*sources)

    def _stage_rest(self, b: int, output: Any) -> None:
        """Frame table and behaviour for the batch; commit its rows; submit full blocks."""
        assert self._store is not None
        table = self._frame_table(b)
        logits = self._behaviour(output, b)
        segs = self._segments_for(b)
        for block, r0, b0, b1 in segs:
            n = b1 - b0
            for key, values in table.items():  # a scalar fills the rows (no per-batch array)
                block.table[key][r0 : r0 + n] = values[b0:b1] if values.ndim else values
            if block.behaviour is not None and logits is not None:
                with self._copying(logits):
                    block.behaviour["logits"][r0 : r0 + n].copy_(
                        logits[b0:b1], non_blocking=self._cuda
                    )
            if block.start < 0:
                block.start = self._frame + b0
            block.n = r0 + n
        self._frame += b
        self._segments = []
        # every block but the last is full now: hand them to the writer
        for block, _, _, _ in segs[:-1]:
            if block is not segs[-1][0]:
                self._submit(block)
        last = segs[-1][0]
        if last.n >= last.capacity:
            self._submit(last)
            self._block = None
        else:
            self._block = last

    def _submit(self, block: Block) -> None:
        assert self._writer is not None
        if self._copies is not None:
            block.event = self._copies.event()  # after this block's copies (_gpu.CopyStream)
        self._writer.submit(block)
        if block is self._block:
            self._block = None

    def _frame_table(self, b: int) -> dict[str, np.ndarray]:
        assert self._store is not None
        if not self._session_started:
            self._session = max(self._session, 0)
            self._session_started = True
        # constants as 0-d arrays: _stage_rest broadcasts them into the block's rows
        out = {
            "frame_time": (self._frame + np.arange(b)) / self.frame_rate,
            "session": np.asarray(self._session, "int64"),
            "epoch": np.asarray(self._epoch, "int64"),
            "step": np.asarray(self._step, "int64"),
            "training": np.asarray(int(self._training), "int8"),
        }
        for key in ("stimulus", "label", "repeat"):
            out[key] = self._per_frame_int(key, self._pending.get(key, -1), b)
        cond = self._pending.get("condition", "stimulus")
        if isinstance(cond, str):
            out["condition"] = np.asarray(self._store.condition_code(cond), "int16")
        else:
            conds = list(cond)
            if len(conds) != b:
                raise ValueError(
                    f"Recorder.annotate(): `condition` has {len(conds)} values but the forward "
                    f"call has {b} samples; pass one string or one per sample."
                )
            out["condition"] = np.array(
                [self._store.condition_code(str(c)) for c in conds], "int16"
            )
        return out

    @staticmethod
    def _per_frame_int(key: str, value: Any, b: int) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        arr = np.asarray(value)
        if arr.ndim == 0:  # one value for every frame: kept 0-d (see _frame_table)
            return check_int_values(arr, func="Recorder.annotate", name=key)
        if arr.ndim != 1 or len(arr) != b:
            raise ValueError(
                f"Recorder.annotate(): `{key}` has shape {arr.shape} but the forward call has "
                f"{b} samples; pass one value or one per sample."
            )
        return check_int_values(arr, func="Recorder.annotate", name=key)

    def _behaviour(self, output: Any, b: int) -> torch.Tensor | None:
        """Return the batch's logits as (b, width) float32 (the rest is derived per block)."""
        if self._store is None or self._store._behaviour_width is None:
            return None
        t = extract_tensor(output, "<model output>").detach()
        return t.reshape(b, -1).float()
