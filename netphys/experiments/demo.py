"""``netphys demo``: train a small CNN on scikit-learn's digits, record it like a mouse, report.

Every epoch is a *session*: the held-out digits are shown twice (repeats 0 and 1) and a block
of noise frames (``condition="spontaneous"``) follows. Session 0 is the untrained network.
The recording goes to ``OUT/recording.zarr``; the report (PNG figures and ``summary.json``)
to ``OUT/``.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from netphys.experiments._common import json_safe, save_figure, write_json
from netphys.experiments._models import DEMO_LAYERS, DemoCNN, load_digits_split

__all__ = ["DEMO_LAYERS", "DemoCNN", "load_digits_split", "run_demo", "train_and_record"]

logger = logging.getLogger(__name__)


def train_and_record(
    out: Path,
    *,
    epochs: int,
    seed: int,
    n_spontaneous: int,
    dtype: str,
    progress: bool,
) -> tuple[Any, dict[str, Any]]:
    """Train the demo CNN, recording a session before training and after every epoch."""
    import torch
    from tqdm.auto import tqdm

    from netphys.recorder import Recorder
    from netphys.recorder.record import present, present_spontaneous, spontaneous_inputs

    torch.manual_seed(seed)
    x_tr, y_tr, x_te, y_te = load_digits_split(seed)
    xt, yt = torch.as_tensor(x_tr), torch.as_tensor(y_tr)
    xe = torch.as_tensor(x_te)
    model = DemoCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    noise = spontaneous_inputs(xe, n_spontaneous, kind="noise", rng=np.random.default_rng(seed))
    sessions: list[dict[str, Any]] = []
    path = out / "recording.zarr"
    bar = tqdm(total=epochs + 1, desc="train + record", unit="session", disable=not progress)
    with Recorder(model, path, layers=DEMO_LAYERS, mode="w", dtype=dtype, seed=seed) as rec:
        for epoch in range(epochs + 1):
            train_loss = float("nan")
            if epoch > 0:
                model.train()
                g = torch.Generator().manual_seed(seed * 1000 + epoch)
                order = torch.randperm(len(xt), generator=g)
                losses = []
                with rec.paused():
                    for s in range(0, len(xt), 64):
                        idx = order[s : s + 64]
                        opt.zero_grad()
                        loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
                        loss.backward()
                        opt.step()
                        losses.append(loss.item())
                train_loss = float(np.mean(losses))
            model.eval()
            rec.session(epoch, epoch=epoch)
            for r in range(2):
                present(rec, model, xe, labels=y_te, repeat=r, batch_size=300)
            present_spontaneous(rec, model, noise, batch_size=300)
            with torch.no_grad(), rec.paused():
                acc = float((model(xe).argmax(1).numpy() == y_te).mean())
            sessions.append(
                {"session": epoch, "epoch": epoch, "train_loss": train_loss, "test_accuracy": acc}
            )
            bar.set_postfix(acc=f"{acc:.3f}")
            bar.update(1)
    bar.close()
    return model, {"sessions": sessions, "x_test": x_te, "y_test": y_te}


def run_demo(
    out_dir: str | Path = "netphys-demo",
    *,
    epochs: int = 4,
    seed: int = 0,
    n_spontaneous: int = 300,
    dtype: str = "float32",
    analyses: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, record and report; return the summary written to ``OUT/summary.json``.

    Parameters
    ----------
    out_dir : str or Path, default="netphys-demo"
        Output folder (created); ``recording.zarr`` inside it is overwritten.
    epochs : int, default=4
        Training epochs; sessions 0 (untrained) to ``epochs`` are recorded.
    seed : int, default=0
        Seed of the data split, the weights, the noise frames and the analyses.
    n_spontaneous : int, default=300
        Noise frames per session.
    dtype : {"float32", "float16"}, default="float32"
        Storage type of unit activity.
    analyses : bool, default=True
        Run the population and concept analyses (False: recording and first report only).
    progress : bool, default=True
        Show progress bars.

    Returns
    -------
    dict
        The JSON summary (per-session numbers, file names of the figures).
    """
    import netphys
    from netphys import plot as plots
    from netphys import population as pop
    from netphys.errors import NetphysWarning

    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, info = train_and_record(
        out, epochs=epochs, seed=seed, n_spontaneous=n_spontaneous, dtype=dtype, progress=progress
    )
    rec = netphys.open_recording(out / "recording.zarr")
    act = netphys.layer_activity(rec).load()  # ~200 MB: analyses run in memory
    figures: dict[str, str] = {}
    sessions = info["sessions"]
    steps = ["summary", "raster", "spectra"] + (["population", "concepts"] if analyses else [])
    from tqdm.auto import tqdm

    bar = tqdm(steps, desc="report", disable=not progress)
    spectra: dict[str, Any] = {}
    for step in bar:
        bar.set_postfix(step=step)
        if step == "summary":
            for s in sessions:
                sel = act.sel(time=(act.session == s["session"]).values)
                stim = sel.sel(time=(sel.condition == "stimulus").values).values
                spont = sel.sel(time=(sel.condition == "spontaneous").values).values
                s["n_frames"] = int(sel.sizes["time"])
                s["mean_activity"] = float(stim.mean())
                s["fraction_active"] = float((stim > 0).mean())
                s["mean_spontaneous_activity"] = float(spont.mean()) if spont.size else None
        elif step == "raster":
            last = act.sel(time=((act.session == epochs) & (act.condition == "stimulus")).values)
            last = last.sel(time=(last.repeat == 0).values).load()
            last = last.isel(time=np.argsort(last.label.values, kind="stable"))
            keep = last.std("time").values > 0
            sorted_ = pop.rastermap_sort(
                last.isel(unit=np.flatnonzero(keep)), n_clusters=30, n_pcs=64, rng=seed
            )
            fig = plots.plot_raster(last.isel(unit=np.flatnonzero(keep)), order=sorted_)
            fig.axes[0].set_title(f"session {epochs}: units sorted by rastermap, frames by label")
            fig.axes[0].set_xlabel("frames (held-out digits, repeat 0, sorted by label)")
            figures["raster"] = save_figure(fig, out / "raster.png")
        elif step == "spectra":
            for s in sessions:
                sel = act.sel(
                    time=(
                        (act.session == s["session"])
                        & (act.condition == "stimulus")
                        & (act.repeat == 0)
                    ).values
                )
                sel = sel.isel(unit=np.flatnonzero(sel.std("time").values > 0))
                spec = pop.eigenspectrum(sel.load(), n_components=256, fit_range=(2, 100))
                spectra[f"session {s['session']}"] = spec
                s["pca_alpha"] = float(spec["alpha"])
            fig = plots.plot_spectra(spectra)
            fig.axes[0].set_title("PCA eigenspectrum per session (stimulus frames)")
            figures["eigenspectrum"] = save_figure(fig, out / "eigenspectrum.png")
            figures["sessions"] = save_figure(
                plots.plot_session_summary(sessions), out / "sessions.png"
            )
        elif step == "population":
            from netphys.experiments.report import population_report

            beh = rec["behaviour"].to_dataset()["logits"] if "behaviour" in rec.children else None
            with warnings.catch_warnings():
                # dead ReLU units are expected here; each result reports them (is_constant)
                warnings.filterwarnings(
                    "ignore", message=".*constant unit", category=NetphysWarning
                )
                popsum = population_report(act, behaviour=beh, out_dir=out / "population", rng=seed)
            info["population"] = popsum
        elif step == "concepts":
            from netphys.experiments.concepts import concept_report

            info["concepts"] = concept_report(
                model,
                info["x_test"],
                info["y_test"],
                layers=DEMO_LAYERS,
                out_dir=out / "concepts",
                rng=seed,
            )
    bar.close()
    summary = {
        "netphys_version": netphys.__version__,
        "recording": str(out / "recording.zarr"),
        "layers": DEMO_LAYERS,
        "n_units": int(act.sizes["unit"]),
        "n_frames": int(act.sizes["time"]),
        "sessions": sessions,
        "figures": figures,
        "population": info.get("population"),
        "concepts": info.get("concepts"),
        "seconds": round(time.time() - t0, 1),
    }
    write_json(out / "summary.json", summary)
    return json_safe(summary)
