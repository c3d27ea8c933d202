"""Recording overhead: frames/s of the bare forward pass vs forward + recording.

For the demo CNN (digits, 8x8), a wider 3-conv CNN on 32x32 inputs (114,688 units per image)
and a ResNet-18-shaped model (random init, 32x32 inputs, its 8 residual-block outputs), prints
frames/s of

- the bare forward pass (baseline, same process, run between every method),
- forward + netphys recording of all units (float16 by default),
- the same with ``direct_io=False`` ("page cache": chunk files through the kernel's page cache
  instead of ``O_DIRECT``),
- a synchronous extractor: a hook that does ``.cpu()`` and ``np.save`` per batch,
- TorchLens ``extract_dataset`` if installed (``pip install -e .[bench]``),
- a copy-only baseline: each recorded output copied into a reused host buffer as float16, no
  writing (on a GPU: device-to-host copies into pinned buffers) -- the limit of any recorder
  that keeps all units, before it writes a byte,
- a write-only floor: the same bytes written to fresh files without the model (what any
  page-cache writer of all units pays for the page cache alone; on this project's VMs fresh
  pages cost ~3 ms/MB at times, against ~0.3 ms/MB when the kernel reuses freed ones),

with each one's ratio to the bare pass (wall clock, and process CPU time: on a shared machine
the CPU ratio is the steadier one), the MB/s written and the extra peak resident memory.
Methods are interleaved with bare runs; the summary gives medians over ``--repeats``.
A fixed-cost line gives the one-off seconds of a recording (opening the store, the first
forward's setup, closing a one-batch recording: array creation, chunks, manifest), so that
short and long recordings can be told apart: the ratio of a recording of N frames is about
``1 / (1 / ratio + fixed / bare time of N frames)``.

The bare pass itself depends on the state of the C allocator: in a fresh process, glibc hands
the model's activation memory back to the OS after each batch and faults it in again at the
next (the demo CNN: ~300k page faults and 2.3 s per 65,536 frames on the project's VM), until
some buffer of several MB is freed and raises glibc's thresholds; after that it runs in ~1 s.
Every bare run here follows a recording, so the baseline is the faster state (the ratios are
conservative). ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` or jemalloc change this
for any PyTorch CPU program, recorded or not.

Usage: ``python benchmarks/record_overhead.py [--frames N] [--batch 256] [--device cpu|cuda]
[--only demo|wide|resnet] [--zarr-writes]``
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import netphys
from netphys.experiments._models import DemoCNN
from netphys.io import _chunks as chunks
from netphys.recorder._layers import default_layers


def wide_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),  # 32 x 32 x 32 = 32768 units
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),  # 64 x 32 x 32 = 65536 units
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),  # 64 x 16 x 16 = 16384 units
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.short(x))


def resnet18() -> nn.Module:
    """ResNet-18 shape (2-2-2-2 basic blocks, 64-512 channels), CIFAR-style 32x32 stem."""
    blocks, cin = [], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        blocks += [_Block(cin, cout, stride), _Block(cout, cout, 1)]
        cin = cout
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10),
    )  # fmt: skip


def cpu_s() -> float:
    return time.process_time()


def peak_rss_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, n: int, device: torch.device, out: Path | None = None) -> dict[str, float]:
    """Run ``fn``; frames/s (wall and CPU), MB/s written to ``out`` and extra peak RSS."""
    peak_rss_reset()
    rss0 = peak_rss_mb()
    c, t = cpu_s(), time.perf_counter()
    fn()
    sync(device)
    wall, cpu = time.perf_counter() - t, cpu_s() - c
    size = 0 if out is None else sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"fps": n / wall, "cpu": cpu, "mbs": size / wall / 1e6, "rss": peak_rss_mb() - rss0}


def run_bare(model, x, batch, device) -> None:
    with torch.no_grad():
        for s in range(0, len(x), batch):
            model(x[s : s + batch].to(device, non_blocking=True))


def run_netphys(
    model, x, batch, device, layers, dtype, path, compression, writer, direct_io=True
) -> None:
    with (
        torch.no_grad(),
        netphys.Recorder(
            model, path, layers=layers, dtype=dtype, mode="w", store_weights=False,
            compression=compression, writer=writer, direct_io=direct_io,
        ) as rec,
    ):  # fmt: skip
        for s in range(0, len(x), batch):
            rec.annotate(stimulus=np.arange(s, min(s + batch, len(x))))
            model(x[s : s + batch].to(device, non_blocking=True))


def fixed_costs(model, x, batch, device, layers, dtype, folder, compression, writer):
    """One-off seconds of a recording: open, setup, close (with the arrays' creation).

    ``setup`` is the first recorded forward minus the second (same batch); ``close`` closes a
    two-batch recording: it creates the arrays (done at the first write), writes the one
    partial block and the manifest.
    """
    xb = x[:batch].to(device)
    with torch.no_grad():
        t0 = time.perf_counter()
        rec = netphys.Recorder(
            model, folder / "fixed.zarr", layers=layers, dtype=dtype, mode="w",
            store_weights=False, compression=compression, writer=writer,
            chunk_frames=4 * batch,
        ).open()  # fmt: skip
        times = [time.perf_counter()]
        for _ in range(2):
            model(xb)
            sync(device)
            times.append(time.perf_counter())
        rec.close()
        t3 = time.perf_counter()
    first, second = times[1] - times[0], times[2] - times[1]
    codecs = {}
    for layer in layers:
        attrs = netphys.open_recording(folder / "fixed.zarr")[f"layers/{layer}"].attrs
        if "compression" in attrs:
            codecs[layer] = f"{attrs['compression']} (lz4 x{attrs['lz4_ratio_first_batch']:.2f})"
    return {"open": times[0] - t0, "setup": first - second, "close": t3 - times[2]}, codecs


def _hooks(model, layers, fn):
    mods = dict(model.named_modules())
    return [mods[n].register_forward_hook(lambda m, a, o, n=n: fn(n, o)) for n in layers]


def run_sync_extractor(model, x, batch, device, layers, dtype, out: Path) -> None:
    """The obvious extractor: a hook doing .cpu() + np.save for each layer and batch."""
    out.mkdir(exist_ok=True)
    np_dtype = np.float16 if dtype == "float16" else np.float32
    k = {"batch": 0}

    def save(name, o):
        arr = o.detach().cpu().numpy().reshape(o.shape[0], -1).astype(np_dtype)
        np.save(out / f"{name}_{k['batch']}.npy", arr)

    handles = _hooks(model, layers, save)
    try:
        with torch.no_grad():
            for s in range(0, len(x), batch):
                model(x[s : s + batch].to(device))
                k["batch"] += 1
    finally:
        for h in handles:
            h.remove()


def run_write_only(units: dict[str, int], n: int, batch: int, dtype: str, out: Path) -> None:
    """The machine's floor for any writer of all units: the same bytes, fresh files, no model.

    One file per layer and batch of uncompressed values, as the naive hook writes them.
    """
    out.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    bufs = {k: rng.standard_normal((batch, u)).astype(dtype) for k, u in units.items()}
    for s in range(0, n, batch):
        for k, buf in bufs.items():
            with open(out / f"{k}_{s}.bin", "wb") as f:
                f.write(buf[: min(batch, n - s)].data)


def run_copy_only(model, x, batch, device, layers, dtype) -> None:
    """The limit without writing: each output copied (as ``dtype``) into a reused host buffer.

    On a GPU: device-to-host copies into pinned buffers, then sync. On the CPU: the dtype
    conversion into a preallocated buffer, what any recorder of all units pays before writing.
    """
    tdt = torch.float16 if dtype == "float16" else torch.float32
    bufs: dict[str, torch.Tensor] = {}
    pin = device.type == "cuda"

    def copy(name, o):
        flat = o.detach().reshape(o.shape[0], -1)
        if pin:
            flat = flat.to(tdt)
        if name not in bufs or bufs[name].shape != flat.shape:
            bufs[name] = torch.empty(flat.shape, dtype=tdt, pin_memory=pin)
        bufs[name].copy_(flat, non_blocking=pin)

    handles = _hooks(model, layers, copy)
    try:
        with torch.no_grad():
            for s in range(0, len(x), batch):
                model(x[s : s + batch].to(device, non_blocking=True))
        sync(device)
    finally:
        for h in handles:
            h.remove()


def run_torchlens(model, x, batch, layers, dtype, out: Path) -> None:
    from torchlens import extract_dataset  # type: ignore[attr-defined]

    tdt = torch.float16 if dtype == "float16" else torch.float32
    extract_dataset(
        model, x, list(layers), batch_size=batch, output_dir=str(out), progress=False, dtype=tdt
    )


def _has_torchlens() -> bool:
    try:
        import torchlens  # noqa: F401
    except Exception:
        return False
    return True


def bench(name: str, model: nn.Module, shape: tuple[int, ...], layers, args) -> None:
    device = torch.device(args.device)
    model = model.to(device).eval()
    layers = layers or default_layers(model)
    x = torch.randn(args.frames, *shape)
    if device.type == "cuda":
        x = x.pin_memory()
    with torch.no_grad():
        model(x[: args.batch].to(device))  # warm-up
    outs = _outputs(model, layers, x[:2].to(device))
    per_layer = {k: int(np.prod(o.shape[1:])) for k, o in zip(layers, outs, strict=True)}
    units = sum(per_layer.values())
    print(
        f"\n{name}: {units} units per frame in {len(layers)} layers, {args.frames} frames, "
        f"batch {args.batch}, {args.dtype}, {args.compression}, writer {args.writer}, "
        f"device {device}, direct chunk writes {chunks.ENABLED}"
    )
    b, n = args.batch, args.frames
    methods = {
        "netphys": lambda f: run_netphys(
            model, x, b, device, layers, args.dtype, f / "rec.zarr", args.compression, args.writer
        ),
        "page cache": lambda f: run_netphys(
            model, x, b, device, layers, args.dtype, f / "rec.zarr", args.compression,
            args.writer, direct_io=False,
        ),
        "naive hook": lambda f: run_sync_extractor(
            model, x, b, device, layers, args.dtype, f / "npy"
        ),
    }
    methods["copy only"] = lambda f: run_copy_only(model, x, b, device, layers, args.dtype)
    if _has_torchlens() and not args.no_torchlens:
        methods["torchlens"] = lambda f: run_torchlens(model, x, b, layers, args.dtype, f / "tl")
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in methods}
    for _ in range(args.repeats):
        for key, fn in methods.items():
            folder = Path(tempfile.mkdtemp(prefix="netphys-bench-"))
            try:
                pre = _timed(lambda: run_bare(model, x, b, device), n, device)
                r = _timed(lambda fn=fn, folder=folder: fn(folder), n, device, folder)
                post = _timed(lambda: run_bare(model, x, b, device), n, device)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            r["ratio"] = r["fps"] / ((pre["fps"] + post["fps"]) / 2)
            r["cpu_ratio"] = (pre["cpu"] + post["cpu"]) / 2 / r["cpu"]
            r["bare"] = (pre["fps"] + post["fps"]) / 2
            rows[key].append(r)
    floor = []  # write-only, between bare runs like the methods
    for _ in range(args.repeats):
        folder = Path(tempfile.mkdtemp(prefix="netphys-bench-"))
        try:
            pre = _timed(lambda: run_bare(model, x, b, device), n, device)
            t = time.perf_counter()
            run_write_only(per_layer, n, b, args.dtype, folder / "w")
            w = time.perf_counter() - t
            post = _timed(lambda: run_bare(model, x, b, device), n, device)
            bare_t = 2 * n / (pre["fps"] + post["fps"])
            floor.append({"s": w, "ratio": bare_t / (bare_t + w)})
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    fixed, codecs = [], {}
    for _ in range(args.repeats):
        folder = Path(tempfile.mkdtemp(prefix="netphys-bench-"))
        try:
            costs, codecs = fixed_costs(
                model, x, b, device, layers, args.dtype, folder, args.compression, args.writer
            )
            fixed.append(costs)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    fx = {k: float(np.median([f[k] for f in fixed])) for k in fixed[0]}
    bare_s = n / float(np.median([r["bare"] for rs in rows.values() for r in rs]))
    print(
        f"{'method':>11} {'bare f/s':>9} {'f/s':>8} {'ratio':>6} {'cpu ratio':>9} {'MB/s':>7} "
        f"{'+peak RSS MB':>12}   (medians of {args.repeats}, each between two bare runs)"
    )
    mb = n * units * np.dtype(args.dtype).itemsize / 1e6
    w_s, w_ratio = (float(np.median([f[k] for f in floor])) for k in ("s", "ratio"))
    print(
        f"{'write only':>11} {mb:.0f} MB of {args.dtype} to fresh files, no model: {w_s:.2f} s "
        f"({mb / w_s:.0f} MB/s): a page-cache writer of all units that does not overlap the "
        f"model reaches at most {w_ratio:.2f} here"
    )
    for key, rs in rows.items():
        med = {k: float(np.median([r[k] for r in rs])) for k in rs[0]}
        print(
            f"{key:>11} {med['bare']:9.0f} {med['fps']:8.0f} {med['ratio']:6.2f} "
            f"{med['cpu_ratio']:9.2f} {med['mbs']:7.1f} {med['rss']:12.0f}"
        )
        if key == "netphys" and codecs:
            print(f"{'':>11} activity codecs ({args.compression}): " + ", ".join(
                f"{layer} {c}" for layer, c in codecs.items()))  # fmt: skip
        if key == "netphys":
            total = fx["open"] + fx["setup"] + fx["close"]
            print(
                f"{'':>11} fixed cost per recording: open {fx['open']:.3f} s, setup (1st minus "
                f"2nd forward) {fx['setup']:.3f} s, close (arrays, one block, manifest) "
                f"{fx['close']:.3f} s "
                f"(= {total / bare_s:.2f} x this run's bare time of {bare_s:.2f} s)"
            )
        if "copy only" in rows and key == "netphys":
            cp = float(np.median([r["fps"] for r in rows["copy only"]]))
            print(f"{'':>11} netphys / copy-only: {med['fps'] / cp:.2f}")


def codecs(name: str, model: nn.Module, shape: tuple[int, ...], layers, args) -> None:
    """Blosc lz4 with and without byte shuffle on each layer's activations (one batch)."""
    from numcodecs import Blosc

    model = model.eval()
    layers = layers or default_layers(model)
    outs = _outputs(model, layers, torch.randn(args.batch, *shape))
    print(f"\n{name}: Blosc lz4 clevel 1 on one batch per layer: size ratio, encode GB/s (1 core)")
    for layer, o in zip(layers, outs, strict=True):
        for dt in (torch.float16, torch.float32):
            a = np.ascontiguousarray(o.reshape(o.shape[0], -1).to(dt).numpy())
            cells = []
            for label, shuffle in (("shuffle", Blosc.SHUFFLE), ("noshuffle", Blosc.NOSHUFFLE)):
                codec, best, size = Blosc("lz4", 1, shuffle), float("inf"), 0
                for _ in range(5):
                    t = time.thread_time()
                    size = len(codec.encode(a))
                    best = min(best, time.thread_time() - t)
                cells.append(f"{label} x{a.nbytes / size:.2f} {a.nbytes / best / 1e9:.2f}")
            zeros = float((a == 0).mean())
            print(f"  {layer:>8} {str(dt)[6:]:>7} zeros {zeros:.2f}: " + " | ".join(cells))


def _outputs(model, layers, x):
    outs: list[torch.Tensor] = []
    hs = _hooks(model, layers, lambda n, o: outs.append(o))
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return outs


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--frames", type=int, default=None, help="frames per run (default per model)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", choices=["demo", "wide", "resnet"], default=None)
    p.add_argument("--compression", choices=["auto", "lz4", "zstd", "none"], default="auto")
    p.add_argument("--writer", choices=["auto", "thread", "inline"], default="auto")
    p.add_argument(
        "--zarr-writes", action="store_true", help="zarr's own write path (no direct chunks)"
    )
    p.add_argument("--no-torchlens", action="store_true")
    p.add_argument("--codecs", action="store_true", help="only compare lz4 shuffle settings")
    args = p.parse_args()
    chunks.ENABLED = not args.zarr_writes
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, netphys {netphys.__version__}"
    )
    cuda = args.device == "cuda"
    resnet_layers = [f"{3 + i}" for i in range(8)]  # the 8 residual-block outputs
    todo = {
        "demo": ("demo CNN (digits 8x8)", DemoCNN(), (1, 8, 8), None, 65536),
        "wide": ("wide CNN (32x32)", wide_cnn(), (3, 32, 32), None, 2048),
        "resnet": ("ResNet-18 shape (32x32)", resnet18(), (3, 32, 32), resnet_layers, 512),
    }
    for key, (name, model, shape, layers, frames) in todo.items():
        if args.only in (None, key) and args.codecs:
            codecs(name, model, shape, layers, args)
        elif args.only in (None, key):
            n = args.frames or (frames * 16 if cuda else frames)
            bench(name, model, shape, layers, argparse.Namespace(**{**vars(args), "frames": n}))


if __name__ == "__main__":
    main()
