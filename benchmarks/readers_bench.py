"""Benchmark the cost of reading untrusted files safely: guarded readers vs plain numpy/h5py.

Part 1: a suite2p-like ``stat.npy`` of ``--rois`` ROIs (disk masks, as suite2p writes them)
loaded with ``netphys.io._safe_pickle.load_npy`` (opcode prescan, allow-list unpickler, dtype
rebuild, tree check) and with ``np.load(allow_pickle=True)`` (our own file, so trusted), same
process; and the share of the opcode prescan (``netphys.io._pickle_scan``) alone.
Part 2: ``read_nwb`` of a ``write_nwb`` file (``--rois`` x ``--frames``) with the HDF5
confinement walk and byte budget, against the same call with ``trusted=True, max_bytes=None``.
Prints best-of-``--repeat`` times and their ratios.

Part 3 (``--lazy``): lazy opening of big recordings. Writes a simulated ``--lazy-units`` x
``--lazy-frames`` (default 50,000 x 100,000) ophys NWB file and a MATLAB v7.3 ``.mat`` of the
same size (HDF5, chunked ``--h5-chunks``, uncompressed, ``--lazy-dtype`` float16 by default:
10 GB each; ``--sparse`` allocates the chunks without writing them, which costs no disk),
and a suite2p folder with sparse float32 ``F.npy``/``spks.npy`` memory maps. Each file is
opened in a fresh process: first plain h5py / numpy (open the file, read a 100 x 100 corner:
the baseline), then the netphys reader (lazy); the child prints the open time, the ratio to
the baseline, the peak RSS growth, and the time and peak RSS of a mean over 2,000 frames.
Frames are reduced when the disk lacks room (it says so).

Usage::

    python benchmarks/readers_bench.py --quick
    python benchmarks/readers_bench.py --rois 10000 --frames 5000
    python benchmarks/readers_bench.py --lazy                 # 2 x 10 GB written to --tmp
    python benchmarks/readers_bench.py --lazy --sparse        # same sizes, no disk used
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    """Return the best wall time (s) of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def stat_file(folder: Path, n_rois: int, rng: np.random.Generator) -> Path:
    """Write a suite2p-like stat.npy: per ROI about 80 pixels, weights and shape statistics."""
    stat = np.empty(n_rois, dtype=object)
    for i in range(n_rois):
        npix = int(rng.integers(40, 120))
        stat[i] = {
            "ypix": rng.integers(0, 512, npix),
            "xpix": rng.integers(0, 512, npix),
            "lam": rng.random(npix).astype(np.float32),
            "med": [float(rng.integers(512)), float(rng.integers(512))],
            "npix": npix,
            "radius": 4.2,
            "compact": 1.1,
            "iplane": 0,
            "overlap": np.zeros(npix, bool),
        }
    path = folder / "stat.npy"
    np.save(path, stat, allow_pickle=True)
    return path


def _ophys_nwb(path: Path, n_units: int, n_frames: int, dtype: str, chunks: tuple, sparse: bool):
    """A minimal ophys NWB: one Fluorescence RoiResponseSeries (time, roi) + its ROI table."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["nwb_version"] = "2.7.0"
        ophys = f.create_group("processing/ophys")
        ps = ophys.create_group("ImageSegmentation/PlaneSegmentation")
        ps.attrs["neurodata_type"] = "PlaneSegmentation"
        ps.attrs["description"] = "simulated"
        ps.create_dataset("id", data=np.arange(n_units))
        series = ophys.create_group("Fluorescence/RoiResponseSeries")
        series.attrs["neurodata_type"] = "RoiResponseSeries"
        _big_dataset(series, "data", (n_frames, n_units), dtype, chunks, sparse)
        series.create_dataset("starting_time", data=0.0).attrs["rate"] = 30.0
    return path


def _mat73(path: Path, n_units: int, n_frames: int, dtype: str, chunks: tuple, sparse: bool):
    """A MATLAB v7.3 .mat: ``Fsp`` (neurons x time in MATLAB, so (time, neurons) in HDF5)."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        _big_dataset(f, "Fsp", (n_frames, n_units), dtype, chunks, sparse)
        f.create_dataset("VIDEOfs", data=np.array([[30.0]]))
    with open(path, "r+b") as fp:
        fp.write(b"MATLAB 7.3 MAT-file".ljust(116) + b"\x00" * 8 + b"\x00\x02IM")
    return path


def _big_dataset(group: Any, name: str, shape: tuple, dtype: str, chunks: tuple, sparse: bool):
    """Create a chunked dataset: written slab by slab, or (sparse) allocated but never written."""
    import h5py

    if sparse:  # every chunk allocated (so it counts as written), no byte written: a sparse file
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk(chunks)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        space = h5py.h5s.create_simple(shape)
        h5py.h5d.create(group.id, name.encode(), h5py.h5t.py_create(np.dtype(dtype)), space, dcpl)
        return
    dset = group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks)
    rng = np.random.default_rng(0)
    slab = rng.standard_normal((chunks[0], shape[1]), dtype=np.float32).astype(dtype)
    for i, start in enumerate(range(0, shape[0], chunks[0])):
        stop = min(start + chunks[0], shape[0])
        dset[start:stop] = slab[: stop - start] + np.asarray(i % 7, dtype)


def _suite2p(folder: Path, n_units: int, n_frames: int) -> Path:
    plane = folder / "suite2p" / "plane0"
    plane.mkdir(parents=True)
    for name in ("F.npy", "spks.npy"):  # sparse memory-mapped files: no disk used
        mm = np.lib.format.open_memmap(
            plane / name, mode="w+", dtype=np.float32, shape=(n_units, n_frames)
        )
        mm.flush()
        del mm
    np.save(plane / "ops.npy", np.array({"fs": 30.0}, dtype=object))
    return folder / "suite2p"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def open_worker(kind: str, path: str) -> None:
    """(In a fresh process) baseline open + corner read, then the netphys reader; print JSON."""
    import dask.array  # noqa: F401  (imports paid before either timing)
    import h5py
    import xarray.backends  # noqa: F401

    from netphys.io import read_nwb, read_stringer_mat, read_suite2p

    rss0 = _peak_mib()
    t0 = time.perf_counter()
    if kind == "suite2p":
        corner = np.load(Path(path) / "plane0" / "spks.npy", mmap_mode="r")[:100, :100].T
    else:
        name = "processing/ophys/Fluorescence/RoiResponseSeries/data" if kind == "nwb" else "Fsp"
        with h5py.File(path, "r") as f:
            corner = f[name][:100, :100]
    t_base = time.perf_counter() - t0
    reader = {"nwb": read_nwb, "mat": read_stringer_mat, "suite2p": read_suite2p}[kind]
    t0 = time.perf_counter()
    ds = reader(path)
    t_open = time.perf_counter() - t0
    rss_open = _peak_mib()
    act = ds["activity"]
    same = bool(np.array_equal(act[:100, :100].values, np.asarray(corner, act.dtype)))
    t0 = time.perf_counter()
    slab_mean = act[:2000].mean("time").values
    t_mean = time.perf_counter() - t0
    files = [Path(path)] if kind != "suite2p" else list((Path(path) / "plane0").glob("*.npy"))
    out = {
        "format": kind,
        "shape": list(act.shape),
        "dtype": str(act.dtype),
        "file_gib": round(sum(p.stat().st_size for p in files) / 2**30, 2),
        "disk_gib": round(sum(p.stat().st_blocks * 512 for p in files) / 2**30, 2),
        "dask_chunks": [act.chunks[0][0], act.chunks[1][0]],
        "baseline_open_s": round(t_base, 3),
        "open_s": round(t_open, 3),
        "open_over_baseline": round(t_open / max(t_base, 1e-9), 1),
        "peak_rss_before_open_mib": round(rss0, 1),
        "open_peak_rss_growth_mib": round(rss_open - rss0, 1),
        "mean_2000_frames_s": round(t_mean, 2),
        "peak_rss_after_mean_mib": round(_peak_mib(), 1),
        "corner_equal": same,
        "slab_mean_finite": bool(np.isfinite(slab_mean).all()),
    }
    print(json.dumps(out), flush=True)


def lazy_part(args: argparse.Namespace) -> None:
    """Write the three big recordings and open each in a fresh process."""
    itemsize = np.dtype(args.lazy_dtype).itemsize
    units, frames = args.lazy_units, args.lazy_frames
    with tempfile.TemporaryDirectory(prefix="netphys-lazy-", dir=args.tmp) as tmp:
        free = shutil.disk_usage(tmp).free
        if not args.sparse:
            room = (free - 8 * 2**30) // (2 * units * itemsize)  # keep 8 GiB free
            if room < frames:
                print(f"[lazy] disk: {free / 2**30:.0f} GiB free; frames {frames} -> {room}")
                frames = int(room)
        print(
            f"[lazy] {units} units x {frames} frames, {args.lazy_dtype}, HDF5 chunks "
            f"{tuple(args.h5_chunks)}, {'sparse' if args.sparse else 'written'}; "
            f"{free / 2**30:.0f} GiB free in {tmp}; load {os.getloadavg()}",
            flush=True,
        )
        chunks = tuple(args.h5_chunks)
        paths = {}
        for kind, make in (("nwb", _ophys_nwb), ("mat", _mat73)):
            t0 = time.perf_counter()
            paths[kind] = make(
                Path(tmp) / f"big.{kind}", units, frames, args.lazy_dtype, chunks, args.sparse
            )
            print(f"[lazy] wrote {kind} in {time.perf_counter() - t0:.0f} s", flush=True)
        paths["suite2p"] = _suite2p(Path(tmp), units, frames)
        for kind, path in paths.items():
            cmd = [sys.executable, __file__, "--open-worker", kind, str(path)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            print("[lazy open]", out.stdout.strip().splitlines()[-1], flush=True)
        print(f"[lazy] load after: {os.getloadavg()}", flush=True)


def main() -> None:
    """Run the parts asked for and print times and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="500 ROIs, 500 frames")
    parser.add_argument("--lazy", action="store_true", help="only part 3 (big lazy opens)")
    parser.add_argument("--lazy-units", type=int, default=50_000)
    parser.add_argument("--lazy-frames", type=int, default=100_000)
    parser.add_argument("--lazy-dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--h5-chunks", type=int, nargs=2, default=[500, 2000])
    parser.add_argument("--sparse", action="store_true", help="allocate, do not write, HDF5")
    parser.add_argument("--tmp", default=None, help="folder for the big files")
    parser.add_argument("--open-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.open_worker:
        open_worker(*args.open_worker)
        return
    if args.lazy:
        lazy_part(args)
        return
    if args.quick:
        args.rois, args.frames, args.repeat = 500, 500, 3
    from netphys.io import read_nwb, write_nwb
    from netphys.io._pickle_scan import scan_pickle
    from netphys.io._safe_pickle import load_npy

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = stat_file(folder, args.rois, rng)
        guarded = best_of(lambda: load_npy(path), args.repeat)
        plain = best_of(lambda: np.load(path, allow_pickle=True), args.repeat)
        mb = path.stat().st_size / 2**20
        print(f"stat.npy ({args.rois} ROIs, {mb:.1f} MB): load_npy {guarded * 1e3:.1f} ms, ")
        print(f"  np.load(allow_pickle=True) {plain * 1e3:.1f} ms, ratio {guarded / plain:.2f}")
        with open(path, "rb") as fp:  # the pickle after the .npy header
            np.lib.format.read_magic(fp)
            np.lib.format.read_array_header_1_0(fp)
            body = fp.read()
        scan = best_of(lambda: scan_pickle(body, limit=2**40, source="stat.npy"), args.repeat)
        print(f"  of load_npy, the opcode prescan {scan * 1e3:.1f} ms ({scan / guarded:.0%})")
        act = xr.DataArray(
            rng.random((args.frames, args.rois), dtype=np.float32),
            dims=("time", "unit"),
            attrs={"frame_rate": 30.0},
        )
        nwb = write_nwb(act, folder / "rec.nwb")
        checked = best_of(lambda: read_nwb(nwb), args.repeat)
        unchecked = best_of(lambda: read_nwb(nwb, trusted=True, max_bytes=None), args.repeat)
        print(f"read_nwb ({args.frames} x {args.rois}): checked {checked * 1e3:.1f} ms, ")
        print(f"  trusted/no limit {unchecked * 1e3:.1f} ms, ratio {checked / unchecked:.2f}")


if __name__ == "__main__":
    main()
