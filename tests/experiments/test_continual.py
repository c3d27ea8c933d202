"""The continual-learning experiment: fine-tuning forgets task 1 more than replay; report written."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from netphys.errors import FitRangeWarning  # noqa: E402
from netphys.experiments.continual import run_continual  # noqa: E402


@pytest.mark.slow
def test_run_continual_short(tmp_path):
    # 10 probes per class: the sessions' reliable spectra turn negative within fit_range (2, 30)
    with pytest.warns(FitRangeWarning, match=r"spectrum_over_sessions\(\): \d+ power-law fit"):
        summary = run_continual(
            tmp_path, epochs_per_task=1, method="both", seed=0, n_probe_per_class=10,
            n_spontaneous=20, progress=False,
        )  # fmt: skip
    ft, rp = summary["methods"]["finetune"], summary["methods"]["replay"]
    # session 1 ends task 1 (reference); session 2 ends task 2
    assert [r["session"] for r in ft["sessions"]] == [0, 1, 2]
    assert ft["sessions"][1]["task1_accuracy"] > 0.8  # task 1 was learnt
    assert ft["forgetting"] > rp["forgetting"] + 0.05  # seed 0: 0.96 vs 0.86 after one epoch
    assert ft["sessions"][2]["task1_accuracy"] < rp["sessions"][2]["task1_accuracy"]
    # the shared task-1 phase is identical (same seed)
    assert ft["sessions"][1]["task1_accuracy"] == rp["sessions"][1]["task1_accuracy"]
    ref = ft["sessions"][1]
    assert ref["tuning_correlation_to_reference"] == pytest.approx(1.0)
    assert ref["concepts_kept"] == 1.0
    assert "concepts_lost" in ft["sessions"][2]
    assert "weight_alpha" in ft["sessions"][2] and "population_sparseness" in ft["sessions"][2]
    assert set(ft["anatomy"]["weights"]) == {"0", "1", "2"}
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["methods"]["replay"]["forgetting"] == pytest.approx(rp["forgetting"])
    for res in (ft, rp):
        for name in res["figures"].values():
            assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / summary["figures"]["overview"]).exists()
    assert (tmp_path / "finetune.zarr").is_dir() and (tmp_path / "replay.zarr").is_dir()
    assert set(summary["associations"]) >= {"tuning_correlation_to_reference", "concepts_lost"}


def test_run_continual_rejects_bad_method(tmp_path):
    with pytest.raises(ValueError, match=r"run_continual\(\): `method` must be one of"):
        run_continual(tmp_path, method="sgd")
    with pytest.raises(ValueError, match=r"`epochs_per_task` must be >= 1"):
        run_continual(tmp_path, epochs_per_task=0)
