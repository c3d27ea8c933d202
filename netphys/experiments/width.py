"""``netphys demo --experiment width``: the demo CNN at several widths, over several seeds.

Each (width, seed) run trains :class:`~netphys.experiments.DemoCNN` with that width on the
digits and records every epoch (``OUT/width<W>_seed<S>.zarr``) with the demo's own training and
recording code. On the last session it measures the held-out accuracy, the sparseness of the
code (stimulus frames, per recorded layer), the number and purity of concepts beside the
re-initialised control, the SVCA reliable-variance exponent on a fixed number of units, and the
weight-spectrum tail exponents of the trained layers beside their initial values. The seed's
claims (wider: sparser codes, more concepts, heavier-tailed weight spectra) are then tested
across all runs with a Spearman correlation against width. Figure and ``summary.json`` in
``OUT/``.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from scipy import stats

from netphys.experiments._common import json_safe, save_figure, write_json
from netphys.experiments._models import DEMO_LAYERS

__all__ = ["WIDTH_CLAIMS", "run_width"]

logger = logging.getLogger(__name__)

#: The seed's claims: metric, expected sign of its correlation with width, wording.
WIDTH_CLAIMS = {
    "sparser codes": ("population_sparseness", +1, "population sparseness grows with width"),
    "sparser codes (fraction active)": (
        "fraction_active", -1, "fraction of units active per frame falls with width"),
    "sparser codes (beyond the untrained network)": (
        "population_sparseness_gain", +1,
        "trained minus session-0 population sparseness grows with width"),
    "more concepts": ("n_concepts", +1, "number of concepts grows with width"),
    "more concepts (beyond the re-initialised control)": (
        "n_concepts_gain", +1, "trained minus control concepts grows with width"),
    "heavier tails (fc1)": (
        "weight_alpha_fc1", -1, "fc1 tail exponent (64 eigenvalues at every width) falls"),
    "heavier tails (conv2)": (
        "weight_alpha_conv2", -1, "conv2 tail exponent falls (widths with >= 20 eigenvalues)"),
}  # fmt: skip

#: Training effects tested over all runs (trained value, its untrained or control baseline).
TRAINING_EFFECTS = {
    "population_sparseness": "population_sparseness_init",
    "fraction_active": "fraction_active_init",
    "n_concepts": "n_concepts_control",
    "purity": "purity_control",
    "weight_alpha": "weight_alpha_init",
    "weight_alpha_fc1": "weight_alpha_fc1_init",
}


def _check_list(values: Any, *, name: str, minimum: int) -> list[int]:
    from netphys._validation import check_int

    vals = [values] if isinstance(values, (int, np.integer)) else list(values)
    out = [check_int(v, func="run_width", name=name, minimum=minimum) for v in vals]
    if not out or len(set(out)) != len(out):
        raise ValueError(
            f"run_width(): `{name}` must be a non-empty list of distinct ints >= {minimum}; "
            f"got {values!r}. Use e.g. `{name}=(4, 8, 16)`."
        )
    return out


def _units(act: xr.DataArray, max_units: int, seed: int) -> xr.DataArray:
    """Draw a fixed-size random subset of the units that vary (exponents depend on unit count)."""
    varying = np.flatnonzero(np.ptp(act.values, axis=0) > 0)
    if len(varying) > max_units:
        varying = np.sort(np.random.default_rng(seed).choice(varying, max_units, replace=False))
    return act.isel(unit=varying)


def _population(act: xr.DataArray, session: int, max_units: int, seed: int) -> dict[str, Any]:
    """Sparseness (stimulus frames) per layer and the SVCA exponent of one session."""
    from netphys import population as pop
    from netphys.errors import NetphysWarning

    sel = act.isel(time=np.flatnonzero(act["session"].values == session)).load()
    summ = pop.sparseness_summary(sel, by=("layer",), condition="stimulus")
    out: dict[str, Any] = {
        "population_sparseness": float(summ["population_sparseness"].mean()),
        "fraction_active": float(summ["fraction_active"].mean()),
        "lifetime_sparseness": float(summ["lifetime_sparseness"].mean()),
        "layers": {
            str(layer): {
                k: float(summ[k].sel(layer=layer))
                for k in (
                    "population_sparseness",
                    "fraction_active",
                    "lifetime_sparseness",
                    "lifetime_kurtosis",
                    "n_silent_units",
                )
            }
            for layer in summ["layer"].values
        },
    }
    sub = _units(
        sel.drop_vars([c for c in sel.coords if sel[c].dims == ("unit",)]), max_units, seed
    )
    k = min(128, sub.shape[1] // 4, sub.shape[0] // 4)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=NetphysWarning)
        res = pop.svca(sub, n_components=k, block_length=10, rng=seed)
    out["svca_alpha"] = float(res["alpha"])
    out["reliable_fraction_128"] = float(res["reliable_fraction_128"])
    out["n_units_svca"] = int(sub.shape[1])
    return out


def _concepts(model: Any, x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, Any]:
    from netphys.experiments.concepts import concept_analysis, reinitialised
    from netphys.population.paths import concept_summary

    out: dict[str, Any] = {}
    for name, net in (("trained", model), ("control", reinitialised(model, torch_seed=seed))):
        tree = concept_analysis(
            net, x, layers=DEMO_LAYERS, labels=y, n_permutations=0, progress=False, rng=seed
        )
        s = concept_summary(tree)
        out[name] = {k: s[k] for k in ("n_concepts", "purity", "nmi", "n_eff_median")}
    return out


def _weights(weights: dict[int, dict[str, np.ndarray]], last: int) -> dict[str, Any]:
    from netphys.population import weight_spectra

    ds = weight_spectra({0: weights[0], last: weights[last]})
    per_layer = {
        str(layer): {
            "alpha_init": float(ds["alpha"].sel(session=0, layer=layer)),
            "alpha": float(ds["alpha"].sel(session=last, layer=layer)),
            "n_eigenvalues": int(
                np.isfinite(ds["eigenvalue"].sel(session=last, layer=layer)).sum()
            ),
            "n_spikes": int(ds["n_spikes"].sel(session=last, layer=layer)),
            "n_spikes_init": int(ds["n_spikes"].sel(session=0, layer=layer)),
            "stable_rank": float(ds["stable_rank"].sel(session=last, layer=layer)),
        }
        for layer in ds["layer"].values
    }
    fitted = [v for v in per_layer.values() if np.isfinite(v["alpha"])]
    return {
        "weight_alpha": float(np.mean([v["alpha"] for v in fitted])) if fitted else np.nan,
        "weight_alpha_init": float(np.mean([v["alpha_init"] for v in fitted]))
        if fitted
        else np.nan,
        "weight_layers_fitted": [k for k, v in per_layer.items() if np.isfinite(v["alpha"])],
        "weight_n_spikes": int(sum(v["n_spikes"] for v in per_layer.values())),
        "layers": per_layer,
    }


def _run_one(out: Path, width: int, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    import netphys
    from netphys.experiments.demo import train_and_record

    path = out / f"width{width}_seed{seed}.zarr"
    model, info = train_and_record(
        out, epochs=cfg["epochs"], seed=seed, n_spontaneous=cfg["n_spontaneous"],
        dtype="float16", progress=False, width=width, path=path,
    )  # fmt: skip
    last = cfg["epochs"]
    act = netphys.layer_activity(path)
    final = _population(act, last, cfg["max_units"], seed)
    init = _population(act, 0, cfg["max_units"], seed)
    n = cfg["n_concept_samples"]
    conc = _concepts(model, info["x_test"][:n], info["y_test"][:n], seed)
    wts = _weights(info["weights"], last)
    row = {
        "width": width, "seed": seed, "recording": path.name,
        "test_accuracy": info["sessions"][-1]["test_accuracy"],
        "n_units": int(act.sizes["unit"]),
        **{k: final[k] for k in ("population_sparseness", "fraction_active",
                                 "lifetime_sparseness", "svca_alpha", "reliable_fraction_128")},
        "population_sparseness_init": init["population_sparseness"],
        "fraction_active_init": init["fraction_active"],
        "n_concepts": conc["trained"]["n_concepts"],
        "purity": conc["trained"]["purity"],
        "n_concepts_control": conc["control"]["n_concepts"],
        "purity_control": conc["control"]["purity"],
        "weight_alpha": wts["weight_alpha"],
        "weight_alpha_init": wts["weight_alpha_init"],
        "weight_n_spikes": wts["weight_n_spikes"],
        "weight_alpha_fc1": wts["layers"]["fc1"]["alpha"],
        "weight_alpha_fc1_init": wts["layers"]["fc1"]["alpha_init"],
        "weight_alpha_conv2": wts["layers"]["conv2"]["alpha"],
        "population_sparseness_gain": final["population_sparseness"] - init["population_sparseness"],
        "n_concepts_gain": conc["trained"]["n_concepts"] - conc["control"]["n_concepts"],
        "detail": {"sparseness_layers": final["layers"], "concepts": conc,
                   "weights": wts["layers"], "n_units_svca": final["n_units_svca"]},
    }  # fmt: skip
    if not cfg["keep_recordings"]:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    return row


#: Per-run numbers that go into the (width, seed) table and the figure.
METRICS = (
    "test_accuracy", "population_sparseness", "fraction_active", "lifetime_sparseness",
    "population_sparseness_init", "fraction_active_init", "n_concepts", "n_concepts_control",
    "purity", "purity_control", "svca_alpha", "reliable_fraction_128", "weight_alpha",
    "weight_alpha_init", "weight_n_spikes", "n_units", "population_sparseness_gain",
    "n_concepts_gain", "weight_alpha_fc1", "weight_alpha_fc1_init", "weight_alpha_conv2",
)  # fmt: skip


def width_table(rows: Sequence[dict[str, Any]]) -> xr.Dataset:
    """Arrange per-run rows as a Dataset with dims (width, seed), one variable per metric."""
    widths = sorted({r["width"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    ds = xr.Dataset(coords={"width": widths, "seed": seeds})
    for m in METRICS:
        arr = np.full((len(widths), len(seeds)), np.nan)
        for r in rows:
            arr[widths.index(r["width"]), seeds.index(r["seed"])] = r[m]
        ds[m] = (("width", "seed"), arr)
    return ds


def _interval(values: np.ndarray) -> dict[str, Any]:
    """Mean and 95% t-interval over seeds (None where fewer than two finite values)."""
    v = values[np.isfinite(values)]
    mean = float(v.mean()) if v.size else np.nan
    if v.size < 2:
        return {"mean": mean, "ci95": None, "n": int(v.size)}
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": int(v.size)}


def _claims(table: xr.Dataset) -> dict[str, Any]:
    """Spearman correlation of each claim's metric with width over all runs, and a verdict."""
    out: dict[str, Any] = {}
    w = np.broadcast_to(table["width"].values[:, None], table["test_accuracy"].shape)
    for claim, (metric, sign, text) in WIDTH_CLAIMS.items():
        v = table[metric].values
        ok = np.isfinite(v)
        if ok.sum() < 3 or np.ptp(w[ok]) == 0 or np.ptp(v[ok]) == 0:
            out[claim] = {"metric": metric, "rho": None, "p": None, "verdict": "not testable"}
            continue
        res = stats.spearmanr(w[ok], v[ok])
        rho, p = float(res.statistic), float(res.pvalue)
        if p < 0.05 and np.sign(rho) == sign:
            verdict = "holds"
        elif p < 0.05:
            verdict = "contradicted"
        else:
            verdict = "not supported (no significant trend)"
        out[claim] = {"metric": metric, "expected": text, "rho": rho, "p": p,
                      "n_runs": int(ok.sum()), "verdict": verdict}  # fmt: skip
    return out


def _training(table: xr.Dataset) -> dict[str, Any]:
    """Trained minus baseline over all runs: mean difference and Wilcoxon signed-rank p."""
    out: dict[str, Any] = {}
    for metric, base in TRAINING_EFFECTS.items():
        d = (table[metric] - table[base]).values.ravel()
        d = d[np.isfinite(d)]
        p = float(stats.wilcoxon(d).pvalue) if d.size >= 3 and np.any(d != 0) else None
        out[metric] = {"baseline": base, "mean_difference": float(d.mean()) if d.size else None,
                       "n_runs": int(d.size), "p_wilcoxon": p}  # fmt: skip
    return out


def run_width(
    out_dir: str | Path = "netphys-width",
    *,
    widths: Sequence[int] = (4, 8, 16, 32),
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 3,
    n_spontaneous: int = 100,
    n_concept_samples: int = 300,
    max_units: int = 512,
    keep_recordings: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and record the demo CNN at several widths and seeds; test the width claims.

    Parameters
    ----------
    out_dir : str or Path, default="netphys-width"
        Output folder (created): ``width<W>_seed<S>.zarr`` recordings, ``width.png``,
        ``width.zarr`` (the (width, seed) table) and ``summary.json``.
    widths : sequence of int, default=(4, 8, 16, 32)
        Channels of the first convolution (the second has twice as many; the hidden Linear
        layer keeps 64 units, as in the demo).
    seeds : sequence of int, default=(0, 1, 2)
        One run per seed and width (data split, weights, batches, analyses).
    epochs : int, default=3
        Training epochs per run (sessions 0 to ``epochs`` are recorded).
    n_spontaneous : int, default=100
        Noise frames per session.
    n_concept_samples : int, default=300
        Held-out digits used for the concept analysis (trained and re-initialised control).
    max_units : int, default=512
        Units (a random subset of the varying ones) for the SVCA exponent, the same number at
        every width so that exponents are comparable.
    keep_recordings : bool, default=True
        Keep the recordings (False: delete each after its analysis).
    progress : bool, default=True
        Progress bar over runs.

    Returns
    -------
    dict
        The JSON summary: ``runs`` (one row per width and seed), ``widths`` (per width and
        metric: mean, 95% t-interval over seeds, n), ``claims`` (per claim: Spearman rho and
        p of the metric against width over all runs, and a verdict; the claims are also tested
        against the untrained network and the re-initialised control), ``training_effects``
        (trained minus baseline over all runs, Wilcoxon signed-rank p), ``figures``,
        ``settings``, ``seconds``.

    Examples
    --------
    >>> s = run_width("out", widths=(4, 8), seeds=(0,), epochs=1)  # doctest: +SKIP
    >>> s["claims"]["more concepts"]["verdict"]  # doctest: +SKIP
    'not testable'
    """
    import torch
    from tqdm.auto import tqdm

    from netphys._validation import check_int
    from netphys.plot import plot_width_sweep

    func = "run_width"
    widths_l = _check_list(widths, name="widths", minimum=1)
    seeds_l = _check_list(seeds, name="seeds", minimum=0)
    cfg: dict[str, Any] = {
        "epochs": check_int(epochs, func=func, name="epochs", minimum=1),
        "n_spontaneous": check_int(n_spontaneous, func=func, name="n_spontaneous", minimum=0),
        "n_concept_samples": check_int(n_concept_samples, func=func, name="n_concept_samples",
                                       minimum=20),
        "max_units": check_int(max_units, func=func, name="max_units", minimum=16),
        "keep_recordings": bool(keep_recordings),
    }  # fmt: skip
    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(w, s) for w in widths_l for s in seeds_l]
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is fastest and avoids oversubscription
    try:
        for w, s in tqdm(runs, desc="width x seed", disable=not progress):
            rows.append(_run_one(out, w, s, cfg))
            logger.info("width %d seed %d: accuracy %.3f", w, s, rows[-1]["test_accuracy"])
    finally:
        torch.set_num_threads(threads)
    table = width_table(rows)
    table.attrs = {"experiment": "width", "epochs": cfg["epochs"]}
    table.to_zarr(out / "width.zarr", mode="w", consolidated=False)
    figures = {"width": save_figure(plot_width_sweep(table), out / "width.png")}
    summary = {
        "experiment": "width",
        "layers": DEMO_LAYERS,
        "runs": rows,
        "widths": {
            str(w): {m: _interval(table[m].sel(width=w).values) for m in METRICS} for w in widths_l
        },
        "claims": _claims(table),
        "training_effects": _training(table),
        "figures": figures,
        "settings": {
            **cfg,
            "widths": widths_l,
            "seeds": seeds_l,
            "sparseness": "stimulus frames of the last session, mean over layers",
            "weight_alpha": "mean tail exponent over layers with >= 20 eigenvalues (fc1; conv2 "
            "from width 10 on: the layer set changes with width, so the claims use fc1 and "
            "conv2 separately)",
            "concepts": f"first {cfg['n_concept_samples']} held-out digits, "
            "control = re-initialised copy",
        },
        "seconds": round(time.time() - t0, 1),
    }
    write_json(out / "summary.json", summary)
    return json_safe(summary)
