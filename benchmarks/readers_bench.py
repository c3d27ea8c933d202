"""Benchmark the cost of reading untrusted files safely: guarded readers vs plain numpy/h5py.

Part 1: a suite2p-like ``stat.npy`` of ``--rois`` ROIs (disk masks, as suite2p writes them)
loaded with ``netphys.io._safe_pickle.load_npy`` (allow-list unpickler, dtype rebuild, tree
check) and with ``np.load(allow_pickle=True)`` (our own file, so trusted), same process.
Part 2: ``read_nwb`` of a ``write_nwb`` file (``--rois`` x ``--frames``) with the HDF5
confinement walk and byte budget, against the same call with ``trusted=True, max_bytes=None``.
Prints best-of-``--repeat`` times and their ratios.

Usage::

    python benchmarks/readers_bench.py --quick
    python benchmarks/readers_bench.py --rois 10000 --frames 5000
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    """Run both parts and print times and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="500 ROIs, 500 frames")
    args = parser.parse_args()
    if args.quick:
        args.rois, args.frames, args.repeat = 500, 500, 3
    from netphys.io import read_nwb, write_nwb
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
