"""``netphys demo``: train a small CNN on scikit-learn's digits, record it like a mouse, report.

Every epoch is a *session*: the held-out digits are shown twice (repeats 0 and 1) and a block
of noise frames (``condition="spontaneous"``) follows. Session 0 is the untrained network.
The recording goes to ``OUT/recording.zarr``; the report to ``OUT/``: ``report.html`` (one
self-contained page, figures embedded, with captions), ``summary.json`` (every number, valid
JSON) and the PNG figures (paths in the summary are relative to ``OUT``).
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from netphys.experiments._common import json_safe, save_figure, write_json
from netphys.experiments._demo_report import demo_sections
from netphys.experiments._html import write_report_html
from netphys.experiments._models import (
    DEMO_LAYERS,
    DEMO_VARIABILITY,
    DemoCNN,
    load_digits_split,
)
from netphys.io._stimuli import write_stimuli

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
    width: int = 16,
    path: Path | None = None,
    variability: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """Train the demo CNN, recording a session before training and after every epoch.

    ``width`` is the demo CNN's width; the recording goes to ``path`` (default
    ``out/recording.zarr``). The returned info holds per-session rows (``sessions``), the
    held-out digits, and every session's Linear/Conv weight matrices (``weights``:
    ``{session: {module: matrix}}``, see :func:`netphys.recorder.layer_weights`).
    """
    import torch
    from tqdm.auto import tqdm

    from netphys.recorder import (
        Recorder,
        layer_weights,
        present,
        present_spontaneous,
        spontaneous_inputs,
    )

    torch.manual_seed(seed)
    x_tr, y_tr, x_te, y_te = load_digits_split(seed)
    xt, yt = torch.as_tensor(x_tr), torch.as_tensor(y_tr)
    xe = torch.as_tensor(x_te)
    model = DemoCNN(width)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    noise = spontaneous_inputs(xe, n_spontaneous, kind="noise", rng=np.random.default_rng(seed))
    sessions: list[dict[str, Any]] = []
    weights: dict[int, dict[str, np.ndarray]] = {}
    path = out / "recording.zarr" if path is None else path
    bar = tqdm(total=epochs + 1, desc="train + record", unit="session", disable=not progress)
    with Recorder(
        model, path, layers=DEMO_LAYERS, mode="w", dtype=dtype, rng=seed, variability=variability
    ) as rec:
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
            weights[epoch] = layer_weights(model)
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
    return model, {"sessions": sessions, "x_test": x_te, "y_test": y_te, "weights": weights}


def run_demo(
    out_dir: str | Path = "netphys-demo",
    *,
    epochs: int = 4,
    seed: int = 0,
    n_spontaneous: int = 300,
    dtype: str = "float32",
    analyses: bool = True,
    progress: bool = True,
    variability: Any = "default",
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
    variability : "default", None or a spec, default="default"
        Trial-to-trial variability of the recording (see :mod:`netphys.variability`);
        "default" is ``DEMO_VARIABILITY`` (Poisson spiking units), None the noise-free model
        (repeats identical: cvPCA signal fraction 1 by construction).

    Returns
    -------
    dict
        The JSON summary: per-session numbers, ``figures`` (name -> path relative to
        ``OUT``; one base for every figure), ``report`` (the HTML page), ``variability``
        (the stored spec) and ``variability_description``.
    """
    from tqdm.auto import tqdm

    import netphys
    from netphys.variability import describe

    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(variability, str) and variability == "default":
        variability = DEMO_VARIABILITY
    model, info = train_and_record(
        out,
        epochs=epochs,
        seed=seed,
        n_spontaneous=n_spontaneous,
        dtype=dtype,
        progress=progress,
        variability=variability,
    )
    # the held-out digits, so that per-unit pages show a unit's preferred digits
    write_stimuli(out / "recording.zarr", info["x_test"][:, 0])
    rec = netphys.open_recording(out / "recording.zarr")
    act = netphys.layer_activity(rec).load()  # ~200 MB: analyses run in memory
    sessions = info["sessions"]
    figures: dict[str, str] = {}
    steps = ["summary", "raster", "anatomy"] + (["population", "concepts"] if analyses else [])
    bar = tqdm(steps, desc="report", disable=not progress)
    for step in bar:
        bar.set_postfix(step=step)
        if step == "summary":
            _session_numbers(act, sessions)
        elif step == "raster":
            figures["raster"] = _raster(act, epochs, seed, out)
        elif step == "anatomy":
            info["anatomy"] = _anatomy(act, info, out, sessions, figures)
        elif step == "population":
            info["population"] = _population(rec, act, out, seed, sessions, figures)
        else:
            info["concepts"] = _concepts(model, info, out, seed, figures)
    bar.close()
    figures["sessions"] = save_figure(
        _titled(netphys.plot.plot_session_summary(sessions), "training sessions"),
        out / "sessions.png",
        dpi=80,
    )
    summary = {
        "netphys_version": netphys.__version__,
        "recording": "recording.zarr",
        "report": "report.html",
        "layers": DEMO_LAYERS,
        "n_units": int(act.sizes["unit"]),
        "n_frames": int(act.sizes["time"]),
        "variability": rec.attrs.get("variability"),
        "variability_description": describe(rec.attrs.get("variability")),
        "sessions": sessions,
        "figures": figures,
        "population": info.get("population"),
        "concepts": info.get("concepts"),
        "anatomy": {k: v for k, v in info["anatomy"].items() if k != "figures"},
    }
    write_report_html(
        out / "report.html",
        title="netphys demo: a CNN on scikit-learn's digits, recorded like a mouse",
        intro=_INTRO.format(epochs=epochs, n_units=summary["n_units"], n_spont=n_spontaneous)
        + f" Trial-to-trial variability: {summary['variability_description']}.",
        sections=demo_sections(summary),
    )
    summary["seconds"] = round(time.time() - t0, 1)
    write_json(out / "summary.json", summary)
    return json_safe(summary)


_INTRO = (
    "A small CNN (layers act1, act2, act3: {n_units} units) learns the 8x8 digits that ship with "
    "scikit-learn. Before training (session 0) and after each of {epochs} epochs (sessions 1-"
    "{epochs}) it is shown the held-out digits twice (repeats 0 and 1) and {n_spont} noise "
    "frames (spontaneous activity), and every unit is recorded, as a two-photon lab images a "
    "mouse on consecutive days. Every number below is in summary.json."
)


def _titled(fig: Any, title: str) -> Any:
    fig.suptitle(title, fontsize=10)
    return fig


def _session_numbers(act: Any, sessions: list[dict[str, Any]]) -> None:
    """Frames, mean activity (stimulus and spontaneous) and active share per session."""
    for s in sessions:
        sel = act.sel(time=(act.session == s["session"]).values)
        stim = sel.sel(time=(sel.condition == "stimulus").values).values
        spont = sel.sel(time=(sel.condition == "spontaneous").values).values
        s["n_frames"] = int(sel.sizes["time"])
        s["mean_activity"] = float(stim.mean())
        s["fraction_active"] = float((stim > 0).mean())
        s["mean_spontaneous_activity"] = float(spont.mean()) if spont.size else None


def _raster(act: Any, epochs: int, seed: int, out: Path) -> str:
    """Raster of the last session: units sorted by rastermap, frames grouped by digit."""
    from netphys import plot as plots
    from netphys import population as pop

    last = act.sel(time=((act.session == epochs) & (act.condition == "stimulus")).values)
    last = last.sel(time=(last.repeat == 0).values).load()
    last = last.isel(time=np.argsort(last.label.values, kind="stable"))
    last = last.isel(unit=np.flatnonzero(last.std("time").values > 0))
    order = pop.rastermap_sort(last, n_clusters=30, n_pcs=64, rng=seed)
    fig = plots.plot_raster(last, order=order, labels=last.label.values)
    ax = fig.axes[0]
    ax.set_title(
        f"session {epochs}: {last.sizes['unit']} active units sorted by rastermap, "
        "held-out digits (repeat 0) grouped by digit"
    )
    ax.set_xlabel("digit shown (frames grouped by label)")
    return save_figure(fig, out / "raster.png", dpi=80)


def _anatomy(
    act: Any,
    info: dict[str, Any],
    out: Path,
    sessions: list[dict[str, Any]],
    figures: dict[str, str],
) -> dict[str, Any]:
    """Sparseness and weight spectra per session; their layer means into the session rows."""
    from netphys.experiments.anatomy import anatomy_report, session_means

    res = anatomy_report(act, info["weights"], out)
    figures.update(res["figures"])
    for s in sessions:
        means = session_means(res, s["session"])
        s["population_sparseness"] = means["population_sparseness"]
        s["weight_alpha"] = means["weight_alpha"]
    return res


def _population(
    rec: Any,
    act: Any,
    out: Path,
    seed: int,
    sessions: list[dict[str, Any]],
    figures: dict[str, str],
) -> dict[str, Any]:
    """Run the population report; copy its exponents into the session rows (one source)."""
    from netphys.errors import NetphysWarning
    from netphys.experiments.report import population_report

    beh = rec["behaviour"].to_dataset()["logits"] if "behaviour" in rec.children else None
    with warnings.catch_warnings():
        # dead ReLU units are expected here; each result reports them (is_constant)
        warnings.filterwarnings("ignore", message=".*constant unit", category=NetphysWarning)
        # without variability the repeats are identical: summary.json says so instead
        warnings.filterwarnings(
            "ignore", message=".*repeats are identical", category=NetphysWarning
        )
        popsum = population_report(act, behaviour=beh, out_dir=out / "population", rng=seed)
    for s in sessions:
        numbers = popsum["sessions"].get(str(s["session"]), {})
        for key, name in (("pca_alpha", "eigenspectrum"), ("svca_alpha", "svca")):
            s[key] = numbers.get(name, {}).get("alpha")
    for name in popsum["figures"]:
        figures[f"population/{Path(name).stem}"] = f"population/{name}"
    return popsum


def _concepts(
    model: Any, info: dict[str, Any], out: Path, seed: int, figures: dict[str, str]
) -> dict[str, Any]:
    """Concept analysis of the trained model beside its re-initialised copy."""
    from netphys.experiments.concepts import concept_report

    res = concept_report(
        model,
        info["x_test"],
        info["y_test"],
        layers=DEMO_LAYERS,
        out_dir=out / "concepts",
        rng=seed,
    )
    for name in res["figures"]:
        figures[f"concepts/{Path(name).stem}"] = f"concepts/{name}"
    return res
