"""simulate_calcium: planted indicator time constants, deconvolution, contract."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from netphys.population._calcium import INDICATOR_TAU, simulate_calcium


@pytest.mark.parametrize("tau", [0.3, 1.0, "GCaMP6f", "GCaMP6s"])
def test_impulse_response_recovers_tau(tau):
    fs = 30.0
    act = np.zeros((400, 3))
    act[20, 0], act[100, 1], act[50, 2] = 1.0, 5.0, 0.2
    ds = simulate_calcium(act, tau=tau, frame_rate=fs, shot_noise=0.0, neuropil=0.0)
    truth = INDICATOR_TAU.get(tau, tau) if isinstance(tau, str) else tau
    for unit, t0 in ((0, 20), (1, 100), (2, 50)):
        f = ds.F.values[:, unit].astype(np.float64)
        decay = f[t0 : t0 + 60] - f[0]
        slope = np.polyfit(np.arange(60) / fs, np.log(decay), 1)[0]
        # float32 output: the log-slope is exact to ~1e-4
        assert -1.0 / slope == pytest.approx(truth, rel=1e-3)
    assert ds.attrs["tau"] == truth


def test_autocorrelation_recovers_tau(rng):
    fs, tau = 20.0, 1.25
    act = rng.exponential(size=(40000, 2)) * (rng.random((40000, 2)) < 0.2)  # white input
    ds = simulate_calcium(act, tau=tau, frame_rate=fs, shot_noise=0.0, rng=rng)
    c = ds.calcium.values[:, 0].astype(np.float64)
    c -= c.mean()
    lags = np.arange(1, 21)
    acf = np.array([np.dot(c[k:], c[:-k]) / np.dot(c, c) for k in lags])
    slope = np.polyfit(lags / fs, np.log(acf), 1)[0]
    # AR(1) with white input: acf(k) = exp(-k / (fs tau)); 40000 frames give ~5% precision
    assert -1.0 / slope == pytest.approx(tau, rel=0.1)


def test_deconvolution_recovers_events(rng):
    n_t, n_u = 3000, 4
    act = rng.exponential(size=(n_t, n_u)) * (rng.random((n_t, n_u)) < 0.05)
    ds = simulate_calcium(act, tau="GCaMP6m", frame_rate=10.0, shot_noise=0.01, rng=rng)
    for i in range(n_u):
        r = np.corrcoef(ds.spks.values[:, i], act[:, i])[0, 1]
        assert r > 0.9  # measured ~0.98 at 1% shot noise
    assert (ds.spks.values >= 0).all()
    assert float((ds.spks == 0).mean()) > 0.8  # events are sparse, like OASIS output
    np.testing.assert_array_equal(ds.activity, ds.spks)


def test_neuropil_and_noise_model(rng):
    act = rng.exponential(size=(2000, 30)) * (rng.random((2000, 30)) < 0.1)
    clean = simulate_calcium(act, frame_rate=10.0, shot_noise=0.0, neuropil=0.7)
    # F - 0.7 Fneu gives back the cell's own fluorescence exactly without noise
    fcell = clean.F.values - 0.7 * clean.neuropil.values
    np.testing.assert_allclose(fcell, 100 * (1 + 0.5 * clean.calcium.values), rtol=1e-5)
    # the neuropil follows the population mean
    pop = clean.calcium.values.mean(axis=1)
    assert np.corrcoef(clean.neuropil.values[:, 0], pop)[0, 1] > 0.999
    noisy = simulate_calcium(act, frame_rate=10.0, shot_noise=0.05, neuropil=0.0, rng=0)
    quiet = noisy.F.values[clean.calcium.values < 1e-6] - 100.0
    # shot noise at baseline: std = shot_noise * baseline
    assert np.std(quiet) == pytest.approx(5.0, rel=0.1)


def test_contract(rng):
    act = xr.DataArray(
        rng.standard_normal((50, 4)),
        dims=("time", "unit"),
        coords={
            "frame_time": ("time", np.arange(50) / 25.0),
            "pos_x": ("unit", np.arange(4.0)),
            "layer": ("unit", list("aabb")),
        },
    )
    before = act.copy(deep=True)
    ds = simulate_calcium(act, rng=3)
    xr.testing.assert_identical(act, before)  # input untouched
    assert ds.attrs["frame_rate"] == pytest.approx(25.0)  # from frame_time
    assert set(ds.data_vars) == {"F", "neuropil", "dff", "spks", "calcium", "activity"}
    assert ds.F.dims == ("time", "unit")
    np.testing.assert_array_equal(ds.pos_x, act.pos_x)
    xr.testing.assert_identical(ds, simulate_calcium(act, rng=3))  # same rng, same result
    stim = xr.DataArray(rng.random((20, 3)), dims=("stimulus", "unit"))
    assert simulate_calcium(stim, frame_rate=5.0).F.dims == ("time", "unit")


def test_errors(rng):
    x = rng.random((20, 3))
    with pytest.raises(
        ValueError, match=r"simulate_calcium\(\): cannot tell the frame rate.*frame_rate="
    ):
        simulate_calcium(x)
    with pytest.raises(ValueError, match=r"`tau` must be .*'GCaMP6f'.*got 'GCaMP7'"):
        simulate_calcium(x, tau="GCaMP7", frame_rate=10.0)
    with pytest.raises(ValueError, match=r"`tau` must be finite and > 0"):
        simulate_calcium(x, tau=0.0, frame_rate=10.0)
    with pytest.raises(ValueError, match="`shot_noise`"):
        simulate_calcium(x, frame_rate=10.0, shot_noise=-1.0)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*fillna"):
        simulate_calcium(x, frame_rate=10.0)
