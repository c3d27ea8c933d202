"""DistributedRecorder: every ``torch.distributed`` rank records its own frames into one store."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import zarr
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from netphys.errors import RecordingError
from netphys.io._ranks import RankWriter, finalize
from netphys.recorder.recorder import Recorder

__all__ = ["DistributedRecorder"]


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized()


class DistributedRecorder(Recorder):
    """Record a model from many processes (DDP ranks) into one recording.

    Each rank records the frames of its own forward calls (e.g. its shard of a
    ``DistributedSampler``) into time chunks that only it writes; ``annotate(stimulus=...)``
    should give the *global* sample index of each frame. The recording is format version 3
    (``docs/format.md``): a single-process recording's content (frame table with the same
    dtypes and meanings, behaviour, node weights, variability specs) plus a per-frame ``rank``
    coordinate, rows of ``rank == -1`` being padding that :func:`netphys.open_recording`
    leaves out. Rank 0 creates the store and, once every rank has closed, writes the manifest
    (``frames_committed``, ``status``) last. A killed rank loses only the block it had not
    committed; resume with ``mode="a"`` and skip :meth:`committed_samples`.

    What differs from a single-process recording, and why:

    - ``frame_time`` is the *global* frame index over ``frame_rate``, the k-th frame of rank
      r being global frame ``k * world_size + r`` (k counts the rank's committed frames,
      across restarts): the order of a ``DistributedSampler`` epoch, so an unshuffled one
      gives the frame times of one process presenting the samples in order.
    - Node weights (``/graph``) are probed and written by rank 0 only (DDP keeps the ranks'
      weights equal); a ``DistributedDataParallel`` model is probed through its ``module``,
      outside DDP's collectives.
    - ``variability`` noise is drawn on each rank from a seed derived from ``rng`` and the
      rank (independent across ranks); the root ``variability`` attribute holds rank 0's
      resolved specs, every rank's are in ``ranks/<r>``.
    - Frames appear in rank-chunk order (sort by ``frame_time`` or ``stimulus`` for
      presentation order), and ``chunk_frames`` is fixed when rank 0 creates the store.

    Parameters
    ----------
    model, path
        As for :class:`netphys.Recorder`.
    rank, world_size : int, optional
        Default: from the initialised ``torch.distributed`` process group.
    chunk_frames : int, default=1024
        Frames per time chunk, the unit of commit (a killed rank loses at most this many).
        Every rank stages blocks of exactly this size, so it must fit in
        ``max_host_memory`` (refused with the largest size that fits otherwise).
    **kwargs
        Other :class:`netphys.Recorder` options (``layers``, ``dtype``, ``max_units``,
        ``rng``, ``mode``, ``max_host_memory``, ``compression``, ``writer``, ``direct_io``,
        ``variability``, ``store_weights``, ...).

    Examples
    --------
    >>> import torch, netphys
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    >>> with netphys.DistributedRecorder(
    ...     model, "ddp.zarr", rank=0, world_size=1, mode="w"
    ... ) as rec:  # doctest: +SKIP
    ...     rec.annotate(stimulus=torch.arange(5))
    ...     _ = model(torch.randn(5, 4))
    """

    def __init__(
        self,
        model: nn.Module,
        path: str | os.PathLike[str],
        *,
        rank: int | None = None,
        world_size: int | None = None,
        chunk_frames: int = 1024,
        **kwargs: Any,
    ) -> None:
        if rank is None or world_size is None:
            if not _dist_on():
                raise RecordingError(
                    "DistributedRecorder: torch.distributed is not initialised; call "
                    "`torch.distributed.init_process_group(...)` first or pass `rank` and "
                    "`world_size`."
                )
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        if not (isinstance(world_size, int) and world_size >= 1 and 0 <= int(rank) < world_size):
            raise ValueError(
                f"DistributedRecorder: need 0 <= `rank` < `world_size`; got rank={rank!r}, "
                f"world_size={world_size!r}."
            )
        self.rank = int(rank)  # before Recorder.__init__: the variability seed depends on it
        self.world_size = int(world_size)
        super().__init__(model, path, chunk_frames=chunk_frames, **kwargs)

    def _variability_seed(self) -> int:
        """Noise seed of this rank: drawn from ``rng``'s seed and the rank (independent)."""
        base = super()._variability_seed()
        state = np.random.SeedSequence([base, self.rank]).generate_state(2, np.uint32)
        return int((int(state[0]) << 31) | (int(state[1]) >> 1))

    def _reset_state(self) -> None:
        super()._reset_state()
        store: Any = self._store  # a RankWriter
        self._frame0 = self._frame  # rows of this run start here (a new chunk)
        self._valid0 = int(store.valid_frames)  # committed frames of earlier runs

    def _frame_table(self, b: int) -> dict[str, np.ndarray]:
        """Return the frame table with the global ``frame_time`` (see the class docstring)."""
        out = super()._frame_table(b)
        k = self._valid0 + (self._frame - self._frame0) + np.arange(b)
        out["frame_time"] = (k * self.world_size + self.rank) / self.frame_rate
        return out

    def _probe_model(self) -> tuple[nn.Module, str]:
        """Probe a DDP model through its ``module`` (a DDP forward would run collectives)."""
        if isinstance(self.model, DistributedDataParallel):
            return self.model.module, "module."
        return self.model, ""

    def _store_weights(self, args: Any) -> None:
        """Rank 0 probes and stores the session's node weights; other ranks skip the probe."""
        if self.rank == 0:
            super()._store_weights(args)
        else:
            self._weights_done.add(self._session)

    def _barrier(self) -> None:
        if _dist_on() and self.world_size > 1:
            dist.barrier()

    def _make_store(self, provenance: dict[str, Any]) -> Any:
        return RankWriter(
            self.path,
            rank=self.rank,
            world_size=self.world_size,
            mode=self.mode,
            chunk_frames=int(self.chunk_frames or 1024),
            attrs=provenance,
            compression=self.compression,
            direct_io=self.direct_io,
            barrier=self._barrier,
        )

    def close(self, *, _error: BaseException | None = None) -> None:
        """Flush and commit this rank; then rank 0 finalizes once every rank has closed.

        Without a process group, rank 0 finalizes at once: close it last (or run
        ``netphys.recover(path)`` when all ranks are done).
        """
        was_open, store = self._open, self._store
        try:
            super().close(_error=_error)
            if not was_open:
                return
            if _error is not None:
                return  # no barrier: the other ranks may never reach it; `recover` finalizes
            self._barrier()
            if self.rank == 0:
                finalize(self.path, status="complete")  # still under rank 0's lease
            self._barrier()
        finally:
            if was_open and isinstance(store, RankWriter):
                store.release_lease()

    def committed_samples(self, *, all_ranks: bool = False) -> np.ndarray:
        """Global sample indices (``stimulus``) already committed by this rank (or all ranks).

        After a restart with ``mode="a"``, skip these samples to resume without duplicates.
        """
        stim = np.asarray(zarr.open_array(self.path / "stimulus", mode="r", zarr_format=3)[:])
        ranks = np.asarray(zarr.open_array(self.path / "rank", mode="r", zarr_format=3)[:])
        keep = ranks >= 0 if all_ranks else ranks == self.rank
        return np.sort(stim[keep])
