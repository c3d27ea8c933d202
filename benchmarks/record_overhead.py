"""Recording overhead: frames/s of the bare forward pass vs forward + recording.

For the demo CNN (digits, 8x8) and a wider 3-conv CNN on 32x32 inputs (114,688 units per
image), prints frames/s of

- the bare forward pass (baseline, same process),
- forward + netphys recording of all units (float16 by default),
- a synchronous extractor: a hook that does ``.cpu()`` and ``np.save`` per batch,
- TorchLens ``extract_dataset`` if installed,

with each one's ratio to the bare pass, the MB/s written and the peak resident memory.
Runs on the GPU when one is present (``--device cuda``).

Usage: ``python benchmarks/record_overhead.py [--frames 4096] [--batch 256] [--device cpu]``
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


def run_bare(model: nn.Module, x: torch.Tensor, batch: int, device: torch.device) -> float:
    t = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(x), batch):
            model(x[s : s + batch].to(device, non_blocking=True))
    sync(device)
    return len(x) / (time.perf_counter() - t)


def run_netphys(
    model, x, batch, device, layers, dtype, folder, compression="lz4", writer="auto"
) -> tuple[float, float]:
    path = folder / "rec.zarr"
    t = time.perf_counter()
    with (
        torch.no_grad(),
        netphys.Recorder(
            model,
            path,
            layers=layers,
            dtype=dtype,
            mode="w",
            store_weights=False,
            compression=compression,
            writer=writer,
        ) as rec,
    ):
        for s in range(0, len(x), batch):
            rec.annotate(stimulus=np.arange(s, min(s + batch, len(x))))
            model(x[s : s + batch].to(device, non_blocking=True))
    sync(device)
    dt = time.perf_counter() - t
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return len(x) / dt, size / dt / 1e6


def run_sync_extractor(model, x, batch, device, layers, dtype, folder) -> tuple[float, float]:
    """The obvious extractor: a hook doing .cpu() + np.save for each layer and batch."""
    mods = dict(model.named_modules())
    out = folder / "npy"
    out.mkdir(exist_ok=True)
    counter = {"k": 0}
    handles = []
    np_dtype = np.float16 if dtype == "float16" else np.float32
    for name in layers:

        def hook(m, a, o, name=name):
            arr = o.detach().cpu().numpy().reshape(o.shape[0], -1).astype(np_dtype)
            np.save(out / f"{name}_{counter['k']}.npy", arr)

        handles.append(mods[name].register_forward_hook(hook))
    t = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(x), batch):
            model(x[s : s + batch].to(device))
            counter["k"] += 1
    sync(device)
    dt = time.perf_counter() - t
    for h in handles:
        h.remove()
    size = sum(f.stat().st_size for f in out.iterdir())
    return len(x) / dt, size / dt / 1e6


def run_torchlens(model, x, batch, layers, folder) -> float | None:
    try:
        import torchlens  # noqa: F401
    except ImportError:
        return None
    from torchlens import extract_dataset  # type: ignore[attr-defined]

    t = time.perf_counter()
    extract_dataset(model, x, layers, batch_size=batch, output_dir=str(folder / "tl"))
    return len(x) / (time.perf_counter() - t)


def bench(name: str, model: nn.Module, shape: tuple[int, ...], args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    model = model.to(device).eval()
    layers = netphys.recorder._layers.default_layers(model)
    x = torch.randn(args.frames, *shape)
    if device.type == "cuda":
        x = x.pin_memory()
    with torch.no_grad():
        model(x[: args.batch].to(device))  # warm-up
    units = sum(int(np.prod(o.shape[1:])) for o in _outputs(model, layers, x[:2].to(device)))
    print(
        f"\n{name}: {units} units per frame in {len(layers)} layers, {args.frames} frames, "
        f"batch {args.batch}, {args.dtype}, {args.compression}, writer {args.writer}, device {device}"
    )
    rows = []
    for rep in range(args.repeats):
        folder = Path(tempfile.mkdtemp(prefix="netphys-bench-"))
        try:
            bare = run_bare(model, x, args.batch, device)
            peak_rss_reset()
            base_rss = peak_rss_mb()
            rec_fps, rec_mbs = run_netphys(
                model,
                x,
                args.batch,
                device,
                layers,
                args.dtype,
                folder,
                args.compression,
                args.writer,
            )
            rec_peak = peak_rss_mb() - base_rss
            bare2 = run_bare(model, x, args.batch, device)
            peak_rss_reset()
            base_rss = peak_rss_mb()
            ext_fps, ext_mbs = run_sync_extractor(
                model, x, args.batch, device, layers, args.dtype, folder
            )
            ext_peak = peak_rss_mb() - base_rss
            tl = run_torchlens(model, x, args.batch, layers, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        bare_mean = (bare + bare2) / 2
        rows.append((bare_mean, rec_fps, rec_mbs, rec_peak, ext_fps, ext_mbs, ext_peak, tl))
    print(
        f"{'run':>4} {'bare f/s':>9} {'netphys f/s':>11} {'ratio':>6} {'MB/s':>7} {'+RSS MB':>8}"
        f" {'sync f/s':>9} {'ratio':>6} {'MB/s':>7} {'+RSS MB':>8} {'torchlens':>9}"
    )
    for i, (b, r, rm, rp, e, em, ep, tl) in enumerate(rows):
        tls = "n/a" if tl is None else f"{tl / b:.2f}x"
        print(
            f"{i:>4} {b:9.0f} {r:11.0f} {r / b:6.2f} {rm:7.1f} {rp:8.0f}"
            f" {e:9.0f} {e / b:6.2f} {em:7.1f} {ep:8.0f} {tls:>9}"
        )
    med = np.median([r / b for b, r, *_ in rows])
    med_e = np.median([e / b for b, _, _, _, e, *_ in rows])
    print(f"median ratio to bare forward: netphys {med:.2f}x, sync .cpu()+np.save {med_e:.2f}x")


def _outputs(model, layers, x):
    mods = dict(model.named_modules())
    outs = []
    hs = [mods[n].register_forward_hook(lambda m, a, o: outs.append(o)) for n in layers]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return outs


def _with_frames(args: argparse.Namespace, default: int) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "frames": args.frames or default})


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        help="frames per run (default: 65536 for the demo CNN, 4096 for the wide CNN)",
    )
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", choices=["demo", "wide"], default=None)
    p.add_argument("--compression", choices=["lz4", "zstd", "none"], default="lz4")
    p.add_argument("--writer", choices=["auto", "thread", "inline"], default="auto")
    args = p.parse_args()
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, netphys {netphys.__version__}"
    )
    if args.only in (None, "demo"):
        bench("demo CNN (digits 8x8)", DemoCNN(), (1, 8, 8), _with_frames(args, 65536))
    if args.only in (None, "wide"):
        bench("wide CNN (32x32)", wide_cnn(), (3, 32, 32), _with_frames(args, 4096))


if __name__ == "__main__":
    main()
