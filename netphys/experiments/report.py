"""Per-session population report of one recording (the demo report's population section)."""

from __future__ import annotations

import time
import warnings
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


def _save(fig: Any, path: Path, figures: list[str]) -> None:
    save_figure(fig, path, dpi=90)
    figures.append(str(path))


def population_report(
    activity: xr.DataArray,
    *,
    behaviour: xr.DataArray | None = None,
    out_dir: str | Path,
    n_components: int = 128,
    max_units: int = 1024,
    min_shift: int = 100,
    rng: int = 0,
) -> dict[str, Any]:
    """Run the population analyses on each session of a recording; write figures and numbers.

    Per session: the PCA eigenspectrum (all frames), cvPCA (stimulus frames of repeats 0 and 1,
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
    rng : int, default=0
        Seed of every analysis.

    Returns
    -------
    dict
        JSON-safe: ``sessions`` (session id -> numbers per analysis, or ``{"skipped": reason}``),
        ``figures`` (paths written), ``n_units``, ``n_units_analysed``, ``warnings`` (messages
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
    }
    # analysis name -> session key -> result Dataset (the figures are drawn from these)
    results: dict[str, dict[str, xr.Dataset]] = {
        name: {} for name in ("eigenspectrum", "cvpca", "svca", "rrr", "null", "category")
    }
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always", NetphysWarning)
        _per_session(da, behaviour, sessions, cond, report, results, n_components, min_shift, rng)
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
    n_components: int,
    min_shift: int,
    rng: int,
) -> None:
    for s in np.unique(sessions):
        key = str(_num(s))
        idx = np.flatnonzero(sessions == s)
        act = da.isel({da.dims[0]: idx})
        if "session" in act.coords:
            act = act.drop_vars("session")
        numbers: dict[str, Any] = {"n_frames": len(idx)}
        if act.nbytes < 2**30:
            act = act.load()  # one read per session instead of one per analysis
            # units constant within the session (e.g. dead ReLUs) are left out of all analyses
            varying = np.ptp(act.values, axis=0) > 0
            numbers["n_constant_units"] = int((~varying).sum())
            if not varying.all():
                act = act.isel(unit=varying)
        beh = behaviour.isel({behaviour.dims[0]: idx}) if behaviour is not None else None
        n_t = len(idx)
        # eigenspectrum
        try:
            eig = eigenspectrum(act, n_components=min(512, act.shape[1], n_t - 1))
            results["eigenspectrum"][key] = eig
            numbers["eigenspectrum"] = _fit_numbers(eig)
        except ValueError as exc:
            numbers["eigenspectrum"] = {"skipped": str(exc)}
        # cvPCA on repeats 0 and 1 of the stimulus frames
        try:
            stim_sel = act if cond is None else act.isel({da.dims[0]: cond[idx] == "stimulus"})
            resp = repeat_responses(stim_sel, repeats=(0, 1))
            if resp.sizes["stimulus"] < 10:
                raise ValueError(f"only {resp.sizes['stimulus']} stimuli shown twice (need 10)")
            cv = cvpca(
                resp,
                n_shuffles=5,
                rng=rng,
                n_components=None,
            )
            results["cvpca"][key] = cv
            numbers["cvpca"] = {**_fit_numbers(cv), "n_stimuli": int(resp.sizes["stimulus"])}
        except (ValueError, TypeError) as exc:
            numbers["cvpca"] = {"skipped": str(exc)}
        # SVCA (+ behaviour prediction)
        try:
            block = 10
            # the smaller unit set holds at least a quarter of the units (auto split)
            k = min(n_components, act.shape[1] // 4, n_t // 4)
            if beh is not None:
                res = svca_predict(act, beh, n_components=k, block_length=block, rng=rng)
                best = res["explained_fraction_128"]
                results["rrr"][key] = res
                numbers["behaviour_rrr"] = {
                    "ranks": [int(r) for r in res["rank"].values],
                    "explained_fraction_128": [_num(v) for v in best.values],
                    "best_explained_fraction_128": _num(best.max().values),
                }
            else:
                res = svca(act, n_components=k, block_length=block, rng=rng)
            results["svca"][key] = res
            rf = res["reliable_fraction"].values
            numbers["svca"] = {
                **_fit_numbers(res),
                "n_components": len(rf),
                "split": res.attrs["split"],
                "reliable_fraction_svc1": _num(rf[0]),
                "reliable_fraction_128": _num(res["reliable_fraction_128"].values),
            }
        except ValueError as exc:
            numbers["svca"] = {"skipped": str(exc)}
        # circular-shift null
        spont = idx if cond is None else idx[cond[idx] == "spontaneous"]
        null_frames = spont if len(spont) >= 2 * min_shift else idx
        if len(null_frames) >= 2 * min_shift:
            nul = shuffle_null(
                act.isel({da.dims[0]: np.searchsorted(idx, null_frames)}),
                min_shift=min_shift,
                max_units=1000,
                rng=rng,
            )
            results["null"][key] = nul
            numbers["shuffle_null"] = {
                "frames": "spontaneous" if null_frames is spont else "all",
                "spread_ratio": _num(nul["spread_ratio"].values),
                "fraction_significant": _num(nul["fraction_significant"].values),
                "real_p5_p95": [
                    _num(v) for v in nul["real_percentiles"].sel(percentile=[5.0, 95.0]).values
                ],
                "null_p5_p95": [
                    _num(v) for v in nul["null_percentiles"].sel(percentile=[5.0, 95.0]).values
                ],
            }
        else:
            numbers["shuffle_null"] = {
                "skipped": f"{len(null_frames)} frames < 2 * min_shift = {2 * min_shift}"
            }
        # category autocorrelation
        try:
            if "label" not in act.coords:
                raise ValueError("no 'label' coord")
            labelled = np.asarray(act["label"].values) >= 0
            if cond is not None:
                labelled &= cond[idx] == "stimulus"
            ca = category_autocorrelation(act.isel({da.dims[0]: labelled}), "label")
            results["category"][key] = ca
            numbers["category_autocorrelation"] = {
                n: _num(ca[n].values) for n in ("within", "across", "index")
            }
        except ValueError as exc:
            numbers["category_autocorrelation"] = {"skipped": str(exc)}
        report["sessions"][key] = numbers


def _figures(
    out: Path,
    report: dict[str, Any],
    results: dict[str, dict[str, xr.Dataset]],
) -> None:
    figures: list[str] = report["figures"]
    spectra = {name: _by_session(results[name]) for name in ("eigenspectrum", "cvpca", "svca")}
    if results["eigenspectrum"]:
        _save(plot_spectra(spectra["eigenspectrum"]), out / "eigenspectrum.png", figures)
    if results["cvpca"]:
        _save(plot_spectra(spectra["cvpca"]), out / "cvpca_spectrum.png", figures)
    if results["svca"]:
        _save(plot_spectra(spectra["svca"]), out / "svca_spectrum.png", figures)
        _save(plot_reliable_fraction(spectra["svca"]), out / "reliable_fraction.png", figures)
    if results["rrr"]:
        fig = plot_rrr_sessions(_by_session(results["rrr"]))
        _save(fig, out / "behaviour_rrr.png", figures)
    if results["null"]:
        last = list(results["null"].values())[-1]
        _save(plot_shuffle_null(last), out / "shuffle_null.png", figures)
    if results["category"]:
        last = list(results["category"].values())[-1]
        _save(plot_category_autocorrelation(last), out / "category_autocorrelation.png", figures)
