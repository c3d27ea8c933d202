"""``netphys demo``: train a small CNN on scikit-learn's digits, record it like a mouse, report.

Every epoch is a *session*: the held-out digits are shown twice (repeats 0 and 1) and a block
of noise frames (``condition="spontaneous"``) follows. Session 0 is the untrained network.
The recording goes to ``OUT/recording.zarr``; the report (PNG figures and ``summary.json``)
to ``OUT/``.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_digits_split", "run_demo"]  # DemoCNN: module __getattr__ (no torch at import)

logger = logging.getLogger(__name__)

#: Post-activation layers the demo records, in forward order.
DEMO_LAYERS = ["act1", "act2", "act3"]


def load_digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits (8x8, scaled to [0, 1]) split 50/50 stratified: ``x_train, y_train, x_test, y_test``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[:, None]
    y = digits.target.astype("int64")
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.5, stratify=y, random_state=seed)
    return x_tr, y_tr, x_te, y_te


def _model_class() -> Any:
    from torch import nn

    class DemoCNN(nn.Module):
        """Conv(1->16)+BN+ReLU, Conv(16->32)+BN+ReLU, MaxPool, Linear(512->64)+ReLU, Linear(64->10)."""

        def __init__(self, width: int = 16) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, width, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(width)
            self.act1 = nn.ReLU()
            self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(2 * width)
            self.act2 = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.flatten = nn.Flatten()
            self.fc1 = nn.Linear(2 * width * 16, 64)
            self.act3 = nn.ReLU()
            self.fc2 = nn.Linear(64, 10)

        def forward(self, x: Any) -> Any:
            x = self.act1(self.bn1(self.conv1(x)))
            x = self.pool(self.act2(self.bn2(self.conv2(x))))
            x = self.act3(self.fc1(self.flatten(x)))
            return self.fc2(x)

    return DemoCNN


def __getattr__(name: str) -> Any:
    if name == "DemoCNN":  # built on first use so that importing netphys.demo needs no torch
        return _model_class()
    raise AttributeError(name)


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path.name


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
    model = _model_class()()
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
    import matplotlib

    matplotlib.use("Agg")
    import netphys
    from netphys import population as pop
    from netphys.errors import NetphysWarning
    from netphys.population import plots

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
            figures["raster"] = _save(fig, out / "raster.png")
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
            figures["eigenspectrum"] = _save(fig, out / "eigenspectrum.png")
            figures["sessions"] = _save(_session_figure(sessions), out / "sessions.png")
        elif step == "population":
            from netphys.population.report import population_report

            beh = rec["behaviour"].to_dataset()["logits"] if "behaviour" in rec.children else None
            with warnings.catch_warnings():
                # dead ReLU units are expected here; each result reports them (is_constant)
                warnings.filterwarnings(
                    "ignore", message=".*constant unit", category=NetphysWarning
                )
                popsum = population_report(act, behaviour=beh, out_dir=out / "population", rng=seed)
            info["population"] = popsum
        elif step == "concepts":
            from netphys.recorder.concept_report import concept_report

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
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    return summary


def _session_figure(sessions: list[dict[str, Any]]) -> Any:
    """Per-session summary: accuracy, activity and the PCA exponent across training."""
    import matplotlib.pyplot as plt

    x = [s["session"] for s in sessions]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3), constrained_layout=True)
    axes[0].plot(x, [s["test_accuracy"] for s in sessions], "o-")
    axes[0].set_ylabel("held-out accuracy")
    axes[1].plot(x, [s["mean_activity"] for s in sessions], "o-", label="stimulus")
    spont = [s["mean_spontaneous_activity"] for s in sessions]
    axes[1].plot(x, [np.nan if v is None else v for v in spont], "o--", label="spontaneous")
    axes[1].set_ylabel("mean unit activity")
    axes[1].legend(frameon=False)
    axes[2].plot(x, [s.get("pca_alpha", np.nan) for s in sessions], "o-")
    axes[2].set_ylabel("PCA power-law exponent α")
    for ax in axes:
        ax.set_xlabel("session (epoch)")
        ax.set_xticks(x)
    return fig


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
