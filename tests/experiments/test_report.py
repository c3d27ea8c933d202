"""Tests of population_report on a small recording-shaped population."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from netphys.experiments.report import population_report
from netphys.population import cvpca, eigenspectrum, repeat_responses, simulate_population


def recording_like(n_units: int, n_stimuli: int, n_spont: int, sessions: int = 2):
    """Concatenate sessions as in docs/format.md: time coords session, condition, ..."""
    acts, behs = [], []
    for s in range(sessions):
        stim = simulate_population(
            n_units, n_stimuli, n_repeats=2, alpha=1.0 + 0.2 * s, snr=3.0, rng=s
        )
        spont = simulate_population(n_units, n_spont, snr=3.0, timescale=3.0, rng=10 + s)
        n_stim = 2 * n_stimuli
        a = xr.concat(
            [stim["activity"], spont["activity"]],
            "time",
            coords="minimal",
            compat="override",
            join="override",
        )
        a = a.drop_vars(["stimulus", "label", "repeat"]).assign_coords(
            session=("time", np.full(n_stim + n_spont, s)),
            condition=("time", ["stimulus"] * n_stim + ["spontaneous"] * n_spont),
            stimulus=("time", np.r_[stim["stimulus"].values, -np.ones(n_spont, int)]),
            repeat=("time", np.r_[stim["repeat"].values, np.zeros(n_spont, int)]),
            label=("time", np.r_[stim["label"].values, -np.ones(n_spont, int)]),
        )
        acts.append(a)
        behs.append(
            xr.concat(
                [stim["behaviour"], spont["behaviour"]],
                "time",
                coords="minimal",
                compat="override",
                join="override",
            )
        )
    act = xr.concat(acts, "time", coords="minimal", compat="override", join="override")
    beh = xr.concat(behs, "time", coords="minimal", compat="override", join="override")
    return act, beh


def test_report_runs_and_is_json_safe(tmp_path) -> None:
    act, beh = recording_like(150, 150, 250)
    out = population_report(act, behaviour=beh, out_dir=tmp_path, rng=0, min_shift=100)
    json.dumps(out, allow_nan=False)  # JSON-safe: no NaN, no numpy types
    assert sorted(out["sessions"]) == ["0", "1"]
    s0 = out["sessions"]["0"]
    assert s0["n_frames"] == 550
    assert s0["n_constant_units"] == 0
    assert out["warnings"] == []
    assert s0["cvpca"]["n_stimuli"] == 150
    assert s0["shuffle_null"]["frames"] == "spontaneous"
    assert s0["svca"]["reliable_fraction_svc1"] > 0.5
    assert len(s0["behaviour_rrr"]["ranks"]) == len(s0["behaviour_rrr"]["explained_fraction_128"])
    for name in ("eigenspectrum", "cvpca", "svca"):
        assert isinstance(s0[name]["alpha"], float)
    # the report's number is the analysis run directly on that session's frames
    sel = act.isel(time=(act["session"].values == 1) & (act["condition"].values == "stimulus"))
    direct = cvpca(
        repeat_responses(sel.drop_vars("session")),
        n_shuffles=5,
        rng=0,
        n_components=149,
        fit_range=(2, 100),
    )
    assert out["sessions"]["1"]["cvpca"]["alpha"] == pytest.approx(float(direct["alpha"]), rel=1e-9)
    # one exponent per quantity: the eigenspectrum on the stimulus frames, with the same fit
    eig = eigenspectrum(sel.drop_vars("session"), n_components=149, fit_range=(2, 100))
    assert out["sessions"]["1"]["eigenspectrum"]["alpha"] == pytest.approx(float(eig["alpha"]))
    assert out["fit_range"] == [2, 100]
    # figures say which session and which units
    titles = out["figure_titles"]
    assert titles["shuffle_null.png"].startswith("session 1:")
    assert "spontaneous frames" in titles["shuffle_null.png"]
    assert titles["category_autocorrelation.png"].startswith("session 1:")
    assert "150 units" in titles["eigenspectrum.png"]
    names = set(out["figures"])  # file names inside out_dir
    assert {
        "eigenspectrum.png",
        "cvpca_spectrum.png",
        "svca_spectrum.png",
        "reliable_fraction.png",
        "behaviour_rrr.png",
        "shuffle_null.png",
        "category_autocorrelation.png",
    } <= names
    assert all((tmp_path / n).stat().st_size > 1000 for n in names)


def test_report_skips_with_reasons(tmp_path) -> None:
    act, _ = recording_like(40, 40, 20, sessions=1)
    act = act.assign_coords(repeat=("time", np.zeros(act.sizes["time"], int)))
    out = population_report(act, out_dir=tmp_path, min_shift=100, max_units=30)
    s0 = out["sessions"]["0"]
    assert "no stimulus appears in both repeats" in s0["cvpca"]["skipped"]
    assert s0["shuffle_null"]["skipped"] == "100 frames < 2 * min_shift = 200"
    assert "behaviour_rrr" not in s0
    assert out["n_units_analysed"] == 30
    assert out["n_units"] == 40


def test_report_errors(tmp_path) -> None:
    act, beh = recording_like(30, 30, 20, sessions=1)
    with pytest.raises(ValueError, match=r"needs a 'session' coord along 'time'"):
        population_report(act.drop_vars("session"), out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"`behaviour` has 10 frames, `activity` 80"):
        population_report(act, behaviour=beh[:10], out_dir=tmp_path)
