"""The per-unit page: unit_profile numbers against a direct computation, plot_unit, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import netphys  # noqa: E402
from netphys.cli import main  # noqa: E402
from netphys.errors import NetphysWarning  # noqa: E402
from netphys.experiments import unit_profile  # noqa: E402
from netphys.io._stimuli import write_stimuli  # noqa: E402
from netphys.plot import plot_unit  # noqa: E402

N, REPEATS = 12, 2


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """An identity network: unit j's response to stimulus i is relu(x[i, j]) (planted)."""
    lin = torch.nn.Linear(4, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(4))
        lin.bias.zero_()
    model = torch.nn.Sequential(lin, torch.nn.ReLU())
    gen = np.random.default_rng(0)
    x = gen.standard_normal((N, 4)).astype("float32")
    labels = np.arange(N) % 3
    path = tmp_path_factory.mktemp("units") / "rec.zarr"
    with pytest.warns(NetphysWarning, match="without `variability`"):  # planted: noise-free
        netphys.record(
            model, x, path, labels=labels, repeats=REPEATS, n_spontaneous=5, progress=False
        )
    netphys.record(model, 2 * x, path, labels=labels, mode="a", n_spontaneous=5, progress=False)
    return path, x, labels


def test_profile_matches_a_direct_computation(rec) -> None:
    path, x, labels = rec
    prof = unit_profile(path, "1", 2, session=0, top_k=3)
    r = np.maximum(x[:, 2], 0)  # the planted response of unit 2
    for c in range(3):
        np.testing.assert_allclose(
            prof["tuning_mean"].sel(label=c), r[labels == c].mean(), rtol=1e-6
        )
        trials = np.tile(r[labels == c], REPEATS)  # every presentation, both repeats
        sem = trials.std(ddof=1) / np.sqrt(trials.size)
        np.testing.assert_allclose(prof["tuning_sem"].sel(label=c), sem, rtol=1e-5)
        assert int(prof["tuning_n"].sel(label=c)) == trials.size
    np.testing.assert_array_equal(prof["top_stimulus"], np.argsort(-r, kind="stable")[:3])
    np.testing.assert_allclose(prof["top_response"], np.sort(r)[::-1][:3], rtol=1e-6)
    # session 1 saw 2 * x: the stimulus response doubles
    np.testing.assert_allclose(prof["stimulus_mean"].values, [r.mean(), 2 * r.mean()], rtol=1e-5)
    assert prof["spontaneous_trace"].sizes["frame"] == 5
    assert prof.attrs["layer"] == "1" and prof.attrs["unit"] == 2
    assert "top_image" not in prof


def test_profile_shows_stored_or_passed_images(rec, tmp_path: Path) -> None:
    path, _, _ = rec
    images = np.arange(N * 16, dtype="float32").reshape(N, 4, 4)
    prof = unit_profile(path, "1", 0, inputs=images[:, None], top_k=4)
    np.testing.assert_array_equal(prof["top_image"], images[prof["top_stimulus"].values])
    write_stimuli(path, images)
    stored = unit_profile(path, "1", 0, top_k=4)
    np.testing.assert_array_equal(stored["top_image"], prof["top_image"])
    assert stored.attrs["session"] == 1  # default: the last session
    fig = plot_unit(stored)
    assert len(fig.axes) == 3 + 4  # tuning, sessions, spontaneous + one axis per image
    assert "layer 1, unit 0" in fig.get_suptitle()


def test_profile_errors(rec) -> None:
    path, _, _ = rec
    with pytest.raises(
        ValueError, match=r"`layer` 'nope' is not in the recording; layers: \['1'\]"
    ):
        unit_profile(path, "nope", 0)
    with pytest.raises(ValueError, match=r"`unit` must be an int in 0\.\.3"):
        unit_profile(path, "1", 4)
    with pytest.raises(ValueError, match=r"`session` 7 was not recorded; sessions: \[0, 1\]"):
        unit_profile(path, "1", 0, session=7)
    with pytest.raises(TypeError, match="unit_profile"):
        plot_unit(np.zeros(3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="write_stimuli"):
        write_stimuli(path, np.zeros(5))


def test_cli_units(rec, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _, _ = rec
    out = tmp_path / "u.png"
    assert main(["units", str(path), "--layer", "1", "--unit", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "layer '1' unit 3 (session 1): prefers label" in printed
    assert out.stat().st_size > 5000
    assert main(["units", str(path), "--layer", "x", "--unit", "0"]) == 2
    assert "`layer` 'x' is not in the recording" in capsys.readouterr().err
