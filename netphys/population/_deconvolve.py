"""Non-negative AR(1) deconvolution of calcium traces (OASIS; Friedrich et al. 2017).

Written from the paper's description of the pool-adjacent-violators algorithm: the trace is
explained as calcium ``c_t = g c_{t-1} + s_t`` with events ``s_t >= 0``; the solution is made
of pools of consecutive frames in which ``c`` decays freely, merged while an event would be
negative.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import check_population, check_positive_float

__all__ = ["deconvolve"]


def _oasis_ar1(y: np.ndarray, g: float, penalty: float) -> np.ndarray:
    """Calcium ``c`` minimising ``½||c - y||² + penalty Σ s`` with ``s = c - g c_prev >= 0``."""
    n = len(y)
    y = y.astype(np.float64, copy=True)
    # Σ_t s_t = (1 - g) Σ_{t<T} c_t + c_T: the penalty is a shift of the data
    y[:-1] -= penalty * (1.0 - g)
    y[-1] -= penalty
    # pools: value at start v, weight w (Σ g^2i), start t, length l
    v = np.empty(n)
    w = np.empty(n)
    start = np.empty(n, dtype=np.int64)
    length = np.empty(n, dtype=np.int64)
    k = -1
    for t in range(n):
        k += 1
        v[k], w[k], start[k], length[k] = y[t], 1.0, t, 1
        while k > 0 and v[k] < g ** length[k - 1] * v[k - 1]:
            gl = g ** length[k - 1]
            new_w = w[k - 1] + gl * gl * w[k]
            v[k - 1] = (w[k - 1] * v[k - 1] + gl * w[k] * v[k]) / new_w
            w[k - 1] = new_w
            length[k - 1] += length[k]
            k -= 1
    c = np.empty(n)
    for j in range(k + 1):
        c[start[j] : start[j] + length[j]] = max(v[j], 0.0) * g ** np.arange(length[j])
    return c


def deconvolve(
    traces: Any,
    *,
    g: float | None = None,
    tau: float | None = None,
    frame_rate: float | None = None,
    penalty: float = 0.0,
    s_min: float = 0.0,
) -> xr.Dataset:
    """Deconvolve calcium traces into non-negative events with an AR(1) model (OASIS).

    Solves, per unit, ``min_c ½ Σ_t (c_t - y_t)² + penalty Σ_t s_t`` subject to
    ``s_t = c_t - g c_{t-1} >= 0`` (``s_1 = c_1``), exactly, by pooling adjacent violators.

    Parameters
    ----------
    traces : numpy.ndarray or xarray.DataArray with dims (time, 'unit')
        Fluorescence traces, e.g. dF/F (baseline removed).
    g : float, optional
        AR(1) coefficient in (0, 1). Default: ``exp(-1 / (tau * frame_rate))``.
    tau : float, optional
        Indicator decay time (s), used when ``g`` is not given.
    frame_rate : float, optional
        Frames per second, used with ``tau`` (default: the ``frame_rate`` attr of ``traces``).
    penalty : float, default=0.0
        Sparsity penalty on the events (L1), in the units of the traces.
    s_min : float, default=0.0
        Events smaller than this are set to 0 afterwards.

    Returns
    -------
    xarray.Dataset
        ``spks`` (events ``s``) and ``calcium`` (denoised ``c``), dims (time, 'unit'), with
        the input's coords; attrs ``g``, ``penalty``, ``s_min``.

    Raises
    ------
    ValueError
        Without ``g`` or ``tau``, with ``g`` outside (0, 1), or on NaN/inf.

    References
    ----------
    Friedrich, Zhou & Paninski (2017) Fast online deconvolution of calcium imaging data.
    PLoS Comput Biol 13(3): e1005423. doi:10.1371/journal.pcbi.1005423

    Examples
    --------
    >>> import numpy as np
    >>> s = np.zeros(50); s[[5, 30]] = 1.0
    >>> c = np.zeros(50); c[0] = s[0]
    >>> for t in range(1, 50): c[t] = 0.9 * c[t - 1] + s[t]
    >>> out = deconvolve(c[:, None], g=0.9)
    >>> np.flatnonzero(out["spks"].values[:, 0] > 1e-6).tolist()
    [5, 30]
    """
    func = "deconvolve"
    da = check_population(traces, func=func, name="traces", min_samples=2)
    if g is None:
        if tau is None:
            raise ValueError(
                f"{func}(): give the AR(1) coefficient `g` or the indicator decay `tau` (s) with "
                "a frame rate, e.g. `deconvolve(dff, tau=1.0, frame_rate=30.0)`."
            )
        tau = check_positive_float(tau, func=func, name="tau")
        fs = frame_rate if frame_rate is not None else da.attrs.get("frame_rate")
        if fs is None:
            raise ValueError(
                f"{func}(): `tau` needs a frame rate: pass `frame_rate=` (Hz) or give `traces` a "
                "'frame_rate' attr."
            )
        fs = check_positive_float(fs, func=func, name="frame_rate")
        g = float(np.exp(-1.0 / (tau * fs)))
    g = check_positive_float(g, func=func, name="g")
    if not g < 1:
        raise ValueError(f"{func}(): `g` must be in (0, 1); got {g}. Use g = exp(-dt / tau).")
    penalty = check_positive_float(penalty, func=func, name="penalty", allow_zero=True)
    s_min = check_positive_float(s_min, func=func, name="s_min", allow_zero=True)
    y = np.asarray(da.values, dtype=np.float64)
    if not np.isfinite(y).all():
        raise ValueError(f"{func}(): `traces` contains NaN or inf; fill or drop them first.")
    c = np.column_stack([_oasis_ar1(y[:, i], g, penalty) for i in range(y.shape[1])])
    s = c.copy()
    s[1:] -= g * c[:-1]
    s = np.maximum(s, 0.0)  # round-off
    if s_min > 0:
        s[s < s_min] = 0.0
    coords = {k: v for k, v in da.coords.items() if set(v.dims) <= set(da.dims)}
    return xr.Dataset(
        {
            "spks": (da.dims, s, {"long_name": "deconvolved events"}),
            "calcium": (da.dims, c, {"long_name": "denoised calcium"}),
        },
        coords=coords,
        attrs={"method": "deconvolve", "g": g, "penalty": penalty, "s_min": s_min},
    )
