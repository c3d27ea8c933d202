"""Train/test splits of SVCA: time blocks and the two unit sets."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import (
    as_rng,
    check_choice,
    check_int,
    check_population,
    check_positive_float,
)

__all__ = ["split_time_blocks", "split_units"]

_SPLITS = ("auto", "checkerboard", "strips", "random")


def split_time_blocks(
    n_samples: int,
    *,
    block_length: int = 60,
    train_fraction: float = 0.5,
    rng: Any = 0,
    func: str = "split_time_blocks",
) -> np.ndarray:
    """Assign whole blocks of consecutive samples to train (True) or test (False).

    Time is cut into consecutive blocks of ``block_length`` samples (the last block may be
    shorter) and ``ceil(train_fraction * n_blocks)`` blocks, drawn at random, are train.

    Parameters
    ----------
    n_samples : int
        Number of samples.
    block_length : int, default=60
        Samples per block (60 bins of 1.2 s in the paper; 1 for i.i.d. frames such as images).
    train_fraction : float, default=0.5
        Fraction of blocks used for training, in (0, 1).
    rng : int, numpy.random.Generator or None, default=0
        Randomness for the block draw.
    func : str, default="split_time_blocks"
        Name of the calling function, used in error messages.

    Returns
    -------
    numpy.ndarray of bool, shape (n_samples,)
        True for train samples.

    Raises
    ------
    ValueError
        If fewer than two blocks fit, or the split leaves no train or no test block.

    Examples
    --------
    >>> mask = split_time_blocks(600, block_length=60, train_fraction=0.5, rng=1)
    >>> int(mask.sum())
    300
    """
    block_length = check_int(block_length, func=func, name="block_length", minimum=1)
    train_fraction = check_positive_float(train_fraction, func=func, name="train_fraction")
    if not train_fraction < 1:
        raise ValueError(
            f"{func}(): `train_fraction` must be in (0, 1); got {train_fraction}. Use e.g. 0.5."
        )
    n_blocks = math.ceil(n_samples / block_length)
    n_train = math.ceil(train_fraction * n_blocks)
    if n_blocks < 2 or n_train >= n_blocks:
        raise ValueError(
            f"{func}(): {n_samples} samples in blocks of `block_length`={block_length} give "
            f"{n_blocks} block(s), {n_train} for training, leaving no test block. Use a shorter "
            f"`block_length` (at most {max(1, n_samples // 4)} here) or a smaller `train_fraction`."
        )
    gen = as_rng(rng, func=func)
    train_blocks = gen.permutation(n_blocks)[:n_train]
    is_train_block = np.zeros(n_blocks, dtype=bool)
    is_train_block[train_blocks] = True
    return np.repeat(is_train_block, block_length)[:n_samples]


def _unit_coord(da: xr.DataArray, name: str) -> np.ndarray | None:
    if name in da.coords and da.coords[name].dims == ("unit",):
        return np.asarray(da.coords[name].values, dtype=np.float64)
    return None


def split_units(
    activity: Any,
    *,
    split: str = "auto",
    n_strips: int = 16,
    strip_gap: float = 0.0,
    n_squares: int = 8,
    rng: Any = 0,
    func: str = "split_units",
) -> tuple[np.ndarray, str]:
    """Split units into two disjoint sets, spatially when positions exist.

    Parameters
    ----------
    activity : numpy.ndarray or xarray.DataArray with dims (sample, 'unit')
        Population; only its unit coords ``pos_x``/``pos_y`` and size are used.
    split : {"auto", "checkerboard", "strips", "random"}, default="auto"
        "strips": interleaved strips along ``pos_y`` (odd strips set 1, even strips set 2), as in
        the 2-photon analyses; "checkerboard": squares over (``pos_x``, ``pos_y``), alternating
        sets; "random": a random half split. "auto" uses the checkerboard when both positions
        exist, strips when only ``pos_y`` does, random otherwise, and falls back to random when
        the spatial split leaves less than a quarter of the units in one set.
    n_strips : int, default=16
        Number of strips for "strips".
    strip_gap : float, default=0.0
        Fraction of each strip (at its far end) left unused, a no-man's-land between sets.
    n_squares : int, default=8
        Squares per axis for "checkerboard".
    rng : int, numpy.random.Generator or None, default=0
        Randomness for "random".
    func : str, default="split_units"
        Name of the calling function, used in error messages.

    Returns
    -------
    unit_set : numpy.ndarray of int8, shape (n_units,)
        1 or 2 for the two sets, 0 for units left unused (strip gaps).
    method : str
        The split used (resolves "auto").

    Raises
    ------
    ValueError
        If the split needs positions that ``activity`` lacks, or leaves a set empty.

    Examples
    --------
    >>> import numpy as np
    >>> sets, method = split_units(np.zeros((10, 6)), rng=0)
    >>> method, int((sets == 1).sum()), int((sets == 2).sum())
    ('random', 3, 3)
    """
    check_choice(split, _SPLITS, func=func, name="split")
    da = check_population(activity, func=func, min_samples=1, min_units=2)
    n = da.sizes["unit"]
    px, py = _unit_coord(da, "pos_x"), _unit_coord(da, "pos_y")
    method = split
    if split == "auto":
        method = "checkerboard" if px is not None and py is not None else "random"
        if method == "random" and py is not None:
            method = "strips"
    sets = np.zeros(n, dtype=np.int8)
    if method in ("strips", "checkerboard"):
        needed = ["pos_y"] if method == "strips" else ["pos_x", "pos_y"]
        missing = [c for c, v in zip(["pos_x", "pos_y"], [px, py], strict=True) if v is None]
        missing = [c for c in missing if c in needed]
        if missing:
            raise ValueError(
                f"{func}(): `split`={split!r} needs unit coords {needed} on `activity`; "
                f"missing {missing}. Add them with `.assign_coords(pos_y=('unit', y))` or use "
                "split='random'."
            )

        def bins(v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            span = np.ptp(v)
            scaled = (v - v.min()) / span * k if span > 0 else np.zeros_like(v)
            idx = np.minimum(np.floor(scaled), k - 1)
            return idx.astype(np.int64), scaled - idx

        if method == "strips":
            if not 0 <= strip_gap < 1:
                raise ValueError(
                    f"{func}(): `strip_gap` must be in [0, 1) (a fraction of the strip height); "
                    f"got {strip_gap}. Use e.g. strip_gap=0.3."
                )
            n_strips = check_int(n_strips, func=func, name="n_strips", minimum=2)
            assert py is not None
            idx, frac = bins(py, n_strips)
            sets[:] = np.where(idx % 2 == 0, 1, 2)
            if strip_gap > 0:
                sets[frac >= 1 - strip_gap] = 0
        else:
            n_squares = check_int(n_squares, func=func, name="n_squares", minimum=2)
            assert px is not None
            assert py is not None
            ix, _ = bins(px, n_squares)
            iy, _ = bins(py, n_squares)
            sets[:] = np.where((ix + iy) % 2 == 0, 1, 2)
        if split == "auto" and min((sets == 1).sum(), (sets == 2).sum()) < n / 4:
            method, sets[:] = "random", 0
    if method == "random":
        # keyed by unit id, not by position: reordering the units gives each unit the same set
        ids = da["unit"].values if "unit" in da.coords else np.arange(n)
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(ids, kind="stable")] = np.arange(n)
        perm = as_rng(rng, func=func).permutation(n)
        first = np.zeros(n, dtype=bool)
        first[perm[: n // 2]] = True
        sets[:] = np.where(first[rank], 1, 2)
    if (sets == 1).sum() == 0 or (sets == 2).sum() == 0:
        raise ValueError(
            f"{func}(): the {method!r} split left a unit set empty ({int((sets == 1).sum())} and "
            f"{int((sets == 2).sum())} units). Use split='random' or more units."
        )
    return sets, method
