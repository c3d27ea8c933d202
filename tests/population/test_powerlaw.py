"""Tests of fit_power_law: exact recovery, agreement with a direct weighted fit, contract."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from netphys.errors import FitRangeWarning
from netphys.population import fit_power_law


def direct_fit(ss: np.ndarray, start: int, stop: int) -> tuple[float, float]:
    """Plain weighted least squares on log-log axes, written out."""
    n = np.arange(start, stop + 1, dtype=float)
    y = np.log(ss[start - 1 : stop])
    w = np.diag(1.0 / n)
    x = np.column_stack([-np.log(n), np.ones_like(n)])
    beta = np.linalg.inv(x.T @ w @ x) @ (x.T @ w @ y)
    return float(beta[0]), float(beta[1])


@pytest.mark.parametrize("alpha", [0.8, 1.0, 1.5])
def test_recovers_exact_power_law(alpha: float) -> None:
    ss = 3.0 * np.arange(1, 1001, dtype=float) ** -alpha
    fit = fit_power_law(ss)
    # exact power law: only float rounding separates the estimate from the truth
    assert float(fit["alpha"]) == pytest.approx(alpha, rel=1e-10)
    assert float(fit["intercept"]) == pytest.approx(np.log(3.0), rel=1e-10)
    assert float(fit["r2"]) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(fit["fitted"].values, ss, rtol=1e-9)


def test_agrees_with_direct_fit(rng: np.random.Generator) -> None:
    ss = np.arange(1, 800, dtype=float) ** -1.1 * np.exp(0.3 * rng.standard_normal(799))
    fit = fit_power_law(ss, fit_range=(11, 500))
    alpha, intercept = direct_fit(ss, 11, 500)
    # same normal equations solved two ways: agreement to float rounding
    assert float(fit["alpha"]) == pytest.approx(alpha, rel=1e-6)
    assert float(fit["intercept"]) == pytest.approx(intercept, rel=1e-6)
    assert 0 < float(fit["r2"]) < 1


def test_range_is_clipped_to_length() -> None:
    fit = fit_power_law(np.arange(1, 101, dtype=float) ** -1.0)
    assert int(fit["fit_start"]) == 11
    assert int(fit["fit_stop"]) == 100
    assert fit.sizes["component"] == 100


def test_stops_before_first_nonpositive() -> None:
    ss = np.arange(1, 201, dtype=float) ** -1.2
    ss[59] = -1e-3  # component 60
    ss[99] = 0.0  # component 100
    with pytest.warns(FitRangeWarning) as caught:
        fit = fit_power_law(ss, fit_range=(11, 150))
    assert len(caught) == 1  # once per call, not once per non-positive value
    msg = str(caught[0].message)
    assert "asked for components 11..150 but the fit used 11..59 (49 components)" in msg
    assert "non-positive at 2 of components 11..150, from component 60 on" in msg
    assert "`fit_range=(11, 59)`" in msg
    assert int(fit["fit_stop"]) == 59
    assert int(fit["n_nonpositive"]) == 2
    alpha, _ = direct_fit(ss, 11, 59)
    assert float(fit["alpha"]) == pytest.approx(alpha, rel=1e-6)


def test_inputs_not_modified() -> None:
    ss = np.arange(1, 300, dtype=float) ** -1.0
    ss[200] = -1.0
    before = ss.copy()
    fit_range = np.array([11, 250])
    with pytest.warns(FitRangeWarning, match=r"from component 201 on"):
        fit_power_law(ss, fit_range=fit_range)  # type: ignore[arg-type]
    np.testing.assert_array_equal(ss, before)
    np.testing.assert_array_equal(fit_range, [11, 250])


def test_dataarray_keeps_its_dim_and_coord() -> None:
    da = xr.DataArray(np.arange(1, 51.0) ** -1.0, dims="pc", coords={"pc": np.arange(1, 51)})
    fit = fit_power_law(da, fit_range=(2, 40))
    assert fit["fitted"].dims == ("pc",)
    assert float(fit["alpha"]) == pytest.approx(1.0, rel=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "spectrum", "match"),
    [
        ({}, np.ones((3, 3)), r"fit_power_law\(\): `spectrum` must be 1-D"),
        ({"fit_range": (0, 10)}, np.ones(20), r"`fit_range` must be a pair .* got \(0, 10\)"),
        ({"fit_range": (10, 5)}, np.ones(20), r"`fit_range`"),
        ({"fit_range": (11, 500)}, np.ones(5), r"fewer than three positive values"),
        ({"fit_range": (2, 10)}, -np.ones(20), r"fewer than three positive .* 9 non-positive"),
    ],
)
def test_errors(kwargs: dict, spectrum: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_power_law(spectrum, **kwargs)


def test_two_points_before_a_non_positive_value_are_no_fit() -> None:
    """The fit stops before the first non-positive value; two points left are not a fit.

    (Seen on a real 219-ROI recording: SVCA's reliable variance turned negative at SVC 13,
    and a line through SVCs 11-12 reported alpha 18 with r2 = 1.)
    """
    spectrum = np.arange(1, 41.0) ** -1.0
    spectrum[12] = -1e-3  # component 13
    with pytest.raises(ValueError, match=r"fewer than three positive values .* 1 non-positive"):
        fit_power_law(spectrum)
    spectrum[13] = 1e-3
    spectrum[12] = spectrum[13]  # three positive points, 11..13: a fit is made
    spectrum[13] = -1e-3
    with pytest.warns(FitRangeWarning, match=r"used 11\.\.13 \(3 components\)"):
        fit = fit_power_law(spectrum)
    assert int(fit["fit_stop"]) == 13
    assert np.isfinite(float(fit["alpha"]))
