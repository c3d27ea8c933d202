"""The Recorder: image a PyTorch model with forward hooks into a Zarr recording."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from netphys.errors import RecordingError
from netphys.io.recording import RecordingWriter
from netphys.recorder._gpu import CopyStream
from netphys.recorder._layers import (
    LayerLayout,
    channel_dim_for,
    choose_units,
    extract_tensor,
    resolve_layers,
)
from netphys.recorder._staging import Block, BlockPool, WriterThread
from netphys.recorder._variability import VariabilityHooks

__all__ = ["Recorder"]

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_MAX_BEHAVIOUR_WIDTH = 4096


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("netphys")
    except Exception:  # pragma: no cover
        return "unknown"


class Recorder:
    """Record unit and node activity of a PyTorch model into a Zarr recording.

    Every forward call of ``model`` made inside the ``with`` block is recorded: the outputs
    of the chosen ``layers`` (every element is a *unit*; a channel's spatial mean is a
    *node*), the model's outputs as behaviour, and a per-frame table (session, stimulus,
    label, condition, repeat). Hooks are removed when the block exits, on exceptions too;
    frames already handed to the writer are kept.

    Parameters
    ----------
    model : torch.nn.Module
        The model. Recording works on CPU and GPU; the model's device is used as is.
    path : str or Path
        Directory of the recording (``*.zarr``).
    layers : str or list of str, optional
        Module names (from ``model.named_modules()``) in forward order. Default: every
        activation module (or, without any, every transformer layer, else every leaf).
    dtype : {"float32", "float16"}, default="float32"
        Storage type of unit activity. float32 is bit-exact; float16 rounds to nearest.
    max_units : int or dict, optional
        Maximum units per layer (or ``{layer: n}``). Larger layers keep a seeded random
        subset, like choosing a field of view; the choice is stored (``unit_id``).
    seed : int, default=0
        Seed of the unit selection; stored in the recording.
    mode : {"w-", "w", "a"}, default="w-"
        Refuse an existing path, overwrite it, or append new sessions to it.
    chunk_frames : int, optional
        Frames per time chunk and per flush. Default: a power of two between 256 and 16384
        giving about 32 MB per flush (few large writes keep up with fast models). Reduced if
        needed to respect ``max_host_memory``; an interrupted recording loses at most the
        frames of one flush.
    max_host_memory : int, default=512 MiB
        Cap in bytes on the host staging buffers.
    frame_rate : float, default=30.0
        Nominal frames per second; ``frame_time = frame index / frame_rate``.
    channel_dims : dict, optional
        ``{layer: dim}`` for outputs whose channel dim is not the default (dim 1, or the last
        dim for Linear/transformer modules).
    field_of_view : float, default=1000.0
        Feature maps are scaled to this field of view (µm) for ``pos_x``/``pos_y``.
    layer_spacing : float, default=100.0
        ``pos_z`` step (µm) between consecutive recorded layers.
    store_weights : bool, default=True
        Store per-session node-to-node weights between consecutive layers (where the modules
        allow it).
    variability : spec, list of specs, dict or str, optional
        Sources of trial-to-trial variability applied to every recorded forward call (see
        :mod:`netphys.variability`: ``InputNoise``, ``Jitter``, ``Dropout``, ``Poisson``),
        drawn from a generator seeded with ``seed`` and stored in the root attrs under
        ``"variability"``. None (default): noise-free, bit-exact activity.
    compression : {"lz4", "zstd", "none"} or None, default="lz4"
        Codec of unit activity: lz4 is fast, zstd smaller, "none" the cheapest on CPU (use it
        when the model is so fast that compression cannot keep up).
    writer : {"auto", "thread", "inline"}, default="auto"
        Where chunks are compressed and written: a background thread (overlaps with GPU
        compute or spare CPU cores), or inline in the recording thread at each flush (faster
        when the model's intra-op threads already use every core). "auto" picks inline on a
        CPU-bound model that uses all cores, the thread otherwise.

    Examples
    --------
    >>> import torch, netphys
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> with netphys.Recorder(model, "rec.zarr", layers=["1"], mode="w") as rec:  # doctest: +SKIP
    ...     rec.session(0)
    ...     rec.annotate(stimulus=torch.arange(5), label=[0, 1, 2, 0, 1])
    ...     _ = model(torch.randn(5, 4))
    """

    def __init__(
        self,
        model: nn.Module,
        path: str | os.PathLike[str],
        *,
        layers: str | Sequence[str] | None = None,
        dtype: str = "float32",
        max_units: int | Mapping[str, int] | None = None,
        seed: int = 0,
        mode: str = "w-",
        chunk_frames: int | None = None,
        max_host_memory: int = 512 << 20,
        frame_rate: float = 30.0,
        channel_dims: Mapping[str, int] | None = None,
        field_of_view: float = 1000.0,
        layer_spacing: float = 100.0,
        store_weights: bool = True,
        compression: str | None = "lz4",
        writer: str = "auto",
        variability: Any = None,
    ) -> None:
        self.layers = resolve_layers(model, layers)
        self.variability = VariabilityHooks(
            model, variability, seed=seed, layers=self.layers, active=self._variability_active
        )
        if dtype not in _DTYPES:
            raise ValueError(f"Recorder: `dtype` must be 'float32' or 'float16'; got {dtype!r}.")
        if isinstance(max_units, Mapping):
            bad = [k for k in max_units if k not in self.layers]
            if bad:
                raise ValueError(
                    f"Recorder: `max_units` names layers {bad} that are not recorded; "
                    f"recorded layers are {self.layers}."
                )
        for value in max_units.values() if isinstance(max_units, Mapping) else [max_units]:
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"Recorder: `max_units` must be a positive int; got {value!r}.")
        if chunk_frames is not None and (not isinstance(chunk_frames, int) or chunk_frames < 1):
            raise ValueError(
                f"Recorder: `chunk_frames` must be a positive int; got {chunk_frames!r}."
            )
        if not frame_rate > 0:
            raise ValueError(f"Recorder: `frame_rate` must be > 0; got {frame_rate!r}.")
        self.model = model
        self.path = Path(path)
        self.dtype = dtype
        self.max_units = max_units
        self.seed = int(seed)
        self.mode = mode
        self.chunk_frames = chunk_frames
        self.max_host_memory = int(max_host_memory)
        self.frame_rate = float(frame_rate)
        self.channel_dims = dict(channel_dims or {})
        self.field_of_view = float(field_of_view)
        self.layer_spacing = float(layer_spacing)
        self.store_weights = store_weights
        self.compression = compression
        if writer not in ("auto", "thread", "inline"):
            raise ValueError(
                f"Recorder: `writer` must be 'auto', 'thread' or 'inline'; got {writer!r}."
            )
        self.writer = writer
        self._handles: list[Any] = []
        self._store: RecordingWriter | None = None
        self._open = False

    # -- context management ------------------------------------------------------------
    def __enter__(self) -> Recorder:
        self.open()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(_error=exc)

    def open(self) -> Recorder:
        """Create or open the store and attach the hooks (``with`` does this for you)."""
        if self._open:
            raise RecordingError("Recorder: already open.")
        modules = dict(self.model.named_modules())
        provenance = {
            "netphys_version": _version(),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "platform": sys.platform,
            "model_class": type(self.model).__name__,
            "model_repr": repr(self.model)[:20000],
            "n_parameters": int(sum(p.numel() for p in self.model.parameters())),
            "frame_rate": self.frame_rate,
            "seed": self.seed,
            "recorder_args": {
                "layers": self.layers,
                "dtype": self.dtype,
                "max_units": self.max_units,
                "chunk_frames": self.chunk_frames,
                "max_host_memory": self.max_host_memory,
                "field_of_view": self.field_of_view,
                "layer_spacing": self.layer_spacing,
                "compression": self.compression,
                "writer": self.writer,
            },
            "variability": self.variability.attrs(),
        }
        self._store = self._make_store(provenance)
        self._frame = self._store.frames
        existing = self._store.root["session"]
        self._session = int(existing[:].max()) if existing.shape[0] else -1
        self._session_started = False
        self._epoch = -1
        self._step = -1
        self._pending: dict[str, Any] = {}
        self._paused = 0
        self._in_forward = False
        self._calls: dict[str, int] = {}
        self._captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._first: dict[str, torch.Tensor] = {}
        self._layouts: dict[str, LayerLayout] = {}
        self._pool: BlockPool | None = None
        self._writer: WriterThread | None = None
        self._block: Block | None = None
        self._suspended = False
        self._weights_done: set[int] = set()
        try:
            self._handles.append(
                self.model.register_forward_pre_hook(self._root_pre, with_kwargs=True)
            )
            self._handles.append(
                self.model.register_forward_hook(self._root_post, with_kwargs=True)
            )
            self.variability.attach()  # unit hooks before the recording hooks: they see its output
            for name in self.layers:
                self._handles.append(modules[name].register_forward_hook(self._layer_hook(name)))
        except BaseException:
            self._remove_hooks()
            raise
        self._open = True
        return self

    def _make_store(self, provenance: dict[str, Any]) -> Any:
        """The store writer (DistributedRecorder overrides this with a per-rank writer)."""
        return RecordingWriter(
            self.path,
            mode=self.mode,
            chunk_frames=self.chunk_frames or 1024,
            attrs=provenance,
            compression=self.compression,
        )

    def close(self, *, _error: BaseException | None = None) -> None:
        """Flush every complete frame, stop the writer, remove the hooks, finalise the store."""
        if not self._open:
            return
        self._open = False
        self._remove_hooks()
        writer_error: BaseException | None = None
        try:
            if self._writer is not None:
                if self._block is not None and self._block.n > 0 and self._writer.error is None:
                    self._submit(self._block)
                    self._block = None
                self._writer.finish()
                writer_error = self._writer.error
        finally:
            if self._store is not None and writer_error is None:
                self._store.root.attrs.update(
                    {
                        "frames_committed": self._store.frames,
                        "variability": self.variability.attrs(),
                    }
                )
                self._store.close(status="complete")
        if writer_error is not None and _error is None:
            self._writer.raise_if_failed()  # type: ignore[union-attr]

    def _remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.variability.detach()

    def _variability_active(self) -> bool:
        return self._open and self._in_forward and not self._suspended

    # -- user controls -----------------------------------------------------------------
    def session(
        self, session: int | None = None, *, epoch: int | None = None, step: int | None = None
    ) -> int:
        """Start a new session (checkpoint); frames recorded after this call belong to it.

        Parameters
        ----------
        session : int, optional
            Session id; default: previous id + 1 (0 for the first).
        epoch, step : int, optional
            Training epoch and step stored with each frame.

        Returns
        -------
        int
            The session id.
        """
        self._check_open()
        new = self._session + 1 if session is None else int(session)
        if new < 0:
            raise ValueError(f"Recorder.session(): `session` must be >= 0; got {new}.")
        self._session = new
        self._session_started = True
        self._epoch = -1 if epoch is None else int(epoch)
        self._step = -1 if step is None else int(step)
        return new

    def annotate(
        self,
        *,
        stimulus: Any = None,
        label: Any = None,
        condition: str | Sequence[str] | None = None,
        repeat: Any = None,
    ) -> None:
        """Describe the frames of the next forward call (one value, or one per sample).

        Parameters
        ----------
        stimulus : int or array of int, optional
            Index of each presented sample in its dataset (-1: none).
        label : int or array of int, optional
            Category label of each sample (-1: none); gives the per-frame loss.
        condition : str, optional
            Presentation condition, e.g. ``"stimulus"`` (default) or ``"spontaneous"``.
        repeat : int or array of int, optional
            Repeat index of the presentation.
        """
        self._check_open()
        for key, value in (
            ("stimulus", stimulus),
            ("label", label),
            ("condition", condition),
            ("repeat", repeat),
        ):
            if value is not None:
                self._pending[key] = value

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Context in which forward calls are not recorded (e.g. the training loop)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    @property
    def frames(self) -> int:
        """Frames recorded so far (committed or staged)."""
        return getattr(self, "_frame", 0)

    def _check_open(self) -> None:
        if not self._open:
            raise RecordingError("Recorder: not open; use `with netphys.Recorder(...) as rec:`.")

    # -- hooks -------------------------------------------------------------------------
    def _root_pre(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        if self._paused or self._suspended or self._in_forward:
            return
        if self._writer is not None:
            self._writer.raise_if_failed()
        self._in_forward = True
        self._calls = {}
        self._captured = {}
        self._batch: int | None = None
        self._segments: list[tuple[Block, int, int, int]] = []

    def _layer_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not self._in_forward or self._suspended:
                return
            count = self._calls.get(name, 0) + 1
            self._calls[name] = count
            if count > 1:
                raise RecordingError(
                    f"Recorder: module {name!r} ran {count} times in one forward call "
                    "(a module reused inside the model). Each recorded layer must run once per "
                    "forward: give each use its own module instance, or record the module that "
                    "contains them."
                )
            t = extract_tensor(output, name).detach()
            if t.ndim < 2:
                raise RecordingError(
                    f"Recorder: module {name!r} output has shape {tuple(t.shape)}; expected a "
                    "batch dimension first and at least one feature dimension."
                )
            if not t.is_floating_point():
                raise RecordingError(
                    f"Recorder: module {name!r} output has dtype {t.dtype}; only floating-point "
                    "activity can be recorded."
                )
            b = t.shape[0]
            if self._batch is None:
                self._batch = b
            elif b != self._batch:
                raise RecordingError(
                    f"Recorder: module {name!r} output has batch size {b} but earlier layers had "
                    f"{self._batch}; outputs must be batch-first (e.g. batch_first=True)."
                )
            if name not in self._layouts:
                self._first[name] = t.clone()
                return
            self._stage_layer(name, t)

        return hook

    def _root_post(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if not self._in_forward or self._suspended:
            return
        try:
            missing = [n for n in self.layers if n not in self._calls]
            if missing:
                raise RecordingError(
                    f"Recorder: layers {missing} did not run in this forward call; record only "
                    "modules that run on every call (or use `rec.paused()` for other calls)."
                )
            b = int(self._batch or 0)
            if not self._layouts:
                self._setup(output)
                for name in self.layers:
                    self._stage_layer(name, self._first.pop(name))
            self._stage_rest(b, output)
            if self.store_weights and self._session not in self._weights_done:
                self._weights_done.add(self._session)
                x = args[0] if args else next(iter(kwargs.values()), None)
                if isinstance(x, torch.Tensor):
                    self._store_weights(x[:2])
        finally:
            self._in_forward = False
            self._pending = {}

    # -- staging -----------------------------------------------------------------------
    def _setup(self, output: Any) -> None:
        """First recorded forward: unit layouts, store groups, staging pool, writer."""
        assert self._store is not None
        rng = np.random.default_rng(self.seed)
        modules = dict(self.model.named_modules())
        shapes: dict[str, tuple[int, int]] = {}
        frame_bytes = 0
        itemsize = 2 if self.dtype == "float16" else 4
        for depth, name in enumerate(self.layers):
            t = self._first[name]
            cd = channel_dim_for(modules[name], t.ndim, self.channel_dims.get(name))
            n_total = int(np.prod(t.shape[1:]))
            mu = self.max_units.get(name) if isinstance(self.max_units, Mapping) else self.max_units
            layout = LayerLayout(
                name=name,
                module_type=type(modules[name]).__name__,
                raw_shape=tuple(t.shape[1:]),
                channel_dim=cd,
                depth=depth,
                selection=choose_units(n_total, mu, rng),
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
        frame_bytes += 64 + (width or 0) * 4
        # host staging: n_blocks blocks of `capacity` frames within max_host_memory; a block
        # is one time chunk on disk, so every write covers whole chunks
        n_blocks = 3
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
        for name, layout in self._layouts.items():
            mu = self.max_units.get(name) if isinstance(self.max_units, Mapping) else self.max_units
            self._store.add_layer(
                name,
                unit_coords=layout.unit_coords(),
                n_nodes=layout.n_channels,
                dtype=self.dtype,
                attrs=layout.attrs() | {"max_units": mu, "seed": self.seed},
            )
        if width is not None:
            self._store.add_behaviour(width)
        device = next(iter(self._first.values())).device
        self._cuda = device.type == "cuda"
        self._copies: Any = CopyStream(device) if self._cuda else None
        self._pool = BlockPool(
            n_blocks, capacity, shapes, _DTYPES[self.dtype], width, pin=self._cuda
        )
        self._writer = WriterThread(self._store, self._pool, inline=self._inline_writes())
        self._writer.start()
        self._block = None

    def _inline_writes(self) -> bool:
        """Write in the recording thread when the model already uses every CPU core."""
        if self.writer == "thread":
            return False
        if self.writer == "inline":
            return True
        if self._cuda:
            return False  # the GPU computes while the host writes
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return torch.get_num_threads() >= (cores or 1)

    def _behaviour_width(self, output: Any) -> int | None:
        try:
            t = extract_tensor(output, "<model output>")
        except RecordingError:
            logger.info("model output is not a tensor; no behaviour recorded")
            return None
        if not t.is_floating_point() or t.ndim < 1:
            return None
        width = int(np.prod(t.shape[1:])) if t.ndim > 1 else 1
        if width > _MAX_BEHAVIOUR_WIDTH:
            logger.info("model output has %d values per frame; behaviour not recorded", width)
            return None
        return width

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
        extra: list[Block] = []
        while done < b:
            if block is None or offset >= block.capacity:
                block = self._pool.acquire(self._writer)
                block.n = 0
                block.start = -1
                extra.append(block)
                offset = 0
            take = min(b - done, block.capacity - offset)
            segs.append((block, offset, done, done + take))
            done += take
            offset += take
        self._segments = segs
        return segs

    def _stage_layer(self, name: str, t: torch.Tensor) -> None:
        layout = self._layouts[name]
        b = t.shape[0]
        if tuple(t.shape[1:]) != layout.raw_shape:
            raise RecordingError(
                f"Recorder: module {name!r} output has per-sample shape {tuple(t.shape[1:])} but "
                f"{layout.raw_shape} when the recording started; inputs of one recording must "
                "have the same shape."
            )
        if layout.channel_dim != 1:
            t = t.movedim(layout.channel_dim, 1)
        flat = t.reshape(b, -1)
        nodes = t.reshape(b, layout.n_channels, -1).float().mean(-1)
        if layout.selection is not None:
            flat = flat.index_select(1, self._index[name])
        if self._cuda:
            flat = flat.to(_DTYPES[self.dtype])
        segments = self._segments_for(b)
        with self._copies.copying(flat, nodes) if self._cuda else contextlib.nullcontext():
            for block, r0, b0, b1 in segments:  # on the GPU: on the copy stream (_gpu.py)
                block.activity[name][r0 : r0 + b1 - b0].copy_(flat[b0:b1], non_blocking=self._cuda)
                block.nodes[name][r0 : r0 + b1 - b0].copy_(nodes[b0:b1], non_blocking=self._cuda)

    def _stage_rest(self, b: int, output: Any) -> None:
        """Frame table and behaviour for the batch; commit its rows; submit full blocks."""
        assert self._store is not None
        table = self._frame_table(b)
        beh = self._behaviour(output, b, table["label"])
        segs = self._segments_for(b)
        for block, r0, b0, b1 in segs:
            n = b1 - b0
            for key, values in table.items():
                block.table[key][r0 : r0 + n] = values[b0:b1]
            if block.behaviour is not None and beh is not None:
                with self._copies.copying(*beh.values()) if self._cuda else contextlib.nullcontext():
                    for key, values in beh.items():
                        block.behaviour[key][r0 : r0 + n].copy_(
                            values[b0:b1], non_blocking=self._cuda
                        )
            if block.start < 0:
                block.start = self._frame + b0
            block.n = r0 + n
        self._frame += b
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
        if self._cuda:
            block.event = self._copies.event()  # after this block's copies (_gpu.CopyStream)
        self._writer.submit(block)
        if block is self._block:
            self._block = None

    def _frame_table(self, b: int) -> dict[str, np.ndarray]:
        assert self._store is not None
        if not self._session_started:
            self._session = max(self._session, 0)
            self._session_started = True
        out = {
            "frame_time": (self._frame + np.arange(b)) / self.frame_rate,
            "session": np.full(b, self._session, "int64"),
            "epoch": np.full(b, self._epoch, "int64"),
            "step": np.full(b, self._step, "int64"),
        }
        for key in ("stimulus", "label", "repeat"):
            out[key] = self._per_frame_int(key, self._pending.get(key, -1), b)
        cond = self._pending.get("condition", "stimulus")
        if isinstance(cond, str):
            out["condition"] = np.full(b, self._store.condition_code(cond), "int16")
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
        if arr.ndim == 0:
            arr = np.full(b, arr)
        if arr.ndim != 1 or len(arr) != b:
            raise ValueError(
                f"Recorder.annotate(): `{key}` has shape {arr.shape} but the forward call has "
                f"{b} samples; pass one value or one per sample."
            )
        if not np.issubdtype(arr.dtype, np.integer):
            if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
                arr = arr.astype("int64")
            else:
                raise TypeError(
                    f"Recorder.annotate(): `{key}` must hold integers; got dtype {arr.dtype}."
                )
        return arr.astype("int64")

    def _behaviour(self, output: Any, b: int, labels: np.ndarray) -> dict[str, torch.Tensor] | None:
        if self._store is None or self._store._behaviour_width is None:
            return None
        t = extract_tensor(output, "<model output>").detach()
        logits = t.reshape(b, -1).float()
        if logits.shape[1] > 1:
            prob = torch.softmax(logits, dim=1)
            confidence, prediction = prob.max(dim=1)
        else:
            confidence = torch.sigmoid(logits[:, 0])
            prediction = (logits[:, 0] > 0).long()
        loss = torch.full((b,), float("nan"), device=logits.device)
        lab = torch.as_tensor(labels, device=logits.device)
        ok = (lab >= 0) & (lab < logits.shape[1])
        if logits.shape[1] > 1 and bool(ok.any()):
            loss[ok] = F.cross_entropy(logits[ok], lab[ok], reduction="none")
        return {"logits": logits, "prediction": prediction, "confidence": confidence, "loss": loss}

    def _store_weights(self, example: torch.Tensor) -> None:
        """Static node-to-node weights of this session (eval mode, RNG and modes restored)."""
        try:
            from netphys.recorder.graph import node_weights
        except ImportError:  # pragma: no cover - graph module is part of the package
            return
        assert self._store is not None
        modes = {m: m.training for m in self.model.modules()}
        cpu_state = torch.random.get_rng_state()
        cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        self._suspended = True
        try:
            self.model.eval()
            with torch.no_grad():
                weights = node_weights(self.model, self.layers, example)
            if weights:
                self._store.write_graph(self._session, weights)
        except Exception:
            logger.info("node weights not stored for session %d", self._session, exc_info=True)
        finally:
            self._suspended = False
            for m, flag in modes.items():
                m.training = flag
            torch.random.set_rng_state(cpu_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state_all(cuda_state)
