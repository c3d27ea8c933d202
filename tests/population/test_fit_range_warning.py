"""A power-law fit cut short (or left NaN) says so, once per call, with the numbers and a fix."""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest

from netphys.errors import FitRangeWarning, NetphysWarning
from netphys.population import (
    cvpca,
    fit_power_law,
    repeat_responses,
    simulate_population,
    svca,
)
from netphys.population._powerlaw import _power_law_kernel, short_fit_message


def _first_nonpositive(values: np.ndarray, start: int, stop: int) -> tuple[int, int]:
    """Slow and obvious: (first 1-based non-positive component in start..stop, their count)."""
    bad = [n for n in range(start, stop + 1) if not values[n - 1] > 0]
    return bad[0], len(bad)


def test_planted_svca_warns_once_with_the_numbers() -> None:
    # 5 planted shared dimensions at high SNR, then noise SVCs whose reliable variance has a
    # random sign: the default-range fit must stop before the first negative one, and say so
    sim = simulate_population(
        200, 1200, alpha=0.5, snr=20.0, n_latents=5, category_strength=0.0, rng=0
    )
    with pytest.warns(FitRangeWarning) as caught:
        res = svca(sim["activity"], n_components=40, block_length=20, fit_range=(2, 40), rng=0)
    assert len(caught) == 1  # once per call, not once per component
    assert issubclass(caught[0].category, NetphysWarning)
    rel = res["reliable_variance"].values
    first, count = _first_nonpositive(rel, 2, 40)
    assert first > 5  # the planted dimensions are reliable
    msg = str(caught[0].message)
    assert msg.startswith("svca(): the power-law fit asked for components 2..40 but ")
    assert f"used 2..{first - 1} ({first - 2} component" in msg
    assert f"non-positive at {count} of components 2..40, from component {first} on" in msg
    if first - 2 >= 3:
        assert f"`fit_range=(2, {first - 1})`" in msg
    assert "record more frames or repeats" in msg
    # the attrs are unchanged: the range used and the count of non-positive values
    assert int(res["fit_stop"]) == first - 1
    assert int(res["n_nonpositive"]) == count
    # the suggested range is fitted without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = svca(
            sim["activity"], n_components=40, block_length=20, fit_range=(2, first - 1), rng=0
        )
    assert float(again["alpha"]) == pytest.approx(float(res["alpha"]), rel=1e-12, nan_ok=True)


def test_planted_cvpca_names_the_signal_variance() -> None:
    sim = simulate_population(
        100, 300, alpha=1.0, snr=5.0, n_latents=5, n_repeats=2, category_strength=0.0, rng=0
    )
    with pytest.warns(FitRangeWarning) as caught:
        res = cvpca(repeat_responses(sim["activity"]), n_shuffles=2, fit_range=(2, 60), rng=0)
    assert len(caught) == 1
    first, count = _first_nonpositive(res["signal_variance"].values, 2, 60)
    msg = str(caught[0].message)
    assert "cvpca(): the power-law fit asked for components 2..60" in msg
    assert f"signal variance is non-positive at {count} of components 2..60" in msg
    assert f"from component {first} on" in msg
    assert first > 5 and int(res["fit_stop"]) == first - 1  # 5 planted dimensions


def test_no_warning_when_the_range_is_used_whole() -> None:
    sim = simulate_population(200, 600, alpha=1.0, snr=10.0, n_latents=5, rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = svca(sim["activity"], n_components=20, block_length=20, fit_range=(1, 5), rng=0)
        # clipping the default 11..500 to the length of the spectrum is not a cut
        fit = fit_power_law(np.arange(1, 101, dtype=float) ** -1.0)
    assert int(res["fit_stop"]) == 5 and np.isfinite(float(res["alpha"]))
    assert int(fit["fit_stop"]) == 100


def test_too_few_components_says_alpha_is_nan() -> None:
    sim = simulate_population(60, 400, alpha=1.0, snr=10.0, rng=0)
    pattern = (
        r"svca\(\): the power-law fit asked for components 11\.\.500 but the range starts after "
        r"the last of the 6 components, so alpha is NaN\. To fix, pass `fit_range=\(\d, 6\)`"
    )
    with pytest.warns(FitRangeWarning, match=pattern):
        res = svca(sim["activity"], n_components=6, block_length=20, rng=0)
    assert np.isnan(float(res["alpha"]))


@pytest.mark.parametrize(
    ("spectrum", "fit_range", "absolute", "expected"),
    [
        # hand-built: 1..12 positive, 13 negative -> two points left, alpha NaN
        (
            np.r_[np.arange(1, 13.0) ** -1.0, -1.0, np.arange(14, 41.0) ** -1.0],
            (11, 500),
            False,
            "asked for components 11..500 (of the 40 computed: 11..40) but the fit used 11..12 "
            "(2 components, fewer than the 3 a fit needs, so alpha is NaN): the spectrum is "
            "non-positive at 1 of components 11..40, from component 13 on. To fix, pass "
            "`fit_range=(1, 12)`",
        ),
        # the paper's |s| fit: a zero stops it, a negative value does not
        (
            np.r_[np.arange(1, 21.0) ** -1.0, 0.0, -(np.arange(22, 31.0) ** -1.0)],
            (2, 30),
            True,
            "asked for components 2..30 but the fit used none of them (0 components, fewer "
            "than the 3 a fit needs, so alpha is NaN): the spectrum is zero or NaN at 1 of "
            "components 2..30, from component 21 on. To fix, pass `fit_range=(2, 20)`",
        ),
    ],
)
def test_message_of_hand_built_spectra(spectrum, fit_range, absolute, expected) -> None:
    fit = _power_law_kernel(spectrum, *fit_range, absolute=absolute)
    msg = short_fit_message(spectrum, fit, fit_range, func="f", what="spectrum", absolute=absolute)
    assert msg is not None and expected in msg
    negative_only = np.abs(spectrum) + (spectrum == 0)  # no zero: the |s| fit is whole
    fit = _power_law_kernel(-negative_only, *fit_range, absolute=True)
    assert short_fit_message(-negative_only, fit, fit_range, func="f", what="s", absolute=True) is None


def test_real_recording_reliable_variance_turns_negative_at_svc_13(shared_data) -> None:
    pytest.importorskip("pynwb")
    from netphys.io import read_nwb

    path = os.path.join(shared_data, "suite2p_pynapple_a0662", "nwb", "2022_08_08.nwb")
    if not os.path.exists(path):
        pytest.skip(f"{path} is missing")
    act = read_nwb(path)["activity"]
    with pytest.warns(FitRangeWarning) as caught:
        res = svca(act)
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "asked for components 11..500 (of the 99 computed: 11..99) but the fit used 11..12" in msg
    assert "so alpha is NaN" in msg
    assert "non-positive at 33 of components 11..99, from component 13 on" in msg
    suggested = tuple(int(v) for v in re.search(r"fit_range=\((\d+), (\d+)\)", msg).groups())
    assert suggested == (1, 12)
    assert np.isnan(float(res["alpha"]))
    assert int(res["fit_stop"]) == 12 and int(res["n_nonpositive"]) == 33
    # the suggested range fits (same kernel as svca's, see test_svca)
    refit = fit_power_law(res["reliable_variance"], fit_range=suggested)
    assert float(refit["alpha"]) == pytest.approx(1.31, abs=0.01)
