"""``max_host_memory`` caps the recorder's host memory under every writer path.

Peak host memory is measured with :mod:`tracemalloc`: the staging blocks are numpy arrays
(seen through torch) and the writer's copies (Blosc output, edge-chunk padding) are numpy or
bytes objects, so tracemalloc sees them all, in every thread. The model's own tensors (torch's
allocator) are not traced, which is what we want: they are the model's memory, not netphys'.
Each recording writes several times more data than the cap; the peak over the whole recording
(close included) must stay under the cap plus a fixed tolerance for Python objects (zarr
metadata, futures). Nothing here depends on timing: the thread writer may run ahead or behind,
the pool of blocks bounds it either way.
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

import netphys
from netphys.errors import RecordingError

CAP = 2 << 20  # 2 MiB
#: Python objects: zarr/asyncio metadata garbage awaiting the cyclic GC (~7 kB per block
#: written, in cycles), the layer's unit coordinates (~40 kB), frame-table strings
TOLERANCE = 512 << 10
FRAMES = 242  # x 18.5 kB per frame: 4.5 MB written, over 2x the cap; 11 blocks of 22


def _model() -> nn.Module:
    torch.manual_seed(0)
    # 8 x 24 x 24 = 4608 float32 units (18.4 kB) per frame, 8 nodes, 3 outputs
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4608, 3)
    ).eval()


def _recorder(model: nn.Module, path, writer: str, **kw) -> netphys.Recorder:
    common = {"layers": ["1"], "max_host_memory": CAP, "compression": "lz4", **kw}
    if writer == "rank":  # the per-rank writer of DistributedRecorder (any world size)
        return netphys.DistributedRecorder(model, path, rank=0, world_size=1, **common)
    return netphys.Recorder(model, path, writer=writer, store_weights=False, **common)


def _record(tmp_path, writer: str, x: torch.Tensor, name: str, **kw) -> tuple[int, int, int]:
    """Record ``x`` in batches of 11; return (peak - base, pool bytes, base-to-pool growth)."""
    model = _model()
    path = tmp_path / f"{name}.zarr"
    rec = _recorder(model, path, writer, mode="w", **kw)
    with torch.no_grad(), rec:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        model(x[:11])
        grown = tracemalloc.get_traced_memory()[0] - base
        for s in range(11, len(x), 11):
            model(x[s : s + 11])
        pool = rec._pool
        pool_bytes = pool.n_blocks * pool.capacity * (4608 * 4 + 8 * 4)  # activity + nodes
    peak = tracemalloc.get_traced_memory()[1] - base
    return peak, pool_bytes, grown


@pytest.mark.parametrize("writer", ["inline", "thread", "rank"])
def test_peak_host_memory_stays_under_the_cap(tmp_path, writer):
    x = torch.randn(FRAMES, 1, 24, 24, generator=torch.Generator().manual_seed(1))
    kw = {"chunk_frames": 22} if writer == "rank" else {}  # ranks: chunks fixed at creation
    tracemalloc.start()
    try:
        _record(tmp_path, writer, x[:22], "warm", **kw)  # one-off imports and caches
        gc.collect()
        peak, pool_bytes, grown = _record(tmp_path, writer, x, "r", **kw)
    finally:
        tracemalloc.stop()
    assert FRAMES * 4608 * 4 > 2 * CAP  # over twice the cap went through
    assert grown >= pool_bytes > CAP // 2  # tracemalloc sees the staging blocks (not vacuous)
    assert peak <= CAP + TOLERANCE, f"{writer}: peak {peak / 2**20:.2f} MiB over the cap"
    # and the recording is complete and exact
    act = netphys.layer_activity(tmp_path / "r.zarr", "1").values
    with torch.no_grad():
        want = torch.relu(_model()[0](x)).reshape(FRAMES, -1).numpy()
    np.testing.assert_array_equal(act, want)


def test_rank_writer_refuses_time_chunks_larger_than_the_cap(tmp_path):
    """Rank chunks are fixed when the store is made: a cap they do not fit is refused."""
    model = _model()
    path = tmp_path / "r.zarr"
    with (
        pytest.raises(RecordingError, match=r"raise `max_host_memory`.*at most 22"),
        torch.no_grad(),
        netphys.DistributedRecorder(
            model, path, rank=0, world_size=1, layers=["1"], max_host_memory=CAP,
            chunk_frames=1024,
        ),
    ):  # fmt: skip
        model(torch.randn(8, 1, 24, 24))
