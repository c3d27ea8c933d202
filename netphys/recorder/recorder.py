"""The Recorder: image a PyTorch model with forward hooks into a Zarr recording."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from netphys._validation import (
    as_rng,
    check_bool,
    check_choice,
    check_int,
    check_positive_float,
)
from netphys.errors import RecordingError
from netphys.io.recording import COMPRESSIONS, RecordingWriter
from netphys.recorder._hooks import Hooks
from netphys.recorder._layers import resolve_layers, site_of
from netphys.recorder._stage import DTYPES
from netphys.recorder._variability import VariabilityHooks

__all__ = ["Recorder"]

logger = logging.getLogger(__name__)

_UNSET: Any = object()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("netphys")
    except Exception:  # pragma: no cover
        return "unknown"


def _check_max_units(max_units: Any, layers: list[str]) -> Any:
    if isinstance(max_units, Mapping):
        bad = [k for k in max_units if k not in layers]
        if bad:
            raise ValueError(
                f"Recorder: `max_units` names layers {bad} that are not recorded; "
                f"recorded layers are {layers}."
            )
        return {k: check_int(v, func="Recorder", name=f"max_units[{k!r}]", minimum=1)
                for k, v in max_units.items()}  # fmt: skip
    if max_units is None:
        return None
    return check_int(max_units, func="Recorder", name="max_units", minimum=1)


class Recorder(Hooks):
    """Record unit and node activity of a PyTorch model into a Zarr recording.

    Every forward call of ``model`` made inside the ``with`` block is recorded: the outputs
    of the chosen ``layers`` (every element is a *unit*; a channel's spatial mean is a
    *node*), the model's outputs as behaviour, and a per-frame table (session, stimulus,
    label, condition, repeat, train/eval mode). Hooks are removed when the block exits, on
    exceptions too; frames already handed to the writer are kept. A forward call that raises
    records nothing and leaves the Recorder ready for the next one.

    Parameters
    ----------
    model : torch.nn.Module
        The model. Recording works on CPU and GPU; the model's device is used as is.
    path : str or Path
        Directory of the recording (``*.zarr``).
    layers : str or list of str, optional
        Module names (from ``model.named_modules()``; list them with
        :func:`netphys.recorder.list_layers`) in forward order. A module that runs several
        times per forward is recorded per call as ``"name:0"``, ``"name:1"``, ...
        Default: every activation module (or, without any, every transformer layer, else every
        leaf); a default module that runs k > 1 times per forward (e.g. ``layer1.0.relu`` in a
        torchvision ResNet block) becomes k layers ``"layer1.0.relu:0"`` ...
    dtype : {"float32", "float16", "float64"}, optional
        Storage type of unit activity. float32 and float64 are bit-exact for outputs of that
        type; float16 rounds to nearest. Default: float64 when a recorded output is float64,
        else float32 (when appending: the recording's dtype).
    max_units : int or dict, optional
        Maximum units per layer (or ``{layer: n}``). Larger layers keep a seeded random
        subset, like choosing a field of view; the choice is stored (``unit_id``).
    rng : int, numpy.random.Generator or None, default=0
        Randomness of the unit selection; an int seed is stored in the recording.
    mode : {"w-", "w", "a"}, default="w-"
        Refuse an existing path, replace an existing recording (only a recording, and only
        once the new one has its first frames), or append new sessions to it.
    chunk_frames : int, optional
        Frames per time chunk and per flush. Default: a power of two between 256 and 16384
        giving about 32 MB per flush (few large writes keep up with fast models). Reduced if
        needed to respect ``max_host_memory``; an interrupted recording loses at most the
        frames of one flush.
    max_host_memory : int, default=512 MiB
        Cap in bytes on the recorder's host memory: the staging blocks (3) plus room for the
        writer's compressed and padded copies (2 blocks); the block size follows from it.
        Measured with ``tracemalloc`` under every writer (``tests/recorder/test_memory_cap.py``:
        peak within the cap + 512 KiB of Python objects). Exceeded only by a forward call
        whose batch alone is larger than the staging blocks (the pool grows to hold it).
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
    compression : {"auto", "lz4", "zstd", "none"} or None, default="auto"
        Codec of unit activity: lz4 is fast, zstd smaller, "none" the cheapest on CPU.
        "auto" stores each layer with lz4 if a sample of its first batch packs at least
        1.5x smaller, uncompressed otherwise (dense float16 activations barely compress, and
        lz4 on them was the largest single cost of recording on CPU); the choice and the
        sampled ratio are in the layer's attrs (``compression``, ``lz4_ratio_first_batch``).
    writer : {"auto", "thread", "inline"}, default="auto"
        Where chunks are compressed and written: a background thread, or inline in the
        recording thread at each flush. "auto" picks the thread on a GPU or with
        ``direct_io`` (the writes then wait for the disk, not for a CPU core: on a 2-core VM the
        thread was 0.06-0.10 of bare throughput faster for the wide CNN and the ResNet-18 shape
        of ``benchmarks/record_overhead.py``), and inline on a CPU-bound model that uses all
        cores and writes through the page cache. A small, fast model recorded in full on a
        few cores can be faster inline: the demo CNN, whose forward pass makes ~400 MB/s of
        float16 on that VM, ran at 0.43 of bare inline against 0.40 with the thread.
    direct_io : bool, default=True
        Write chunk files of 1 MiB or more with ``O_DIRECT`` where the OS and file system
        allow it (Linux; elsewhere, or where it is refused, ordinary writes): the disk takes
        them straight from the writer's buffer, without the kernel's page-cache copy. On a
        2-core VM this cut the recording's CPU time by 10-17%. Pass False on a slow disk
        (a hard disk, a network share) for a recording that fits in RAM: the page cache
        then absorbs the writes and the model does not wait for the disk.
    variability : spec, list of specs, dict or str, optional
        Sources of trial-to-trial variability applied to every recorded forward call (see
        :mod:`netphys.variability`: ``InputNoise``, ``Jitter``, ``Dropout``, ``Poisson``),
        drawn from a generator seeded by ``rng`` (an int seed as is; otherwise a seed drawn
        from it) and stored in the root attrs under ``"variability"``. None (default):
        noise-free, bit-exact activity.
    seed : int, optional
        Deprecated alias of ``rng``.

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
        dtype: str | None = None,
        max_units: int | Mapping[str, int] | None = None,
        rng: int | np.random.Generator | None = 0,
        mode: str = "w-",
        chunk_frames: int | None = None,
        max_host_memory: int = 512 << 20,
        frame_rate: float = 30.0,
        channel_dims: Mapping[str, int] | None = None,
        field_of_view: float = 1000.0,
        layer_spacing: float = 100.0,
        store_weights: bool = True,
        compression: str | None = "auto",
        writer: str = "auto",
        direct_io: bool = True,
        variability: Any = None,
        seed: Any = _UNSET,
    ) -> None:
        func = "Recorder"
        self.layers = resolve_layers(model, layers)
        self._auto_layers = layers is None
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(
                f"Recorder: `dtype` must be 'float32', 'float16', 'float64' or None (the "
                f"model's precision); got {dtype!r}."
            )
        if seed is not _UNSET:
            warnings.warn(
                "Recorder: `seed=` is deprecated; pass `rng=` (an int seed or a Generator).",
                FutureWarning,
                stacklevel=2,
            )
            rng = seed
        self._unit_rng = as_rng(rng, func=func)
        self._seed_attr = int(rng) if isinstance(rng, (int, np.integer)) else None
        self.variability = VariabilityHooks(
            model,
            variability,
            seed=self._variability_seed(),
            layers=list(dict.fromkeys(site_of(n)[0] for n in self.layers)),
            active=self._variability_active,
        )
        self.max_units = _check_max_units(max_units, self.layers)
        if chunk_frames is not None:
            check_int(chunk_frames, func=func, name="chunk_frames", minimum=1)
        self.model = model
        self.path = Path(path)
        self.dtype = dtype
        self.mode = check_choice(mode, ("w-", "w", "a"), func=func, name="mode")
        self.chunk_frames = chunk_frames
        self.max_host_memory = check_int(
            max_host_memory, func=func, name="max_host_memory", minimum=1
        )
        self.frame_rate = check_positive_float(frame_rate, func=func, name="frame_rate")
        self.channel_dims = {
            str(k): check_int(v, func=func, name=f"channel_dims[{k!r}]")
            for k, v in dict(channel_dims or {}).items()
        }
        self.field_of_view = check_positive_float(field_of_view, func=func, name="field_of_view")
        self.layer_spacing = check_positive_float(
            layer_spacing, func=func, name="layer_spacing", allow_zero=True
        )
        self.store_weights = check_bool(store_weights, func=func, name="store_weights")
        self.compression = check_choice(
            "none" if compression is None else compression,
            COMPRESSIONS,
            func=func,
            name="compression",
        )
        self.writer = check_choice(writer, ("auto", "thread", "inline"), func=func, name="writer")
        self.direct_io = check_bool(direct_io, func=func, name="direct_io")
        self._handles: list[Any] = []
        self._store = None
        self._open = False

    def _variability_seed(self) -> int:
        """Seed of the variability noise: the int ``rng`` itself, else drawn from ``rng``."""
        if self._seed_attr is not None:
            return self._seed_attr
        return int(self._unit_rng.integers(0, 2**63 - 1))

    def _variability_active(self) -> bool:
        """Variability acts only on recorded forward calls (not paused, not netphys' probes)."""
        return self._open and self._recording()

    @property
    def seed(self) -> int | None:
        """The int seed of the unit selection (None when ``rng`` was a Generator or None)."""
        return self._seed_attr

    # -- context management ------------------------------------------------------------
    def __enter__(self) -> Recorder:
        """Open the recorder (see :meth:`open`)."""
        self.open()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Close the recorder, on exceptions too (see :meth:`close`)."""
        self.close(_error=exc)

    def _provenance(self) -> dict[str, Any]:
        return {
            "netphys_version": _version(),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "platform": sys.platform,
            "model_class": type(self.model).__name__,
            "model_repr": repr(self.model)[:20000],
            "n_parameters": int(sum(p.numel() for p in self.model.parameters())),
            "frame_rate": self.frame_rate,
            "seed": self._seed_attr,
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
                "direct_io": self.direct_io,
            },
            "variability": self.variability.attrs(),
        }

    def open(self) -> Recorder:
        """Create or open the store and attach the hooks (``with`` does this for you)."""
        if self._open:
            raise RecordingError("Recorder: already open.")
        self._store = self._make_store(self._provenance())
        try:
            if not self._auto_layers:
                self._store.check_append(self.layers, self.dtype)
            self._reset_state()
            self._attach()
        except BaseException:
            self._remove_hooks()
            self._store.abandon()
            raise
        self._open = True
        return self

    def _make_store(self, provenance: dict[str, Any]) -> Any:
        """Open the store writer (DistributedRecorder overrides this with a per-rank writer)."""
        return RecordingWriter(
            self.path,
            mode=self.mode,
            chunk_frames=self.chunk_frames or 1024,
            attrs=provenance,
            compression=self.compression,
            direct_io=self.direct_io,
        )

    def _reset_state(self) -> None:
        assert self._store is not None
        self._frame = self._store.frames
        self._session = self._store.last_session()
        self._session_started = False
        self._epoch = -1
        self._step = -1
        self._pending = {}
        self._paused = 0
        self._stack = []
        self._post_done = False
        self._calls: dict[str, int] = {}
        self._first = {}
        self._layouts = {}
        self._pool = None
        self._copies = None
        self._writer = None
        self._block = None
        self._segments = []
        self._batch = None
        self._ran: set[str] = set()
        self._training = False
        self._weights_done: set[int] = set()
        # per module: None (one call per forward), {call index: layer name}, or "auto"
        self._sites = {}
        for name in self.layers:
            module, k = site_of(name)
            if k is None:
                self._sites[module] = "auto" if self._auto_layers else None
            else:
                entry = self._sites.setdefault(module, {})
                assert isinstance(entry, dict)
                entry[k] = name

    def _attach(self) -> None:
        modules = dict(self.model.named_modules())
        self._handles.append(self.model.register_forward_pre_hook(self._root_pre))
        self._handles.append(self.model.register_forward_hook(self._root_post))
        self._handles.append(self.model.register_forward_hook(self._root_end, always_call=True))
        self.variability.attach()  # unit hooks before the recording hooks: they see its output
        for module in self._sites:
            self._handles.append(modules[module].register_forward_hook(self._layer_hook(module)))

    def close(self, *, _error: BaseException | None = None) -> None:
        """Flush every complete frame, stop the writer, remove the hooks, finalise the store.

        If the recording was new and no frame was recorded because of an error (e.g. the first
        forward failed), the store is removed instead, so that a rerun finds the path free
        (``mode="w"`` keeps the recording it would have replaced).
        """
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
        finally:
            if self._writer is not None:  # also when the inline flush above raised it
                writer_error = self._writer.error
            if self._store is not None and writer_error is None:
                if _error is not None and self._store.frames == 0:
                    self._store.abandon()
                else:
                    # input noise may have fixed its scale at the first forward: store it
                    self._store.close(
                        status="complete", attrs={"variability": self.variability.attrs()}
                    )
            elif self._store is not None:
                self._store.abandon() if self._store.frames == 0 else self._store.release()
        if writer_error is not None and _error is None:
            assert self._writer is not None
            self._writer.raise_if_failed()

    def _remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.variability.detach()

    # -- user controls -----------------------------------------------------------------
    def session(
        self, session: int | None = None, *, epoch: int | None = None, step: int | None = None
    ) -> int:
        """Start a new session (checkpoint); frames recorded after this call belong to it.

        Parameters
        ----------
        session : int, optional
            Session id (>= 0); default: previous id + 1 (0 for the first).
        epoch, step : int, optional
            Training epoch and step stored with each frame.

        Returns
        -------
        int
            The session id.
        """
        self._check_open()
        func = "Recorder.session"
        if session is None:
            new = self._session + 1
        else:
            new = check_int(session, func=func, name="session", minimum=0)
        self._epoch = -1 if epoch is None else check_int(epoch, func=func, name="epoch", minimum=0)
        self._step = -1 if step is None else check_int(step, func=func, name="step", minimum=0)
        self._session = new
        self._session_started = True
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
