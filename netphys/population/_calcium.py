"""Indicator model: turn unit activity into calcium-imaging-like F, neuropil and spks."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.signal
import xarray as xr

from netphys._validation import as_rng, check_choice, check_population, check_positive_float
from netphys.population._deconvolve import _oasis_ar1

__all__ = ["INDICATOR_TAU", "simulate_calcium"]

#: Decay time constants (s) that suite2p's docs recommend per GCaMP6 variant.
INDICATOR_TAU: dict[str, float] = {"GCaMP6f": 0.7, "GCaMP6m": 1.0, "GCaMP6s": 1.25}


def _resolve_tau(tau: Any, func: str) -> tuple[float, str]:
    if isinstance(tau, str):
        if tau not in INDICATOR_TAU:
            raise ValueError(
                f"{func}(): `tau` must be a time constant in seconds or one of "
                f"{', '.join(map(repr, INDICATOR_TAU))}; got {tau!r}."
            )
        return INDICATOR_TAU[tau], tau
    return check_positive_float(tau, func=func, name="tau"), "custom"


def _frame_rate(da: xr.DataArray, frame_rate: float | None, func: str) -> float:
    if frame_rate is not None:
        return check_positive_float(frame_rate, func=func, name="frame_rate")
    fr = da.attrs.get("frame_rate")
    if fr is not None and np.isfinite(float(fr)) and float(fr) > 0:
        return float(fr)
    if "frame_time" in da.coords and da.sizes[da.dims[0]] > 1:
        dt = float(np.median(np.diff(np.asarray(da["frame_time"].values, dtype=np.float64))))
        if np.isfinite(dt) and dt > 0:
            return 1.0 / dt
    raise ValueError(
        f"{func}(): cannot tell the frame rate: `activity` has no 'frame_rate' attr and no "
        "increasing 'frame_time' coord. Pass `frame_rate=` (Hz), e.g. `frame_rate=30.0`."
    )


def _simulate(
    x: np.ndarray,
    *,
    g: float,
    gain: float,
    baseline: float,
    shot_noise: float,
    neuropil: float,
    threshold: float,
    rng: np.random.Generator,
    deconvolution: str = "threshold",
) -> dict[str, np.ndarray]:
    """Kernel on a (time, unit) float64 array; returns F, neuropil, dff, spks, calcium."""
    r = np.maximum(x, 0.0)
    c = scipy.signal.lfilter([1.0], [1.0, -g], r, axis=0)  # impulse response g**k
    # one scale for all units (keeps their relative sizes): the RMS of the per-unit temporal
    # standard deviations (a std over all entries would also count the spread of unit means)
    scale = float(np.sqrt(np.mean(np.var(c, axis=0))))
    c_n = c / scale if scale > 0 else c
    f_cell = baseline * (1.0 + gain * c_n)
    pop = c_n.mean(axis=1, keepdims=True)
    f_neu = np.repeat(baseline * (1.0 + gain * pop), x.shape[1], axis=1)
    if shot_noise > 0:
        # a neuropil annulus averages ~10x more pixels than the soma: ~sqrt(10) less noise
        f_neu = f_neu + shot_noise * np.sqrt(baseline * f_neu) / np.sqrt(
            10.0
        ) * rng.standard_normal(f_neu.shape)
    f_raw = f_cell + neuropil * f_neu
    if shot_noise > 0:
        f_raw = f_raw + shot_noise * np.sqrt(baseline * np.maximum(f_raw, 0.0)) * (
            rng.standard_normal(f_raw.shape)
        )
    # a simple deconvolution, as a pipeline would do it (not OASIS): neuropil subtraction,
    # dF/F against an 8th-percentile baseline, inverse AR(1) filter, rectify, threshold
    fc = f_raw - neuropil * f_neu
    f0 = np.percentile(fc, 8, axis=0, keepdims=True)
    f0 = np.where(np.abs(f0) > 1e-12, f0, 1.0)
    dff = (fc - f0) / f0
    s = dff.copy()
    s[1:] -= g * dff[:-1]
    # noise level as OASIS estimates it (GetSn): the power of dF/F at high frequencies, where
    # the slow indicator passes little signal; the innovation s has noise sd sigma sqrt(1 + g^2)
    n_seg = min(256, dff.shape[0])
    freq, psd = scipy.signal.welch(dff, fs=1.0, nperseg=n_seg, axis=0)
    high = freq > 0.25
    sigma = (
        np.sqrt(np.mean(psd[high], axis=0, keepdims=True) / 2.0)
        if high.any()
        else (np.std(dff, axis=0, keepdims=True))
    )
    if deconvolution == "oasis":
        c_hat = np.column_stack([_oasis_ar1(dff[:, i], g, 0.0) for i in range(dff.shape[1])])
        s = c_hat.copy()
        s[1:] -= g * c_hat[:-1]
        s = np.where(s > threshold * sigma, np.maximum(s, 0.0), 0.0)
    else:
        s = np.where(s > threshold * sigma * np.sqrt(1.0 + g * g), s, 0.0)
        s = np.maximum(s, 0.0)
    return {"F": f_raw, "neuropil": f_neu, "dff": dff, "spks": s, "calcium": c_n}


def simulate_calcium(
    activity: Any,
    *,
    tau: float | str = 1.0,
    frame_rate: float | None = None,
    shot_noise: float = 0.05,
    neuropil: float = 0.7,
    gain: float = 0.5,
    baseline: float = 100.0,
    threshold: float = 2.0,
    rng: Any = 0,
    deconvolution: str = "threshold",
) -> xr.Dataset:
    """Image unit activity through a calcium indicator: F, neuropil and deconvolved spks.

    Parameters
    ----------
    activity : numpy.ndarray or xarray.DataArray with dims (sample, 'unit')
        Unit activity per frame (e.g. a layer of a model recording). Negative values are set
        to 0: calcium follows firing, which is non-negative.
    tau : float or {'GCaMP6f', 'GCaMP6m', 'GCaMP6s'}, default=1.0
        Indicator decay time constant (s); a name gives 0.7, 1.0 or 1.25 s.
    frame_rate : float, optional
        Frames per second. Default: the ``frame_rate`` attr, else from ``frame_time``.
    shot_noise : float, default=0.05
        Noise standard deviation as a fraction of the baseline at baseline brightness; it
        grows with ``sqrt(F)`` like photon shot noise. 0 gives noise-free traces.
    neuropil : float, default=0.7
        Neuropil contamination coefficient: ``F = F_cell + neuropil * Fneu`` (suite2p's
        default ``neucoeff`` is 0.7, so ``F - 0.7 * Fneu`` undoes it). 0 disables it.
    gain : float, default=0.5
        dF/F per (typical) standard deviation of the calcium signal.
    baseline : float, default=100.0
        Resting fluorescence (a.u., photons per frame).
    threshold : float, default=2.0
        Deconvolved values below ``threshold`` noise standard deviations are set to 0.
    rng : int, numpy.random.Generator or None, default=0
        Randomness for the noise.
    deconvolution : {"threshold", "oasis"}, default="threshold"
        How ``spks`` is recovered from dF/F: "threshold" inverts the AR(1) filter and
        thresholds; "oasis" solves the non-negative AR(1) problem exactly (see
        :func:`deconvolve`, as suite2p does) and then zeroes events below ``threshold`` noise
        standard deviations.

    Returns
    -------
    xarray.Dataset
        Dims (time, unit) like a reader's output: ``F`` (raw ROI fluorescence), ``neuropil``
        (neuropil trace), ``dff`` (neuropil-corrected dF/F), ``spks`` (deconvolved,
        non-negative), ``calcium`` (noise-free indicator signal, normalised) and ``activity``
        (= ``spks``, the main signal as in the readers), with the input's coords; attrs
        ``frame_rate``, ``tau``, ``indicator``, ``shot_noise``, ``neuropil``, ``gain``,
        ``baseline``, ``format='simulated-calcium'``, ``activity_variable='spks'``.

    Notes
    -----
    With ``dt = 1 / frame_rate`` and ``g = exp(-dt / tau)`` the calcium is the AR(1) filter
    ``c_t = g c_{t-1} + max(a_t, 0)`` (impulse response ``exp(-t / tau)``), divided by one
    scale for all units (the RMS over units of each unit's temporal standard deviation), so
    that units keep their relative sizes. ``F_cell = baseline (1 + gain
    c)``; the neuropil is the population-mean calcium, ``Fneu = baseline (1 + gain mean_i c_i)``.
    Deconvolution, as a pipeline would do it (a simple stand-in for OASIS): ``Fc = F -
    neuropil Fneu``; ``dF/F`` against each unit's 8th percentile; ``s_t = dff_t - g dff_{t-1}``,
    zeroed below ``threshold`` noise standard deviations, the noise estimated like OASIS's
    ``GetSn`` from the dF/F power spectrum above a quarter of the frame rate.

    Examples
    --------
    >>> import numpy as np
    >>> act = np.random.default_rng(0).exponential(size=(200, 5))
    >>> ds = simulate_calcium(act, tau="GCaMP6f", frame_rate=30.0, rng=0)
    >>> ds.F.shape, ds.attrs["tau"]
    ((200, 5), 0.7)
    """
    func = "simulate_calcium"
    da = check_population(activity, func=func, min_samples=2)
    tau_s, indicator = _resolve_tau(tau, func)
    fs = _frame_rate(da, frame_rate, func)
    shot_noise = check_positive_float(shot_noise, func=func, name="shot_noise", allow_zero=True)
    neuropil = check_positive_float(neuropil, func=func, name="neuropil", allow_zero=True)
    gain = check_positive_float(gain, func=func, name="gain")
    baseline = check_positive_float(baseline, func=func, name="baseline")
    threshold = check_positive_float(threshold, func=func, name="threshold", allow_zero=True)
    gen = as_rng(rng, func=func)
    check_choice(deconvolution, ("threshold", "oasis"), func=func, name="deconvolution")
    x = np.asarray(da.values, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(
            f"{func}(): `activity` holds {int((~np.isfinite(x)).sum())} NaN or infinite values. "
            "Drop or fill them first, e.g. `activity.fillna(0)`."
        )
    g = float(np.exp(-1.0 / (fs * tau_s)))
    out = _simulate(
        x,
        g=g,
        gain=gain,
        baseline=baseline,
        shot_noise=shot_noise,
        neuropil=neuropil,
        threshold=threshold,
        rng=gen,
        deconvolution=deconvolution,
    )
    dims = da.dims
    long = {
        "F": "ROI fluorescence",
        "neuropil": "neuropil fluorescence",
        "dff": "dF/F",
        "spks": "deconvolved activity",
        "calcium": "noise-free calcium (normalised)",
    }
    data_vars = {
        k: (dims, v.astype(np.float32), {"long_name": long[k], "units": "a.u."})
        for k, v in out.items()
    }
    data_vars["activity"] = (
        dims,
        out["spks"].astype(np.float32),
        {"long_name": "main activity signal (= spks)", "units": "a.u."},
    )
    coords = {k: v for k, v in da.coords.items() if set(v.dims) <= set(dims)}
    ds = xr.Dataset(data_vars, coords=coords)
    if dims[0] != "time":
        ds = ds.rename({dims[0]: "time"})
    if "frame_time" not in ds.coords:
        ds = ds.assign_coords(frame_time=("time", np.arange(x.shape[0]) / fs, {"units": "s"}))
    ds.attrs = {
        "frame_rate": fs,
        "tau": tau_s,
        "indicator": indicator,
        "shot_noise": shot_noise,
        "neuropil": neuropil,
        "gain": gain,
        "baseline": baseline,
        "deconvolution": deconvolution,
        "format": "simulated-calcium",
        "activity_variable": "spks",
    }
    return ds
