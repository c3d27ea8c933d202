"""Write paths for a recording's chunks: netphys's direct writer against zarr, zarrs, TensorStore.

Issue 13 lists candidates to *measure* for the recorder's write path: zarr-python's own codec
pipeline, the ``zarrs`` codec pipeline (Rust, releases the GIL), sharded arrays (fewer, larger
objects) and TensorStore. This script writes the same chunks every way, with no model
running, and prints wall and CPU time, files made and the ratio to netphys's writer.

What is written: a short netphys recording of the model (demo CNN or wide CNN, all units,
float16, ``compression="auto"``) gives the arrays that grow along ``time`` (activity, nodes,
behaviour, the numeric frame-table columns) with their real chunk shapes, codecs and values.
Each method creates those arrays empty at their final length in a fresh store, then writes one
recorder block (one time chunk of every array) ``--blocks`` times, one block after the other,
as the recorder's flushes do (the string ``condition`` column is left out: zarrs and
TensorStore differ in string support, and it is one small chunk per block).

Methods
-------
- ``netphys``: :class:`netphys.io._chunks.ChunkWriter` (two encoder threads, ``O_DIRECT`` for
  chunks of at least 1 MiB), what the recorder uses;
- ``netphys page cache``: the same with ``direct_io=False``;
- ``zarr``: ``arr[a:b] = values`` for each array, zarr-python's default codec pipeline;
- ``zarr + zarrs``: the same with ``codec_pipeline.path = zarrs.ZarrsCodecPipeline``;
- ``zarr sharded`` / ``zarr sharded + zarrs``: the activity arrays sharded, one shard per time
  chunk holding all units (inner chunks as before), so a block writes one file per layer;
- ``tensorstore`` / ``tensorstore sharded``: the ``zarr3`` driver, every array's write issued
  at once and awaited together (its own thread pool).

Every method's store is read back with zarr and compared bit for bit with the values written;
a mismatch stops the script. Methods are interleaved and repeated (``--repeats``); the summary
gives medians and the ratio of each to ``netphys`` in the same process.

Usage: ``python benchmarks/write_paths.py [--model demo|wide] [--blocks 16] [--repeats 3]``
(``pip install zarrs tensorstore`` for those rows; missing ones are skipped and named).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import record_overhead  # this folder: the models and the recording loop of that benchmark
import torch
import zarr

from netphys.experiments._models import DemoCNN
from netphys.io import _chunks as chunks
from netphys.recorder._layers import default_layers


def source_recording(model_name: str, folder: Path) -> tuple[dict[str, Any], int]:
    """Record two time chunks of the model; return its time arrays' specs and values."""
    if model_name == "demo":
        model, shape, frames = DemoCNN().eval(), (1, 8, 8), 8192
    else:
        model, shape, frames = record_overhead.wide_cnn().eval(), (3, 32, 32), 256
    layers = default_layers(model)
    x = torch.randn(frames, *shape, generator=torch.Generator().manual_seed(0))
    path = folder / "source.zarr"
    record_overhead.run_netphys(
        model, x, 256 if model_name == "demo" else 64, torch.device("cpu"), layers,
        "float16", path, "auto", "auto",
    )  # fmt: skip
    root = zarr.open_group(path, mode="r")
    arrays: dict[str, Any] = {}
    chunk_t = None
    for name, arr in _time_arrays(root):
        c = int(arr.chunks[0])
        chunk_t = c if chunk_t is None else chunk_t
        if c != chunk_t:
            raise RuntimeError(f"{name}: time chunk {c}, expected {chunk_t}")
        arrays[name] = {
            "chunks": tuple(int(v) for v in arr.chunks),
            "dtype": arr.dtype,
            "compressors": arr.compressors,
            "fill_value": arr.fill_value,
            "values": np.asarray(arr[:c]),
        }
    assert chunk_t is not None
    return arrays, chunk_t


def _time_arrays(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for name, node in group.members():
        full = f"{prefix}{name}"
        if isinstance(node, zarr.Group):
            out += _time_arrays(node, full + "/")
        elif (node.metadata.dimension_names or ("",))[0] == "time" and node.dtype.kind in "fiu":
            out.append((full, node))
    return sorted(out)


def _is_activity(name: str) -> bool:
    return name.endswith("/activity")


def create_zarr(path: Path, arrays: dict[str, Any], n: int, *, sharded: bool) -> dict[str, Any]:
    root = zarr.open_group(path, mode="w")
    out = {}
    for name, spec in arrays.items():
        chunks_ = spec["chunks"]
        shape = (n, *spec["values"].shape[1:])
        shards = None
        if sharded and _is_activity(name):  # one shard: a time chunk of every unit
            tail = zip(shape[1:], chunks_[1:], strict=True)
            shards = (chunks_[0], *(-(-s // c) * c for s, c in tail))
        out[name] = root.create_array(
            name, shape=shape, chunks=chunks_, shards=shards, dtype=spec["dtype"],
            compressors=spec["compressors"], fill_value=spec["fill_value"],
            dimension_names=["time", *(f"d{i}" for i in range(1, len(shape)))],
        )  # fmt: skip
    return out


def write_netphys(path: Path, arrays: dict[str, Any], blocks: int, c: int, direct: bool) -> None:
    handles = create_zarr(path, arrays, blocks * c, sharded=False)
    writer = chunks.ChunkWriter(path, direct_io=direct)
    try:
        for b in range(blocks):
            pairs = [(handles[k], spec["values"]) for k, spec in arrays.items()]
            chunks.write_arrays(writer, pairs, b * c)
    finally:
        writer.close()


def write_zarr(path: Path, arrays: dict[str, Any], blocks: int, c: int, *, sharded: bool) -> None:
    handles = create_zarr(path, arrays, blocks * c, sharded=sharded)
    for b in range(blocks):
        for k, spec in arrays.items():
            handles[k][b * c : (b + 1) * c] = spec["values"]


def write_tensorstore(
    path: Path, arrays: dict[str, Any], blocks: int, c: int, *, sharded: bool
) -> None:
    import tensorstore as ts

    create_zarr(path, arrays, blocks * c, sharded=sharded)  # same documents as zarr's
    stores = {
        k: ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / k)}},
                   open=True).result()
        for k in arrays
    }  # fmt: skip
    for b in range(blocks):
        futures = [stores[k][b * c : (b + 1) * c].write(s["values"]) for k, s in arrays.items()]
        for f in futures:
            f.result()


def check(path: Path, arrays: dict[str, Any], blocks: int, c: int, label: str) -> None:
    """Read the store back with zarr's default pipeline; every value must be the one written."""
    with zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
        root = zarr.open_group(path, mode="r")
        for k, spec in arrays.items():
            got = np.asarray(root[k][:])
            want = np.concatenate([spec["values"]] * blocks)
            if got.shape != want.shape or got.tobytes() != want.tobytes():
                raise AssertionError(f"{label}: {k} read back differs from what was written")


def n_files(path: Path) -> int:
    return sum(1 for f in path.rglob("*") if f.is_file() and f.name != "zarr.json")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", choices=["demo", "wide"], default="demo")
    p.add_argument("--blocks", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="netphys-writes-", dir=Path.cwd()))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    arrays, c = source_recording(args.model, tmp)
    mb = sum(s["values"].nbytes for s in arrays.values()) * args.blocks / 1e6
    print(
        f"{args.model}: {len(arrays)} time arrays, time chunk {c} frames, {args.blocks} blocks, "
        f"{mb:.0f} MB of values; zarr {zarr.__version__}, torch {torch.__version__}"
    )
    for name, spec in arrays.items():
        if _is_activity(name):
            print(f"  {name}: {spec['values'].shape[1]} units, chunks {spec['chunks']}")
    default_pipe = "zarr.core.codec_pipeline.BatchedCodecPipeline"
    b, c_ = args.blocks, c
    writers: dict[str, Callable[..., None]] = {"zarr": write_zarr, "tensorstore": write_tensorstore}
    # label: (package needed, codec pipeline, writer, sharded)
    rows = {
        "zarr": (None, default_pipe, "zarr", False),
        "zarr sharded": (None, default_pipe, "zarr", True),
        "zarr + zarrs": ("zarrs", "zarrs.ZarrsCodecPipeline", "zarr", False),
        "zarr sharded + zarrs": ("zarrs", "zarrs.ZarrsCodecPipeline", "zarr", True),
        "tensorstore": ("tensorstore", default_pipe, "tensorstore", False),
        "tensorstore sharded": ("tensorstore", default_pipe, "tensorstore", True),
    }
    methods: dict[str, tuple[str, Callable[[Path], None]]] = {
        "netphys": (default_pipe, lambda q: write_netphys(q, arrays, b, c_, True)),
        "netphys page cache": (default_pipe, lambda q: write_netphys(q, arrays, b, c_, False)),
    }
    missing: list[str] = []
    for label, (package, pipe, writer, sharded) in rows.items():
        if package is not None and importlib.util.find_spec(package) is None:
            missing += [] if package in missing else [package]
            continue
        if package is not None:
            importlib.import_module(package)  # imported here, not in the first timed run
        fn = writers[writer]
        methods[label] = (pipe, lambda q, fn=fn, sh=sharded: fn(q, arrays, b, c_, sharded=sh))
    if missing:
        print(f"  not installed, rows skipped: {', '.join(missing)}")
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in methods}
    files: dict[str, int] = {}
    for r in range(args.repeats):
        order = list(methods) if r % 2 == 0 else list(reversed(methods))
        for label in order:
            pipe, fn = methods[label]
            q = tmp / f"{label.replace(' ', '_').replace('+', 'p')}-{r}.zarr"
            with zarr.config.set({"codec_pipeline.path": pipe}):
                c0, t0 = time.process_time(), time.perf_counter()
                fn(q)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            check(q, arrays, b, c_, label)
            files[label] = n_files(q)
            results[label].append((wall, cpu))
            shutil.rmtree(q)
    base_w = statistics.median(w for w, _ in results["netphys"])
    base_c = statistics.median(c for _, c in results["netphys"])
    print(f"\nmedians of {args.repeats}; every store read back and compared bit for bit")
    print(
        f"{'method':<22}{'wall s':>8}{'CPU s':>8}{'MB/s':>8}{'files':>7}{'wall/np':>9}{'CPU/np':>8}"
    )
    for label, rs in results.items():
        w = statistics.median(x for x, _ in rs)
        cpu = statistics.median(x for _, x in rs)
        print(
            f"{label:<22}{w:8.3f}{cpu:8.3f}{mb / w:8.0f}{files[label]:7d}"
            f"{w / base_w:9.2f}{cpu / base_c:8.2f}"
        )
    print(json.dumps({k: [[round(v, 4) for v in x] for x in rs] for k, rs in results.items()}))


if __name__ == "__main__":
    main()
