"""Benchmark SVCA: netphys vs a plain numpy implementation, and a streamed Zarr run.

Part 1 (in memory): ``netphys.population`` against the same steps written plainly with
numpy (mean over train frames, ``C = A Bᵀ``, full ``np.linalg.svd``, projections of the test
frames) on the same split, in the same process. Prints both times, their ratio and the largest
relative difference of the reliable and total variance spectra.

Part 2 (streamed): writes a float16 Zarr recording (default 50,000 units x 20,000 frames,
2 GB) to a temporary folder and runs ``svca`` on the dask-backed DataArray in a fresh
subprocess, printing the time and that process's peak RSS.

Usage::

    python benchmarks/population_bench.py --quick       # small sizes, about a minute
    python benchmarks/population_bench.py               # paper scale + 50k x 20k streamed
    python benchmarks/population_bench.py --skip-stream --units 10000 --frames 7000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def plain_svca(x: np.ndarray, unit_set: np.ndarray, is_train: np.ndarray, k: int):
    """SVCA written plainly with numpy (the baseline)."""
    tr = x[is_train].astype(np.float64)
    mean = tr.mean(axis=0)
    tr -= mean
    a, b = tr[:, unit_set == 1], tr[:, unit_set == 2]
    cov = a.T @ b
    u, _, vt = np.linalg.svd(cov, full_matrices=False)
    te = x[~is_train].astype(np.float64) - mean
    s1 = te[:, unit_set == 1] @ u[:, :k]
    s2 = te[:, unit_set == 2] @ vt[:k].T
    reliable = (s1 * s2).mean(axis=0)
    total = ((s1**2).mean(axis=0) + (s2**2).mean(axis=0)) / 2
    return reliable, total


def in_memory(n_units: int, n_frames: int, k: int, seed: int) -> dict:
    from netphys.population import simulate_population, svca

    t0 = time.perf_counter()
    sim = simulate_population(
        n_units,
        n_frames,
        alpha=1.0,
        snr=1.0,
        n_latents=min(1024, n_units),
        category_strength=0.0,
        rng=seed,
        dtype=np.float32,
    )
    x = sim["activity"].values
    del sim
    print(
        f"[in memory] simulated {n_units} units x {n_frames} frames in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    t0 = time.perf_counter()
    res = svca(x, n_components=k, rng=1)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    reliable, total = plain_svca(x, res["unit_set"].values, res["is_train"].values, k)
    t_plain = time.perf_counter() - t0

    def rel_diff(ours: np.ndarray, ref: np.ndarray) -> float:
        return float(np.max(np.abs(ours - ref) / np.abs(ref).max()))

    out = {
        "units": n_units,
        "frames": n_frames,
        "components": k,
        "netphys_s": round(t_ours, 2),
        "plain_numpy_s": round(t_plain, 2),
        "ratio_plain_over_netphys": round(t_plain / t_ours, 2),
        # differences relative to the largest value of each spectrum, and per component
        "max_diff_reliable_rel_to_max": rel_diff(res["reliable_variance"].values, reliable),
        "max_rel_diff_total": float(np.max(np.abs(res["total_variance"].values - total) / total)),
        "max_rel_diff_reliable_first_128": float(
            np.max(
                np.abs(res["reliable_variance"].values[:128] - reliable[:128])
                / np.abs(reliable[:128])
            )
        ),
        "alpha": round(float(res["alpha"]), 3),
    }
    print("[in memory]", json.dumps(out), flush=True)
    return out


def write_zarr(path: Path, n_units: int, n_frames: int, seed: int, chunk_frames: int) -> None:
    import zarr

    gen = np.random.default_rng(seed)
    n_latents = 256
    lam = np.arange(1, n_latents + 1) ** -1.0
    loadings = (gen.standard_normal((n_latents, n_units)) * np.sqrt(lam)[:, None]).astype(
        np.float32
    )
    unit_chunk = min(n_units, 12_500)
    arr = zarr.create_array(
        store=str(path),
        name="activity",
        shape=(n_frames, n_units),
        dtype="float16",
        chunks=(chunk_frames, unit_chunk),
        dimension_names=("time", "unit"),
    )
    t0 = time.perf_counter()
    for start in range(0, n_frames, chunk_frames):
        stop = min(n_frames, start + chunk_frames)
        z = gen.standard_normal((stop - start, n_latents), dtype=np.float32)
        block = z @ loadings
        block += gen.standard_normal(block.shape, dtype=np.float32)
        arr[start:stop] = block.astype(np.float16)
    print(
        f"[stream] wrote {n_frames} x {n_units} float16 "
        f"({n_frames * n_units * 2 / 2**30:.2f} GiB) in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )


def stream_worker(path: str, k: int, power_iter: int) -> None:
    import xarray as xr

    from netphys.population import svca

    act = xr.open_zarr(path, consolidated=False)["activity"]
    t0 = time.perf_counter()
    res = svca(act, n_components=k, n_power_iter=power_iter, rng=1, progress=False)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(
        json.dumps(
            {
                "shape": list(act.shape),
                "dtype": str(act.dtype),
                "chunks": [c[0] for c in act.chunks],
                "components": k,
                "solver": res.attrs["svd_solver"],
                "n_power_iter": power_iter,
                "seconds": round(elapsed, 1),
                "peak_rss_gib": round(peak, 2),
                "reliable_fraction_svc1": round(float(res["reliable_fraction"][0]), 4),
                "alpha": round(float(res["alpha"]), 3),
            }
        ),
        flush=True,
    )


def streamed(n_units: int, n_frames: int, k: int, power_iter: int, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="netphys-bench-") as tmp:
        path = Path(tmp) / "big.zarr"
        write_zarr(path, n_units, n_frames, seed, chunk_frames=512)
        cmd = [
            sys.executable,
            __file__,
            "--worker-stream",
            str(path),
            "--stream-components",
            str(k),
            "--power-iter",
            str(power_iter),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        print("[stream]", out.stdout.strip().splitlines()[-1], flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    p.add_argument("--units", type=int, default=10_000)
    p.add_argument("--frames", type=int, default=7_000)
    p.add_argument("--components", type=int, default=1024)
    p.add_argument("--stream-units", type=int, default=50_000)
    p.add_argument("--stream-frames", type=int, default=20_000)
    p.add_argument("--stream-components", type=int, default=1024)
    p.add_argument("--power-iter", type=int, default=3)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-stream", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker-stream", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker_stream:
        stream_worker(args.worker_stream, args.stream_components, args.power_iter)
        return
    if args.quick:
        args.units, args.frames, args.components = 2000, 2000, 256
        args.stream_units, args.stream_frames, args.stream_components = 8000, 4000, 128
    if not args.skip_memory:
        in_memory(args.units, args.frames, args.components, args.seed)
    if not args.skip_stream:
        streamed(
            args.stream_units,
            args.stream_frames,
            args.stream_components,
            args.power_iter,
            args.seed,
        )


if __name__ == "__main__":
    main()
