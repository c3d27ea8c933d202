"""compare_files / compare_recordings: files in, figure, JSON and a table out."""

from __future__ import annotations

import json
import os

from netphys.experiments import compare_files, compare_recordings


def test_compare_files_on_real_data(tmp_path, shared_data):
    songbird = os.path.join(shared_data, "songbird_hvc_mackevicius", "MackeviciusData.mat")
    suite2p = os.path.join(shared_data, "suite2p_pynapple_a0662", "suite2p")
    table = compare_files(
        suite2p, songbird, tmp_path / "out", read_options={"bin_width": 0.1}, rng=0
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["compare.json", "compare.png"]
    summary = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert set(summary["recordings"]) == {"suite2p", "MackeviciusData.mat"}
    # 20 labelled cells in the suite2p folder, 666 songbird frames: matched N and T
    assert summary["recordings"]["suite2p"]["n_units"] == 20
    assert summary["recordings"]["MackeviciusData.mat"]["n_frames"] == 666
    assert "SVCA reliable-spectrum exponent" in table
    assert table.splitlines()[0].split() == ["suite2p", "MackeviciusData.mat"]
    assert (tmp_path / "out" / "compare.png").stat().st_size > 10_000
    # rasters are rastermap-sorted: a permutation of the subsampled units
    again = compare_recordings(os.fspath(suite2p), os.fspath(songbird), rng=0)
    assert again.raster.shape == (2, 20, 500)
    assert again.attrs["format_a"] == "suite2p"
    assert again.attrs["format_b"] == "mat"


def test_like_for_like_selection_and_calcium_model(tmp_path):
    import numpy as np
    import torch

    import netphys
    from netphys.population import simulate_calcium, simulate_population
    from netphys.recorder import present, present_spontaneous
    from netphys.variability import Poisson

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 120), torch.nn.ReLU())
    path = tmp_path / "model.zarr"
    x = torch.randn(150, 8)
    with netphys.Recorder(model, path, layers=["1"], variability=Poisson(rate=50)) as rec:
        for session in (0, 1):
            rec.session(session)
            present(rec, model, x * (1 + session), repeat=0)
            present_spontaneous(rec, model, torch.randn(60, 8))
    mouse = simulate_calcium(
        simulate_population(150, 800, rng=0)["activity"], frame_rate=10.0, rng=0
    )
    res = compare_recordings(os.fspath(path), mouse, n_boot=0, sort=False, rng=0)
    notes = " ".join(res.attrs["notes"])
    assert "session 1 of [0, 1], stimulus frames" in notes
    assert "(150 frames)" in notes  # the last session's stimulus frames, not the whole store
    assert "calcium model at the mouse's 10 Hz" in notes
    assert int(res["n_frames"][0]) == 150
    off = compare_recordings(
        os.fspath(path), mouse, calcium="off", condition="spontaneous", session=0,
        n_boot=0, sort=False, rng=0,
    )  # fmt: skip
    assert "calcium" not in " ".join(off.attrs["notes"])
    assert int(off["n_frames"][0]) == 60
    assert not np.isnan(float(off["eigen_alpha"][0]))
    import pytest

    with pytest.raises(ValueError, match=r"`session`=7 but a has sessions \[0, 1\]"):
        compare_recordings(os.fspath(path), mouse, session=7)
