"""The papers' settings (``convention="paper"``), as preprocessing helpers.

netphys's defaults depart from the reference code in a few places, each for a stated reason
(see the "Differences from the papers" section of each analysis). ``convention="paper"``
reproduces the settings of Stringer, Pachitariu et al. (2019, Science and Nature) exactly:

- SVCA: 1.2 s bins; 16 strips along ``pos_y`` of height ``floor(max(y) / 16)`` counted from
  pixel 1, the last 10 px of each strip dropped, odd strips set 1 and even strips set 2; each
  unit centred on its mean over the whole recording.
- cvPCA: each unit centred over all presentations pooled, the spectrum from the uncentred
  cross-repeat Gram over all stimuli.
- power law: ``log|ss|`` over ``11 : min(500, n - 2)``, no truncation at the first value <= 0.
- RRR (``svca_predict``): activity lagged one frame after behaviour, 1.2 s bins, behaviour
  z-scored over the whole recording and multiplied by 10, fixed ``lambda = 0.15``, no intercept.
- shift null: 1.2 s bins, shifts in ``[1000, T - 1001]``, histogram ``-0.3 : 0.001 : 0.75``,
  all units.

Also home of :func:`warn_identical_repeats` (a noise-free model's halves are identical).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import check_choice
from netphys.errors import NetphysWarning

__all__ = [
    "CONVENTIONS",
    "PAPER",
    "bin_frames",
    "check_convention",
    "paper_fit_range",
    "paper_strip_split",
    "warn_identical_repeats",
]

CONVENTIONS = ("netphys", "paper")

#: The papers' fixed settings.
PAPER: dict[str, Any] = {
    "bin_seconds": 1.2,
    "n_strips": 16,
    "strip_gap_px": 10,
    "block_length": 60,
    "train_fraction": 0.5,
    "seed": 1,
    "fit_start": 11,
    "fit_stop": 500,
    "rrr_lambda": 0.15,
    "rrr_scale": 10.0,
    "rrr_lag": 1,
    "rrr_ranks": (1, 2, 3, 4, 8, 16, 32, 64, 128),
    "min_shift": 1000,
    "null_bins": (-0.3, 0.75, 0.001),
}


def check_convention(convention: Any, *, func: str) -> str:
    """Check ``convention`` is "netphys" (default results) or "paper"."""
    return check_choice(convention, CONVENTIONS, func=func, name="convention")


def frame_rate_of(da: xr.DataArray) -> float | None:
    """Frames per second from a ``frame_rate`` attr or an increasing ``frame_time`` coord."""
    fr = da.attrs.get("frame_rate")
    if fr is not None and np.isfinite(float(fr)) and float(fr) > 0:
        return float(fr)
    if "frame_time" in da.coords and da.ndim >= 1 and da.sizes[da.dims[0]] > 1:
        dt = float(np.median(np.diff(np.asarray(da["frame_time"].values, dtype=np.float64))))
        if np.isfinite(dt) and dt > 0:
            return 1.0 / dt
    return None


def bin_frames(
    da: xr.DataArray, *, bin_seconds: float = 1.2, frame_rate: float | None = None
) -> tuple[xr.DataArray, int]:
    """Average non-overlapping groups of ``round(bin_seconds * frame_rate)`` frames.

    The trailing incomplete group is dropped, as in the reference code. Without a known frame
    rate (no ``frame_rate`` attr or ``frame_time`` coord) the samples are taken as already
    binned and returned unchanged (factor 1).

    Examples
    --------
    >>> da = xr.DataArray(np.arange(10.0)[:, None], dims=("time", "unit"),
    ...                   attrs={"frame_rate": 2.5})
    >>> binned, k = bin_frames(da)
    >>> k, binned.values.ravel().tolist()
    (3, [1.0, 4.0, 7.0])
    """
    fs = frame_rate if frame_rate is not None else frame_rate_of(da)
    if fs is None:
        return da, 1
    k = max(1, round(bin_seconds * fs))
    if k == 1:
        return da, 1
    dim = da.dims[0]
    n = (da.sizes[dim] // k) * k
    head = da.isel({dim: slice(0, n)})
    keep = [c for c in head.coords if dim not in head[c].dims]
    binned = head.coarsen({dim: k}, boundary="trim").mean()
    binned = binned.drop_vars([c for c in binned.coords if c not in keep and c != "unit"])
    binned.attrs = dict(da.attrs) | {"frame_rate": fs / k}
    return binned, k


def paper_strip_split(pos_y: np.ndarray, *, n_strips: int = 16, gap: float = 10) -> np.ndarray:
    """Assign units to the papers' strip split: 1 (odd strips), 2 (even strips), 0 (gap).

    ``y = round(pos_y)`` in pixels (1-based as in MATLAB), strip height
    ``nby = floor(max(y) / n_strips)``; strip ``k`` (1-based) keeps rows
    ``(k-1)*nby + 1 .. (k-1)*nby + nby - gap``; units beyond ``n_strips * nby`` or in a gap are 0.

    Examples
    --------
    >>> paper_strip_split(np.array([1, 5, 20, 25, 40, 45]), n_strips=2, gap=10).tolist()
    [1, 1, 0, 2, 0, 0]
    """
    y = np.round(np.asarray(pos_y, dtype=np.float64)).astype(np.int64)
    nby = math.floor(y.max() / n_strips) if y.size else 0
    sets = np.zeros(y.shape, dtype=np.int8)
    if nby < 1:
        return sets
    strip = (y - 1) // nby  # 0-based strip index
    row = (y - 1) % nby + 1  # 1-based row within the strip
    ok = (y >= 1) & (strip < n_strips) & (row <= nby - gap)
    sets[ok & (strip % 2 == 0)] = 1
    sets[ok & (strip % 2 == 1)] = 2
    return sets


def paper_fit_range(n: int) -> tuple[int, int]:
    """Return the reference fit range ``11 : min(500, n - 2)`` (``statsShuffledPCA.m``)."""
    return PAPER["fit_start"], min(PAPER["fit_stop"], n - 2)


def paper_null_bins() -> np.ndarray:
    """Histogram edges ``-0.3 : 0.001 : 0.75`` of ``pcAnalysis.m``."""
    lo, hi, step = PAPER["null_bins"]
    return np.round(np.arange(lo, hi + step / 2, step), 6)


def warn_identical_repeats(da: Any, *, func: str, max_checked: int = 32) -> bool:
    """Warn when frames of the same stimulus are identical across repeats (a noise-free model).

    Looks at up to ``max_checked`` stimuli shown in two or more repeats (needs ``stimulus`` and
    ``repeat`` sample coords); returns True when it warned.
    """
    if not isinstance(da, xr.DataArray) or "stimulus" not in da.coords or "repeat" not in da.coords:
        return False
    dim = da.dims[0]
    stim = np.asarray(da["stimulus"].values)
    rep = np.asarray(da["repeat"].values)
    if stim.ndim != 1 or len(np.unique(rep[rep >= 0])) < 2:
        return False
    pairs = []
    r0, r1 = np.unique(rep[rep >= 0])[:2]
    first0 = {s: i for i, s in reversed(list(enumerate(stim))) if rep[i] == r0 and s >= 0}
    for i, s in enumerate(stim):
        if rep[i] == r1 and s in first0:
            pairs.append((first0[s], i))
            if len(pairs) >= max_checked:
                break
    if not pairs:
        return False
    a = np.asarray(da.isel({dim: [p[0] for p in pairs]}).values)
    b = np.asarray(da.isel({dim: [p[1] for p in pairs]}).values)
    if np.array_equal(a, b):
        _warn_identical(func, stacklevel=4)
        return True
    return False


def _warn_identical(func: str, *, stacklevel: int = 3) -> None:
    warnings.warn(
        f"{func}(): the two repeats are identical (a noise-free model?), so every variance is "
        "'reliable' by construction. Record with `variability=` (e.g. "
        "netphys.variability.Poisson) or pass the activity through `simulate_calcium`.",
        NetphysWarning,
        stacklevel=stacklevel,
    )


def warn_identical_grams(g11: np.ndarray, g21: np.ndarray, g22: np.ndarray, *, func: str) -> bool:
    """Warn when the repeats' Grams coincide (R1 == R2 up to round-off)."""
    scale = max(float(np.abs(g11).max(initial=0.0)), 1e-300)
    if (
        np.abs(g21 - g11).max(initial=0.0) <= 1e-12 * scale
        and np.abs(g22 - g11).max(initial=0.0) <= 1e-12 * scale
    ):
        _warn_identical(func, stacklevel=4)
        return True
    return False
