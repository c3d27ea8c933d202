"""Per-session population report of one recording (the demo report's population section)."""

from __future__ import annotations

import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import check_population
from netphys.errors import NetphysWarning
from netphys.experiments._common import json_safe, save_figure
from netphys.plot import (
    plot_category_autocorrelation,
    plot_reliable_fraction,
    plot_rrr_sessions,
    plot_shuffle_null,
    plot_spectra,
)
from netphys.population._cvpca import cvpca, repeat_responses
from netphys.population._nulls import shuffle_null
from netphys.population._rrr import svca_predict
from netphys.population._spectra import category_autocorrelation, eigenspectrum
from netphys.population._svca import svca

__all__ = ["population_report"]


_num = json_safe  # a JSON-safe number: float/int, None for NaN/inf


def _fit_numbers(ds: xr.Dataset) -> dict[str, Any]:
    return {
        name: _num(ds[name].values)
        for name in ("alpha", "r2", "fit_start", "fit_stop", "n_nonpositive")
    }


def _by_session(results: dict[str, xr.Dataset]) -> dict[str, xr.Dataset]:
    return {f"session {key}": value for key, value in results.items()}


def population_report(
    activity: xr.DataArray,
    *,
    behaviour: xr.DataArray | None = None,
    out_dir: str | Path,
    n_components: int = 128,
    max_units: int = 1024,
    min_shift: int = 100,
    fit_range: tuple[int, int] = (2, 100),
    rng: int = 0,
) -> dict[str, Any]:
    """Run the population analyses on each session of a recording; write figures and numbers.

    Per session: the PCA eigenspectrum (stimulus frames), cvPCA (stimulus frames of repeats 0 and 1,
    matched by ``stimulus``), SVCA (all frames, blocks of 10 frames), the explained share of
    reliable variance from ``behaviour`` (RRR, when given), the circular-shift correlation null
    (spontaneous frames, or all frames when too few) and the category autocorrelation (stimulus
    frames with a label). Units constant within a session (dead units) are left out of that
    session's analyses and counted in ``n_constant_units``. An analysis that cannot run is
    skipped with the reason.

    Parameters
    ----------
    activity : xarray.DataArray with dims (time, 'unit')
        One recording's activity with time coords ``session``, ``condition``, ``repeat``,
        ``stimulus``, ``label`` (``netphys.layer_activity``).
    behaviour : xarray.DataArray with dims (time, output) or None, default=None
        The model's outputs (logits) per frame, aligned with ``activity``.
    out_dir : str or pathlib.Path
        Folder for the PNG figures (created if needed).
    n_components : int, default=128
        SVCs per session (fewer when the session is small).
    max_units : int, default=1024
        Analyse a random subset of this many units (the same in every session) so that the
        report stays fast; exponents are comparable across sessions, not with other unit counts.
    min_shift : int, default=100
        Minimum circular shift in frames for the null (model frames are independent
        presentations, so a short shift suffices; the paper used 1000 bins of 1.2 s).
    fit_range : tuple of int, default=(2, 100)
        Components of every power-law fit (eigenspectrum, cvPCA, SVCA): one range, so that
        each exponent is computed once, the same way, for every session.
    rng : int, default=0
        Seed of every analysis.

    Returns
    -------
    dict
        JSON-safe: ``sessions`` (session id -> numbers per analysis, or ``{"skipped": reason}``),
        ``figures`` (file names inside ``out_dir``), ``figure_titles`` (file name -> title),
        ``fit_range``, ``n_units``, ``n_units_analysed``, ``warnings`` (messages
        of the analyses, e.g. constant units dropped), ``seconds``.

    Raises
    ------
    ValueError
        If ``activity`` lacks the ``session`` coord or ``behaviour`` does not match it.

    Examples
    --------
    >>> import tempfile
    >>> from netphys.population import simulate_population
    >>> sim = simulate_population(60, 300, n_repeats=2, rng=0)
    >>> act = sim["activity"].assign_coords(session=("time", [0] * 600),
    ...                                     condition=("time", ["stimulus"] * 600))
    >>> out = population_report(act, out_dir=tempfile.mkdtemp(), n_components=10)
    >>> sorted(out["sessions"]["0"])[:3]
    ['category_autocorrelation', 'cvpca', 'eigenspectrum']
    """
    func = "population_report"
    t0 = time.perf_counter()
    da = check_population(activity, func=func, min_samples=4, min_units=2)
    if "session" not in da.coords:
        raise ValueError(
            f"{func}(): `activity` needs a 'session' coord along '{da.dims[0]}' (one id per "
            "frame); use `netphys.layer_activity(rec)` or add one with "
            f"`.assign_coords(session=('{da.dims[0]}', ids))`."
        )
    if behaviour is not None and behaviour.shape[0] != da.shape[0]:
        raise ValueError(
            f"{func}(): `behaviour` has {behaviour.shape[0]} frames, `activity` {da.shape[0]}."
        )
    if da.shape[1] > max_units:
        keep = np.sort(np.random.default_rng(rng).choice(da.shape[1], max_units, replace=False))
        da = da.isel(unit=keep)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sessions = np.asarray(da["session"].values)
    cond = np.asarray(da["condition"].values).astype(str) if "condition" in da.coords else None
    report: dict[str, Any] = {
        "sessions": {},
        "figures": [],
        "n_units": int(activity.sizes["unit"]) if isinstance(activity, xr.DataArray) else None,
        "n_units_analysed": int(da.shape[1]),
        "figure_titles": {},
        "fit_range": list(fit_range),
    }
    # analysis name -> session key -> result Dataset (the figures are drawn from these)
    names = ("eigenspectrum", "cvpca", "svca", "rrr", "shuffle_null", "category_autocorrelation")
    results: dict[str, dict[str, xr.Dataset]] = {name: {} for name in names}
    opts = {
        "n_components": n_components,
        "min_shift": min_shift,
        "fit_range": fit_range,
        "rng": rng,
    }
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always", NetphysWarning)
        _per_session(da, behaviour, sessions, cond, report, results, opts)
    for record in records:
        if issubclass(record.category, NetphysWarning):
            caught.append(str(record.message))
        else:
            warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
    report["warnings"] = sorted(set(caught))
    _figures(out, report, results)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


def _per_session(
    da: xr.DataArray,
    behaviour: xr.DataArray | None,
    sessions: np.ndarray,
    cond: np.ndarray | None,
    report: dict[str, Any],
    results: dict[str, dict[str, xr.Dataset]],
    opts: dict[str, Any],
) -> None:
    """Run every analysis on every session; fill ``report["sessions"]`` and ``results``."""
    dim = da.dims[0]
    for s in np.unique(sessions):
        key = str(_num(s))
        idx = np.flatnonzero(sessions == s)
        act = da.isel({dim: idx})
        act = act.drop_vars("session") if "session" in act.coords else act
        numbers: dict[str, Any] = {"n_frames": len(idx)}
        if act.nbytes < 2**30:
            act = act.load()  # one read per session instead of one per analysis
            # units constant within the session (e.g. dead ReLUs) are left out of all analyses
            varying = np.ptp(act.values, axis=0) > 0
            numbers["n_constant_units"] = int((~varying).sum())
            if not varying.all():
                act = act.isel(unit=varying)
        numbers["n_units_analysed"] = int(act.shape[1])
        c = None if cond is None else cond[idx]
        beh = behaviour.isel({behaviour.dims[0]: idx}) if behaviour is not None else None
        stim = act if c is None else act.isel({dim: np.flatnonzero(c == "stimulus")})
        steps = (
            ("eigenspectrum", partial(_eigenspectrum, stim, opts)),
            ("cvpca", partial(_cvpca, stim, opts)),
            ("svca", partial(_svca, act, beh, opts, results["rrr"], key, numbers)),
            ("shuffle_null", partial(_null, act, c, opts)),
            ("category_autocorrelation", partial(_category, stim)),
        )
        for name, run in steps:
            try:
                result, numbers[name] = run()
                results[name][key] = result
            except (ValueError, TypeError) as exc:
                numbers[name] = {"skipped": str(exc)}
        report["sessions"][key] = numbers


def _eigenspectrum(stim: xr.DataArray, opts: dict[str, Any]) -> tuple[xr.Dataset, dict[str, Any]]:
    n = min(512, stim.shape[1], stim.shape[0] - 1)
    eig = eigenspectrum(stim, n_components=n, fit_range=opts["fit_range"])
    return eig, {**_fit_numbers(eig), "frames": "stimulus"}


def _cvpca(stim: xr.DataArray, opts: dict[str, Any]) -> tuple[xr.Dataset, dict[str, Any]]:
    resp = repeat_responses(stim, repeats=(0, 1))
    if resp.sizes["stimulus"] < 10:
        raise ValueError(f"only {resp.sizes['stimulus']} stimuli shown twice (need 10)")
    cv = cvpca(resp, n_shuffles=5, rng=opts["rng"], fit_range=opts["fit_range"])
    numbers = {
        **_fit_numbers(cv),
        "n_stimuli": int(resp.sizes["stimulus"]),
        "signal_fraction": float(cv["signal_fraction"]),
    }
    return cv, numbers


def _svca(
    act: xr.DataArray,
    beh: xr.DataArray | None,
    opts: dict[str, Any],
    rrr: dict[str, xr.Dataset],
    key: str,
    numbers: dict[str, Any],
) -> tuple[xr.Dataset, dict[str, Any]]:
    # the smaller unit set holds at least a quarter of the units (auto split)
    k = min(opts["n_components"], act.shape[1] // 4, act.shape[0] // 4)
    kw = {"n_components": k, "block_length": 10, "rng": opts["rng"], "fit_range": opts["fit_range"]}
    if beh is not None:
        res = svca_predict(act, beh, **kw)
        best = res["explained_fraction_128"]
        rrr[key] = res
        numbers["behaviour_rrr"] = {
            "ranks": [int(r) for r in res["rank"].values],
            "explained_fraction_128": [_num(v) for v in best.values],
            "best_explained_fraction_128": _num(best.max().values),
        }
    else:
        res = svca(act, **kw)
    rf = res["reliable_fraction"].values
    return res, {
        **_fit_numbers(res),
        "n_components": len(rf),
        "split": res.attrs["split"],
        "reliable_fraction_svc1": _num(rf[0]),
        "reliable_fraction_128": _num(res["reliable_fraction_128"].values),
    }


def _null(
    act: xr.DataArray, cond: np.ndarray | None, opts: dict[str, Any]
) -> tuple[xr.Dataset, dict[str, Any]]:
    min_shift = opts["min_shift"]
    spont = np.arange(act.shape[0]) if cond is None else np.flatnonzero(cond == "spontaneous")
    use_spont = cond is not None and len(spont) >= 2 * min_shift
    frames = spont if use_spont else np.arange(act.shape[0])
    if len(frames) < 2 * min_shift:
        raise ValueError(f"{len(frames)} frames < 2 * min_shift = {2 * min_shift}")
    nul = shuffle_null(
        act.isel({act.dims[0]: frames}), min_shift=min_shift, max_units=1000, rng=opts["rng"]
    )
    pct = [5.0, 95.0]
    return nul, {
        "frames": "spontaneous" if use_spont else "all",
        "spread_ratio": _num(nul["spread_ratio"].values),
        "fraction_significant": _num(nul["fraction_significant"].values),
        "real_p5_p95": [_num(v) for v in nul["real_percentiles"].sel(percentile=pct).values],
        "null_p5_p95": [_num(v) for v in nul["null_percentiles"].sel(percentile=pct).values],
    }


def _category(stim: xr.DataArray) -> tuple[xr.Dataset, dict[str, Any]]:
    if "label" not in stim.coords:
        raise ValueError("no 'label' coord")
    labelled = np.flatnonzero(np.asarray(stim["label"].values) >= 0)
    ca = category_autocorrelation(stim.isel({stim.dims[0]: labelled}), "label")
    return ca, {n: _num(ca[n].values) for n in ("within", "across", "index")}


def _titled(fig: Any, title: str) -> Any:
    fig.suptitle(title, fontsize=10)
    return fig


def _figures(
    out: Path,
    report: dict[str, Any],
    results: dict[str, dict[str, xr.Dataset]],
) -> None:
    """Draw the report's figures from ``results``; record their file names and titles."""
    n = report["n_units_analysed"]
    units = f"{n} units"
    spectra = {name: _by_session(results[name]) for name in ("eigenspectrum", "cvpca", "svca")}
    figs: dict[str, tuple[Any, str]] = {}
    if spectra["eigenspectrum"]:
        figs["eigenspectrum.png"] = (
            plot_spectra(spectra["eigenspectrum"]),
            f"PCA eigenspectrum per session (stimulus frames, {units})",
        )
    if spectra["cvpca"]:
        figs["cvpca_spectrum.png"] = (
            plot_spectra(spectra["cvpca"]),
            f"cvPCA signal spectrum per session (repeats 0 vs 1, {units})",
        )
    if spectra["svca"]:
        figs["svca_spectrum.png"] = (
            plot_spectra(spectra["svca"]),
            f"SVCA reliable-variance spectrum per session ({units})",
        )
        figs["reliable_fraction.png"] = (
            plot_reliable_fraction(spectra["svca"]),
            f"SVCA: reliable share of each SVC's variance ({units})",
        )
    if results["rrr"]:
        figs["behaviour_rrr.png"] = (
            plot_rrr_sessions(_by_session(results["rrr"])),
            f"model outputs -> SVCs: reliable variance explained by rank ({units})",
        )
    if results["shuffle_null"]:
        key, last = list(results["shuffle_null"].items())[-1]
        frames = report["sessions"][key]["shuffle_null"]["frames"]
        figs["shuffle_null.png"] = (
            plot_shuffle_null(last),
            f"session {key}: pairwise correlations vs circular-shift null ({frames} frames)",
        )
    if results["category_autocorrelation"]:
        key, last = list(results["category_autocorrelation"].items())[-1]
        figs["category_autocorrelation.png"] = (
            plot_category_autocorrelation(last),
            f"session {key}: category autocorrelation of stimulus responses (labels = digits)",
        )
    for name, (fig, title) in figs.items():
        save_figure(_titled(fig, title), out / name, dpi=80)
        report["figures"].append(name)
        report["figure_titles"][name] = title
