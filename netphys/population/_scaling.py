"""Reliable dimensionality versus the number of units sampled (Manley et al. 2024 scaling).

SVCA is run on growing samples of the population, either random subsets of units or, for units
with positions, growing fields of view around the centre, and each run reports the fraction
of reliable variance and the number of significant SVCs: the leading SVCs whose reliable variance
exceeds the largest reliable variance of any SVC in a null where every unit is circularly
shifted in time by its own random offset (destroying the shared variance while keeping each
unit's autocorrelation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import as_rng, check_choice, check_finite, check_int, check_population
from netphys.population._powerlaw import short_fits_caught
from netphys.population._svca import svca

__all__ = ["scaling_analysis"]

_SAMPLINGS = ("auto", "random", "field_of_view")


def _default_sizes(n_units: int) -> list[int]:
    sizes = np.unique(np.geomspace(min(64, n_units), n_units, num=6).astype(int))
    return [int(s) for s in sizes]


def _field_order(da: xr.DataArray) -> np.ndarray:
    """Units ordered by their distance (Chebyshev, i.e. square fields) from the centre."""
    x = np.asarray(da["pos_x"].values, dtype=float)
    y = np.asarray(da["pos_y"].values, dtype=float)
    cx, cy = (x.min() + x.max()) / 2, (y.min() + y.max()) / 2
    return np.argsort(np.maximum(np.abs(x - cx), np.abs(y - cy)), kind="stable")


def _shifted(x: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    n = x.shape[0]
    shifts = gen.integers(n // 4, n - n // 4 + 1, size=x.shape[1])
    rows = (np.arange(n)[:, None] - shifts[None, :]) % n
    return np.take_along_axis(x, rows, axis=0)


def _one_size(
    x: np.ndarray, k: int, n_null: int, gen: np.random.Generator, svca_kw: dict[str, Any]
) -> tuple[float, int, np.ndarray]:
    """Reliable fraction, number of significant SVCs and reliable spectrum of one sample."""
    with short_fits_caught():  # the exponents are not used here
        res = svca(x, n_components=k, rng=gen, **svca_kw)
        rel, tot = res["reliable_variance"].values, res["total_variance"].values
        threshold = 0.0
        for _ in range(n_null):
            nres = svca(_shifted(x, gen), n_components=len(rel), rng=gen, **svca_kw)
            threshold = max(threshold, float(nres["reliable_variance"].max()))
    above = rel > threshold
    n_sig = int(np.argmin(above)) if not above.all() else len(rel)
    return float(rel.sum() / tot.sum()), n_sig, rel


def scaling_analysis(
    activity: Any,
    *,
    sizes: Sequence[int] | None = None,
    sampling: str = "auto",
    n_repeats: int = 3,
    n_components: int = 128,
    n_null: int = 1,
    block_length: int = 60,
    rng: Any = 0,
    **svca_options: Any,
) -> xr.Dataset:
    """Run SVCA on growing samples of units: reliable variance and dimensions versus N.

    Parameters
    ----------
    activity : numpy.ndarray or xarray.DataArray with dims (sample, 'unit')
        Population activity (each sample of units is loaded into memory).
    sizes : sequence of int or None, default=None
        Numbers of units to sample, each at least 8; None means six sizes spaced
        geometrically from 64 (or all units, if fewer) to all units.
    sampling : {"auto", "random", "field_of_view"}, default="auto"
        "random": random subsets (a fresh draw per repeat); "field_of_view": the N units
        nearest the centre of the field (square fields over ``pos_x``/``pos_y``; repeats
        differ only in the SVCA splits); "auto" uses fields of view when both positions exist.
    n_repeats : int, default=3
        Samples (and SVCA splits) per size.
    n_components : int, default=128
        SVCs per run (fewer where the sample does not allow them).
    n_null : int, default=1
        Shifted-null SVCA runs per sample for the significance threshold; 0 skips the null
        (``n_significant`` is then the number of SVCs with positive reliable variance).
    block_length : int, default=60
        SVCA train/test block length (1 for i.i.d. frames).
    rng : int, numpy.random.Generator or None, default=0
        Randomness of the unit samples, splits and shifts.
    **svca_options
        Further options of :func:`svca` (e.g. ``split="random"``).

    Returns
    -------
    xarray.Dataset
        Along (n_units, repeat): ``reliable_fraction`` (reliable over total variance, summed
        over the SVCs) and ``n_significant``; along (n_units, repeat, component):
        ``reliable_variance`` (NaN past the SVCs computed); their means over repeats
        ``reliable_fraction_mean`` and ``n_significant_mean`` along ``n_units``.

    Raises
    ------
    ValueError
        On NaN/inf, sizes outside [8, n_units], or "field_of_view" without unit positions.

    References
    ----------
    Manley, Lu, Barber, Kim, Heintz, Vaziri (2024) Simultaneous, cortex-wide dynamics of up to
    1 million neurons reveal unbounded scaling of dimensionality with neuron number. Neuron
    112, 1694-1709. doi:10.1016/j.neuron.2024.02.011

    Examples
    --------
    >>> from netphys.population import simulate_population
    >>> sim = simulate_population(200, 600, alpha=1.0, snr=5.0, rng=0)
    >>> res = scaling_analysis(sim["activity"], sizes=[50, 200], n_repeats=1,
    ...                        n_components=20, block_length=20)
    >>> bool(res["n_significant_mean"].sel(n_units=200) >= res["n_significant_mean"][0])
    True
    """
    func = "scaling_analysis"
    da = check_population(activity, func=func, min_samples=8, min_units=8)
    check_choice(sampling, _SAMPLINGS, func=func, name="sampling")
    n_repeats = check_int(n_repeats, func=func, name="n_repeats", minimum=1)
    k_req = check_int(n_components, func=func, name="n_components", minimum=1)
    n_null = check_int(n_null, func=func, name="n_null", minimum=0)
    n_units = da.sizes["unit"]
    sizes_l = _default_sizes(n_units) if sizes is None else [
        check_int(s, func=func, name="sizes", minimum=8, maximum=n_units) for s in sizes
    ]
    positioned = "pos_x" in da.coords and "pos_y" in da.coords
    method = ("field_of_view" if positioned else "random") if sampling == "auto" else sampling
    if method == "field_of_view" and not positioned:
        raise ValueError(
            f"{func}(): `sampling`='field_of_view' needs unit coords pos_x and pos_y; "
            "add them with `.assign_coords(pos_x=('unit', x), pos_y=('unit', y))` or use "
            "sampling='random'."
        )
    gen = as_rng(rng, func=func)
    order = _field_order(da) if method == "field_of_view" else None
    frac = np.full((len(sizes_l), n_repeats), np.nan)
    n_sig = np.zeros((len(sizes_l), n_repeats), dtype=int)
    spectra = np.full((len(sizes_l), n_repeats, k_req), np.nan)
    svca_kw = {"block_length": block_length, **svca_options}
    for i, size in enumerate(sizes_l):
        for r in range(n_repeats):
            units = np.sort(order[:size] if order is not None else gen.choice(n_units, size, False))
            x = np.asarray(da.isel(unit=units).values, dtype=np.float64)
            check_finite(x, func=func)
            n_train = int(np.ceil(np.ceil(len(x) / block_length) / 2)) * block_length
            k = max(1, min(k_req, size // 2 - 1, min(n_train, len(x)) - 2))
            frac[i, r], n_sig[i, r], rel = _one_size(x, k, n_null, gen, svca_kw)
            spectra[i, r, : len(rel)] = rel
    return xr.Dataset(
        {
            "reliable_fraction": (("n_units", "repeat"), frac),
            "n_significant": (("n_units", "repeat"), n_sig),
            "reliable_variance": (("n_units", "repeat", "component"), spectra),
            "reliable_fraction_mean": ("n_units", frac.mean(axis=1)),
            "n_significant_mean": ("n_units", n_sig.mean(axis=1)),
        },
        coords={
            "n_units": sizes_l,
            "repeat": np.arange(n_repeats),
            "component": np.arange(1, k_req + 1),
        },
        attrs={"method": func, "sampling": method, "n_null": n_null,
               "block_length": int(block_length)},
    )  # fmt: skip
