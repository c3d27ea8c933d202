"""The width experiment: claim verdicts on planted tables, the CLI on tiny settings, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("torch")

from netphys.cli import main
from netphys.experiments.width import METRICS, _claims, _interval, _training, run_width


def _table(trend: dict[str, float], rng: np.random.Generator) -> xr.Dataset:
    widths = np.array([4, 8, 16, 32])
    ds = xr.Dataset(coords={"width": widths, "seed": [0, 1, 2]})
    for m in METRICS:
        slope = trend.get(m, 0.0)
        base = np.log2(widths)[:, None] * slope
        ds[m] = (("width", "seed"), base + rng.normal(0, 0.01 if slope else 1.0, (4, 3)))
    return ds


def test_claim_verdicts_follow_planted_trends(rng: np.random.Generator) -> None:
    t = _table({"population_sparseness": 1.0, "n_concepts": -1.0, "weight_alpha_fc1": -1.0}, rng)
    claims = _claims(t)
    assert claims["sparser codes"]["verdict"] == "holds"
    assert claims["more concepts"]["verdict"] == "contradicted"
    assert claims["heavier tails (fc1)"]["verdict"] == "holds"
    assert claims["sparser codes"]["rho"] > 0.95  # ties: three seeds per width
    t["weight_alpha_init"] = t["weight_alpha"] + 3.0 + 0.1 * rng.standard_normal((4, 3))
    eff = _training(t)["weight_alpha"]
    assert eff["mean_difference"] == pytest.approx(-3.0, abs=0.1)
    assert eff["p_wilcoxon"] < 0.01 and eff["n_runs"] == 12
    flat = _claims(_table({}, np.random.default_rng(5)))
    assert all(c["verdict"] != "holds" or c["p"] < 0.05 for c in flat.values())


def test_interval_is_the_t_interval() -> None:
    v = np.array([1.0, 2.0, 4.0])
    res = _interval(v)
    half = 4.302652729911275 * np.std(v, ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert res["mean"] == pytest.approx(7 / 3)
    assert res["ci95"] == pytest.approx([7 / 3 - half, 7 / 3 + half])
    assert _interval(np.array([1.0, np.nan]))["ci95"] is None


def test_bad_input(tmp_path, capsys) -> None:
    with pytest.raises(ValueError, match=r"run_width\(\): `widths` must be a non-empty list"):
        run_width(tmp_path, widths=(4, 4))
    with pytest.raises(ValueError, match=r"`widths` must be >= 1"):
        run_width(tmp_path, widths=(0, 4))
    with pytest.raises(ValueError, match=r"`epochs` must be >= 1"):
        run_width(tmp_path, widths=(4,), epochs=0)
    with pytest.raises(SystemExit):
        main(["demo", "--experiment", "width", "--widths", "4,x"])
    assert "comma-separated integers" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_width_tiny(tmp_path, capsys) -> None:
    out = tmp_path / "w"
    argv = ["demo", "--experiment", "width", "--widths", "2,3", "--seeds", "1", "--epochs", "1"]
    assert main([*argv, "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "claim 'heavier tails (fc1)'" in printed
    text = (out / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert [(r["width"], r["seed"]) for r in summary["runs"]] == [(2, 0), (3, 0)]
    for r in summary["runs"]:
        assert 0 <= r["fraction_active"] <= 1 and 0 < r["test_accuracy"] <= 1
        assert (out / r["recording"]).is_dir()
        assert r["detail"]["weights"]["fc1"]["n_eigenvalues"] == 64
    assert (out / summary["figures"]["width"]).stat().st_size > 0
    table = xr.open_zarr(out / "width.zarr", consolidated=False)
    assert dict(table.sizes) == {"width": 2, "seed": 1}
