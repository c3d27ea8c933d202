"""The demo and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

import netphys
from netphys.cli import main


def test_demo_records_and_reports(tmp_path):
    from netphys.experiments.demo import run_demo

    out = tmp_path / "demo"
    summary = run_demo(out, epochs=1, n_spontaneous=100, analyses=False, progress=False)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["n_frames"] == summary["n_frames"] == 2 * (2 * 899 + 100)
    assert {f.name for f in out.glob("*.png")} >= {"raster.png", "sessions.png"}
    assert summary["figures"] == {
        "raster": "raster.png",
        "sessions": "sessions.png",
        "weight_spectra": "weight_spectra.png",
        "anatomy_sessions": "anatomy_sessions.png",
    }
    from tests.experiments.test_html import check_report

    checker = check_report(out / "report.html")
    assert checker.figures == [
        "sessions.png",
        "raster.png",
        "anatomy_sessions.png",
        "weight_spectra.png",
    ]
    # per-unit pages show the digits: the held-out inputs are stored with the recording
    assert netphys.io.read_stimuli(out / "recording.zarr").shape == (899, 8, 8)
    s0, s1 = summary["sessions"]
    assert s0["test_accuracy"] < 0.3 < 0.8 < s1["test_accuracy"]  # chance before, learned after
    rec = netphys.open_recording(out / "recording.zarr")
    assert rec.attrs["status"] == "complete"
    assert rec.attrs["variability"] == on_disk["variability"]  # stored and reported
    assert set(np.unique(rec["condition"].values)) == {"stimulus", "spontaneous"}
    np.testing.assert_array_equal(np.unique(rec["repeat"].values), [0, 1])
    assert "graph/act1--act2" in rec.groups or "/graph/act1--act2" in rec.groups
    # sparseness and weight spectra per session (issue 15)
    assert (out / summary["figures"]["weight_spectra"]).exists()
    assert (out / summary["figures"]["anatomy_sessions"]).exists()
    anat = on_disk["anatomy"]
    assert set(anat["weights"]) == {"0", "1"}
    assert set(anat["weights"]["1"]) == {"conv1", "conv2", "fc1", "fc2"}
    assert set(anat["sparseness"]["1"]) == set(netphys.experiments.DEMO_LAYERS)
    frac = anat["sparseness"]["1"]["act3"]["fraction_active"]
    assert 0 < frac < 1
    assert 0 <= s1["population_sparseness"] <= 1


@pytest.mark.slow
def test_demo_with_analyses(tmp_path):
    from netphys.experiments.demo import run_demo

    out = tmp_path / "d"
    summary = run_demo(out, epochs=1, n_spontaneous=100, progress=False)
    assert summary["population"] is not None
    assert summary["concepts"] is not None
    on_disk = json.loads((out / "summary.json").read_text())  # valid JSON: NaN is null
    assert on_disk["sessions"][0]["train_loss"] is None
    # one exponent per session: the table's alpha is the population report's
    for row in on_disk["sessions"]:
        numbers = on_disk["population"]["sessions"][str(row["session"])]
        assert row["pca_alpha"] == numbers["eigenspectrum"]["alpha"]
    # every figure path has one base (OUT) and is in the page
    from tests.experiments.test_html import check_report

    assert all((out / p).is_file() for p in on_disk["figures"].values())
    assert set(check_report(out / "report.html").figures) == set(on_disk["figures"].values())
    # significance against the untrained control: the control is not all starred
    sig = on_disk["concepts"]["significance"]["untrained"]
    assert sig["n_significant"] <= max(1, 0.1 * sig["n_concepts"])
    # recorded with spiking units: repeats differ, so cvPCA finds noise as well as signal
    assert summary["variability"]["sources"][0]["kind"] == "poisson"
    assert "poisson(rate=20.0" in summary["variability_description"]
    fractions = [
        n["cvpca"]["signal_fraction"]
        for n in summary["population"]["sessions"].values()
        if "signal_fraction" in n.get("cvpca", {})
    ]
    assert fractions
    assert all(0.0 < f < 0.99 for f in fractions), fractions


def test_cli_info_recover_and_errors(tmp_path, capsys):
    import torch

    path = tmp_path / "r.zarr"
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
    netphys.record(model, torch.randn(5, 3), path, progress=False)
    assert main(["info", str(path)]) == 0
    assert "layer '1': 4 units" in capsys.readouterr().out
    assert main(["recover", str(path)]) == 0
    assert '"frames_committed": 5' in capsys.readouterr().out
    assert main(["recover", str(path), "--force"]) == 0  # no live writer: same result
    assert '"status_before": "recovered"' in capsys.readouterr().out
    assert main(["info", str(tmp_path / "missing.zarr")]) == 2
    assert "error" in capsys.readouterr().err


def test_cli_compare_real_recordings(tmp_path, shared_data, capsys):
    import os

    suite2p = os.path.join(shared_data, "suite2p_pynapple_a0662", "suite2p")
    song = os.path.join(shared_data, "songbird_hvc_mackevicius", "MackeviciusData.mat")
    out = tmp_path / "cmp"
    assert main(["compare", suite2p, song, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "compare.png" in printed
    assert (out / "compare.png").exists()
    assert json.loads((out / "compare.json").read_text())


@pytest.mark.slow
def test_cli_demo_continual(tmp_path, capsys):
    out = tmp_path / "cl"
    args = ["demo", "--experiment", "continual", "--epochs", "1", "--method", "finetune"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "finetune: task-1 accuracy per session" in printed
    assert (out / "summary.json").exists()
