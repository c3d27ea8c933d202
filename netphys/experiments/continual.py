"""A continual-learning experiment recorded like a mouse over days.

Run it with ``netphys demo --experiment continual``.

The demo CNN learns task 1 (digits 0-4 of scikit-learn's digits), then task 2 (digits 5-9), with
one 10-way output (class-incremental). After every epoch a *session* is recorded on a fixed probe
set drawn from both tasks' held-out digits, plus spontaneous noise frames; session 0 is the
untrained network. Each training method gets its own recording (``OUT/<method>.zarr``):

- ``finetune``: plain sequential training (catastrophic forgetting expected);
- ``replay``: task-2 batches are interleaved with a few stored task-1 samples;
- ``ewc``: task-2 loss plus an elastic weight consolidation penalty (diagonal Fisher of task 1).

The report (PNG figures and ``summary.json`` in ``OUT/``) puts forgetting (task-1 accuracy per
session) next to representational drift, subspace alignment, spectra and concept persistence,
all measured against the last task-1 session (the *reference*).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from netphys.experiments._common import json_safe, save_figure, write_json
from netphys.experiments._models import DEMO_LAYERS, DEMO_VARIABILITY, DemoCNN, load_digits_split
from netphys.variability import describe, parse_variability, to_json

__all__ = ["METHODS", "run_continual"]

logger = logging.getLogger(__name__)

#: Training methods of the experiment.
METHODS = ("finetune", "replay", "ewc")
_METHOD_SETS = {"both": ("finetune", "replay"), "all": METHODS}


def _methods(method: Any) -> tuple[str, ...]:
    if isinstance(method, str):
        if method in _METHOD_SETS:
            return _METHOD_SETS[method]
        method = (method,)
    out = tuple(method)
    bad = [m for m in out if m not in METHODS]
    if not out or bad:
        raise ValueError(
            f"run_continual(): `method` must be one of {', '.join(map(repr, METHODS))}, 'both' "
            f"(finetune and replay), 'all', or a list of them; got {method!r}."
        )
    return out


def _probe(x: np.ndarray, y: np.ndarray, n_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``n_per_class`` held-out samples per digit; return their indices sorted by digit."""
    idx = [rng.choice(np.flatnonzero(y == c), n_per_class, replace=False) for c in range(10)]
    return np.concatenate([np.sort(i) for i in idx])


def _train_epoch(
    model: Any, opt: Any, x: Any, y: Any, *, gen: Any, batch_size: int,
    replay: tuple[Any, Any] | None, replay_batch: int, ewc: dict[str, Any] | None,
) -> float:  # fmt: skip
    import torch
    import torch.nn.functional as F

    model.train()
    order = torch.randperm(len(x), generator=gen)
    losses = []
    for s in range(0, len(x), batch_size):
        idx = order[s : s + batch_size]
        xb, yb = x[idx], y[idx]
        if replay is not None:
            pick = torch.randint(len(replay[0]), (replay_batch,), generator=gen)
            xb, yb = torch.cat([xb, replay[0][pick]]), torch.cat([yb, replay[1][pick]])
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        if ewc is not None:
            pen = sum(
                (f * (p - p0) ** 2).sum()
                for p, f, p0 in zip(model.parameters(), ewc["fisher"], ewc["params"], strict=True)
            )
            loss = loss + ewc["lambda"] / 2 * pen
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    return float(np.mean(losses))


def _fisher(model: Any, x: Any, y: Any) -> list[Any]:
    """Diagonal empirical Fisher of the task loss, from per-sample gradients (eval mode)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    fisher = [torch.zeros_like(p) for p in model.parameters()]
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for f, p in zip(fisher, model.parameters(), strict=True):
            if p.grad is not None:
                f += p.grad.detach() ** 2
    model.zero_grad()
    return [f / len(x) for f in fisher]


def _accuracy(model: Any, x: Any, y: np.ndarray) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1).numpy() == y).mean())


def _run_method(
    method: str, out: Path, data: dict[str, Any], *, epochs: int, seed: int, cfg: dict[str, Any],
    progress: bool,
) -> dict[str, Any]:  # fmt: skip
    """Train one method through both tasks, recording a session per epoch."""
    import torch

    from netphys.experiments.concepts import concept_analysis
    from netphys.recorder import Recorder, layer_weights, present, present_spontaneous

    torch.manual_seed(seed)
    model = DemoCNN()
    xtr, ytr = torch.as_tensor(data["x_train"]), torch.as_tensor(data["y_train"])
    t1 = ytr < 5
    tasks = [(xtr[t1], ytr[t1]), (xtr[~t1], ytr[~t1])]
    rng = np.random.default_rng(seed)
    buf_idx = np.concatenate([
        rng.choice(np.flatnonzero(ytr.numpy()[t1.numpy()] == c), cfg["n_replay_per_class"],
                   replace=False)
        for c in range(5)
    ])  # fmt: skip
    buffer = (tasks[0][0][buf_idx], tasks[0][1][buf_idx])
    probe_x, probe_y = torch.as_tensor(data["probe_x"]), data["probe_y"]
    xte, yte = torch.as_tensor(data["x_test"]), data["y_test"]
    te1 = yte < 5
    sessions: list[dict[str, Any]] = []
    trees: dict[int, Any] = {}
    weights: dict[int, dict[str, np.ndarray]] = {}
    ref = epochs
    ewc: dict[str, Any] | None = None
    path = out / f"{method}.zarr"
    from tqdm.auto import tqdm

    bar = tqdm(total=2 * epochs + 1, desc=method, unit="session", disable=not progress)
    with Recorder(
        model, path, layers=DEMO_LAYERS, mode="w", dtype="float32", rng=seed,
        variability=cfg["variability"],
    ) as rec:  # fmt: skip
        opt = None
        for s in range(2 * epochs + 1):
            task = 0 if s == 0 else (1 if s <= epochs else 2)
            loss = float("nan")
            if task:
                if s in (1, epochs + 1):
                    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
                gen = torch.Generator().manual_seed(seed * 1000 + s)
                with rec.paused():  # only the probe presentations below are recorded
                    if s == epochs + 1 and method == "ewc":
                        ewc = {
                            "fisher": _fisher(model, *tasks[0]),
                            "params": [p.detach().clone() for p in model.parameters()],
                            "lambda": cfg["ewc_lambda"],
                        }
                    loss = _train_epoch(
                        model, opt, *tasks[task - 1], gen=gen, batch_size=cfg["batch_size"],
                        replay=buffer if (task == 2 and method == "replay") else None,
                        replay_batch=cfg["replay_batch"], ewc=ewc if task == 2 else None,
                    )  # fmt: skip
            model.eval()
            weights[s] = layer_weights(model)
            rec.session(s, epoch=s)
            present(rec, model, probe_x, labels=probe_y, stimulus=data["probe_idx"],
                    batch_size=500)  # fmt: skip
            present_spontaneous(rec, model, data["noise"], batch_size=500)
            with rec.paused():
                acc1 = _accuracy(model, xte[te1], yte[te1])
                acc2 = _accuracy(model, xte[~te1], yte[~te1])
            sessions.append({"session": s, "task": task, "train_loss": loss,
                             "task1_accuracy": acc1, "task2_accuracy": acc2})  # fmt: skip
            if cfg["concepts"] and s >= ref:
                with rec.paused():
                    trees[s] = concept_analysis(
                        model, probe_x, layers=DEMO_LAYERS, labels=probe_y, k=cfg["concept_k"],
                        min_support=3, n_permutations=0, progress=False, rng=seed,
                    )  # fmt: skip
            bar.set_postfix(task1=f"{acc1:.2f}", task2=f"{acc2:.2f}")
            bar.update(1)
    bar.close()
    return {"sessions": sessions, "trees": trees, "path": path, "reference": ref,
            "weights": weights}  # fmt: skip


def _analyse(run: dict[str, Any], method: str, out: Path, *, seed: int) -> dict[str, Any]:
    """Cross-session analyses of one recording against the reference session."""
    import netphys
    from netphys import plot as sp
    from netphys.population._sessions import (
        concept_persistence,
        spectrum_over_sessions,
        subspace_alignment,
        tuning_drift,
    )

    ref = run["reference"]
    act = netphys.layer_activity(netphys.open_recording(run["path"])).load()
    task1 = act.isel(time=np.flatnonzero((act.label.values >= 0) & (act.label.values < 5)))
    drift = tuning_drift(act, categories=range(5))
    pca = subspace_alignment(task1, n_components=10, method="pca")
    rel = subspace_alignment(task1, n_components=10, method="svca", rng=seed)
    spec = spectrum_over_sessions(act, n_components=64, fit_range=(2, 30), rng=seed)
    figures = {
        "drift": save_figure(sp.plot_tuning_drift(drift), out / f"{method}_drift.png"),
        "alignment": save_figure(sp.plot_subspace_alignment(pca), out / f"{method}_alignment.png"),
        "spectra": save_figure(sp.plot_spectrum_over_sessions(spec), out / f"{method}_spectra.png"),
    }
    from netphys.experiments.anatomy import anatomy_report, session_means

    anat = anatomy_report(act, run["weights"], out, prefix=f"{method}_")
    figures.update(anat["figures"])
    persist = {s: concept_persistence(run["trees"][ref], tree) for s, tree in run["trees"].items()}
    if persist:
        last = max(persist)
        figures["concepts"] = save_figure(
            sp.plot_concept_persistence(persist[last]), out / f"{method}_concepts.png"
        )
    for row in run["sessions"]:
        s = row["session"]
        r = {"session_a": ref, "session_b": s}
        row.update(
            tuning_correlation_to_reference=float(drift["tuning_correlation"].sel(r)),
            fraction_stable_to_reference=float(drift["fraction_stable"].sel(r)),
            population_correlation_to_reference=float(drift["population_correlation_mean"].sel(r)),
            pca_captured_variance_of_reference=float(pca["captured_variance"].sel(r)),
            pca_mean_angle_to_reference=float(pca["principal_angle"].sel(r).mean()),
            svca_captured_reliable_variance_of_reference=float(rel["captured_variance"].sel(r)),
            pca_alpha=float(spec["pca_alpha"].sel(session=s)),
            svca_alpha=float(spec["svca_alpha"].sel(session=s)),
            reliable_fraction=float(spec["reliable_fraction"].sel(session=s)),
            **session_means(anat, s),
        )
        if s in persist:
            p = persist[s]
            row.update(
                n_concepts=int(p.sizes["concept_b"]),
                concepts_kept=float(p["fraction_kept"]),
                concepts_changed=float(p["fraction_changed"]),
                concepts_lost=float(p["fraction_lost"]),
            )
    return {"figures": figures, "drift": drift, "pca": pca, "svca": rel, "spectra": spec,
            "anatomy": anat}  # fmt: skip


_METRICS = {
    "tuning_correlation_to_reference": "tuning corr. to ref.",
    "population_correlation_to_reference": "pop.-vector corr. to ref.",
    "pca_captured_variance_of_reference": "ref. variance captured (PCA)",
    "svca_captured_reliable_variance_of_reference": "ref. reliable var. captured (SVCA)",
    "pca_alpha": "PCA alpha",
    "concepts_lost": "share of reference concepts lost",
}


def _associations(results: dict[str, dict[str, Any]], ref: int) -> dict[str, float | None]:
    """Pearson r between task-1 accuracy and each metric over task-2 sessions, all methods."""
    rows = [r for res in results.values() for r in res["sessions"] if r["session"] >= ref]
    acc = np.asarray([r["task1_accuracy"] for r in rows])
    out: dict[str, float | None] = {}
    for key in _METRICS:
        vals = np.asarray([r.get(key, np.nan) for r in rows], dtype=float)
        ok = np.isfinite(vals)
        good = ok.sum() > 2 and np.std(vals[ok]) > 0 and np.std(acc[ok]) > 0
        out[key] = float(np.corrcoef(acc[ok], vals[ok])[0, 1]) if good else None
    return out


def run_continual(
    out_dir: str | Path = "netphys-continual",
    *,
    epochs_per_task: int = 4,
    method: str | tuple[str, ...] = "both",
    seed: int = 0,
    n_probe_per_class: int = 30,
    n_spontaneous: int = 100,
    n_replay_per_class: int = 10,
    ewc_lambda: float = 5000.0,
    concepts: bool = True,
    progress: bool = True,
    variability: Any = "default",
) -> dict[str, Any]:
    """Run the continual-learning experiment, record every epoch and write the report.

    Parameters
    ----------
    out_dir : str or Path, default="netphys-continual"
        Output folder (created); ``<method>.zarr`` recordings inside it are overwritten.
    epochs_per_task : int, default=4
        Training epochs on task 1 (digits 0-4), then on task 2 (digits 5-9); sessions
        0 (untrained) to ``2 * epochs_per_task`` are recorded, the reference is session
        ``epochs_per_task`` (end of task 1).
    method : {"finetune", "replay", "ewc", "both", "all"} or list of them, default="both"
        Training methods; "both" is finetune and replay, "all" adds EWC.
    seed : int, default=0
        Seed of the data split, the probe set, weights, batches, replay buffer and analyses.
    n_probe_per_class : int, default=30
        Held-out probe digits per class shown in every session.
    n_spontaneous : int, default=100
        Noise frames per session (``condition="spontaneous"``).
    n_replay_per_class : int, default=10
        Stored task-1 training samples per class for replay (16 replayed per batch).
    ewc_lambda : float, default=5000.0
        Strength of the EWC penalty.
    concepts : bool, default=True
        Run the concept analysis on the probe set from the reference session on, and the
        concept persistence against the reference.
    progress : bool, default=True
        Show progress bars.
    variability : "default", None or a spec, default="default"
        Trial-to-trial variability of the recordings (:mod:`netphys.variability`); "default"
        is Poisson spiking units on the recorded layers, None the noise-free model.

    Returns
    -------
    dict
        The JSON summary written to ``OUT/summary.json``: per method, per-session rows
        (``task1_accuracy``, ``task2_accuracy``, drift, alignment, spectrum and concept
        numbers against the reference), ``forgetting`` (task-1 accuracy lost from the reference
        to the last session), figure file names; ``associations`` (Pearson r of each population
        metric with task-1 accuracy over the task-2 sessions of all methods); ``seconds``.

    Examples
    --------
    >>> summary = run_continual("out", epochs_per_task=1, progress=False)  # doctest: +SKIP
    >>> summary["methods"]["finetune"]["forgetting"] > 0.5  # doctest: +SKIP
    True
    """
    import torch

    from netphys._validation import check_int, check_positive_float
    from netphys.plot import plot_continual_overview
    from netphys.recorder import spontaneous_inputs

    func = "run_continual"
    epochs = check_int(epochs_per_task, func=func, name="epochs_per_task", minimum=1)
    methods = _methods(method)
    n_probe = check_int(n_probe_per_class, func=func, name="n_probe_per_class", minimum=4)
    n_spont = check_int(n_spontaneous, func=func, name="n_spontaneous", minimum=0)
    n_replay = check_int(n_replay_per_class, func=func, name="n_replay_per_class", minimum=1)
    lam = check_positive_float(ewc_lambda, func=func, name="ewc_lambda", allow_zero=True)
    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr, x_te, y_te = load_digits_split(seed)
    rng = np.random.default_rng(seed)
    pidx = _probe(x_te, y_te, n_probe, rng)
    data = {
        "x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te,
        "probe_x": x_te[pidx], "probe_y": y_te[pidx], "probe_idx": pidx,
        "noise": spontaneous_inputs(torch.as_tensor(x_te), n_spont, kind="noise", rng=rng),
    }  # fmt: skip
    if isinstance(variability, str) and variability == "default":
        variability = DEMO_VARIABILITY
    cfg = {"variability": variability, "lr": 3e-3, "batch_size": 32, "replay_batch": 16, "n_replay_per_class": n_replay,
           "ewc_lambda": lam, "concepts": bool(concepts), "concept_k": 16}  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is fastest and avoids oversubscription
    try:
        runs = {
            m: _run_method(m, out, data, epochs=epochs, seed=seed, cfg=cfg, progress=progress)
            for m in methods
        }
    finally:
        torch.set_num_threads(threads)
    for m, run in runs.items():
        res = _analyse(run, m, out, seed=seed)
        s = run["sessions"]
        results[m] = {
            "recording": str(run["path"]),
            "sessions": s,
            "forgetting": s[epochs]["task1_accuracy"] - s[-1]["task1_accuracy"],
            "figures": res["figures"],
            "anatomy": {k: v for k, v in res["anatomy"].items() if k != "figures"},
        }
    overview = plot_continual_overview(results, _METRICS, reference=epochs)
    figures = {"overview": save_figure(overview, out / "overview.png")}
    summary = {
        "experiment": "continual",
        "tasks": {"1": [0, 1, 2, 3, 4], "2": [5, 6, 7, 8, 9]},
        "epochs_per_task": epochs,
        "reference_session": epochs,
        "seed": seed,
        "variability": {"sources": to_json(parse_variability(variability)), "seed": seed}
        if variability is not None
        else None,
        "variability_description": describe(
            {"sources": to_json(parse_variability(variability)), "seed": seed}
            if variability is not None
            else None
        ),
        "layers": DEMO_LAYERS,
        "n_probe_frames": len(pidx),
        "n_spontaneous": n_spont,
        "methods": results,
        "associations": _associations(results, epochs),
        "figures": figures,
        "seconds": round(time.time() - t0, 1),
    }
    summary = json_safe(summary)
    write_json(out / "summary.json", summary)
    logger.info("continual experiment written to %s in %.1f s", out, summary["seconds"])
    return summary
