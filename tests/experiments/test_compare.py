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
