"""Model versus mouse: the same population analyses on two recordings at matched N and T."""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import activity_array, as_rng, check_int
from netphys.population._powerlaw import short_fits_caught

__all__ = ["COMPARE_SCALARS", "compare"]

#: (variable, description, format) of every scalar measure of :func:`compare`.
COMPARE_SCALARS = (
    ("n_units", "units (matched)", "{:.0f}"),
    ("n_frames", "frames (matched)", "{:.0f}"),
    ("svca_alpha", "SVCA reliable-spectrum exponent", "{:.3f}"),
    ("svca_reliable_fraction", "SVCA reliable fraction (all SVCs)", "{:.3f}"),
    ("svca_reliable_fraction_1", "SVCA reliable fraction, SVC 1", "{:.3f}"),
    ("eigen_alpha", "eigenspectrum exponent", "{:.3f}"),
    ("participation_ratio", "participation ratio", "{:.2f}"),
    ("participation_ratio_per_unit", "participation ratio / N", "{:.3f}"),
    ("corr_mean", "mean pairwise correlation", "{:.4f}"),
    ("corr_null_mean", "  shuffle null", "{:.4f}"),
    ("corr_spread_ratio", "correlation spread / null spread", "{:.2f}"),
    ("corr_fraction_significant", "pairs outside null 95%", "{:.3f}"),
    ("sparsity", "lifetime sparseness (median unit)", "{:.3f}"),
    ("population_sparsity", "population sparseness (median frame)", "{:.3f}"),
    ("fraction_zero", "fraction of zero entries", "{:.3f}"),
)


def _as_population(
    x: Any, *, func: str, name: str, cells_only: bool
) -> tuple[xr.DataArray, dict[str, Any]]:
    """Return a (time, unit) float64 DataArray and a description of where it came from."""
    if isinstance(x, (str, os.PathLike, xr.DataTree)):
        kind = "a path" if isinstance(x, (str, os.PathLike)) else "a DataTree"
        raise TypeError(
            f"{func}(): `{name}` is {kind}; this function compares arrays. Open files with "
            "`netphys.io.open_dataset(path)` and model recordings with "
            "`netphys.layer_activity(tree)`, or call "
            "`netphys.experiments.compare_recordings(a, b)`, which does both."
        )
    if isinstance(x, np.ndarray):
        if x.ndim != 2:
            raise ValueError(f"{func}(): `{name}` must be 2-D (time x unit); got shape {x.shape}.")
        x = xr.DataArray(x, dims=("time", "unit"))
    da = activity_array(
        x,
        func=func,
        name=name,
        fix="Pass a numpy array, or rename the unit dim with `.rename(neuron='unit')`.",
    )
    sample = da.dims[0]
    info = {
        "source": str(da.attrs.get("source", da.attrs.get("format", "array"))),
        "format": str(da.attrs.get("format", "array")),
        "frame_rate": float(da.attrs.get("frame_rate", np.nan) or np.nan),
    }
    if cells_only and "is_cell" in da.coords and da["is_cell"].dims == ("unit",):
        keep = np.asarray(da["is_cell"].values, dtype=bool)
        if keep.sum() >= 4:  # too few labelled cells: use every ROI
            da = da.isel(unit=np.flatnonzero(keep))
    values = np.asarray(da.values, dtype=np.float64)
    out = xr.DataArray(values, dims=("time", "unit"))
    for key in ("stimulus", "repeat"):
        if key in da.coords and da[key].dims == (sample,):
            out = out.assign_coords({key: ("time", np.asarray(da[key].values))})
    return out, info


def _select(
    x: np.ndarray, n_units: int, n_frames: int, gen: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Take a contiguous block of ``n_frames`` frames, then ``n_units`` random usable units."""
    start = int(gen.integers(0, x.shape[0] - n_frames + 1))
    block = x[start : start + n_frames]
    usable = np.flatnonzero(np.all(np.isfinite(block), axis=0) & (np.std(block, axis=0) > 0))
    if len(usable) < n_units:
        return block[:, usable], len(usable)
    pick = np.sort(gen.choice(usable, size=n_units, replace=False))
    return block[:, pick], n_units


def _fit_range(k: int) -> tuple[int, int]:
    start = 11 if k >= 100 else 2
    return start, int(min(500, max(start + 2, k // 2)))


def _sparseness(x: np.ndarray) -> tuple[float, float, float]:
    r = np.maximum(x, 0.0)
    m1, m2 = r.mean(axis=0), (r**2).mean(axis=0)
    t = r.shape[0]
    ok = m2 > 0
    life = (1 - m1[ok] ** 2 / m2[ok]) / (1 - 1 / t)
    p1, p2 = r.mean(axis=1), (r**2).mean(axis=1)
    n = r.shape[1]
    okp = p2 > 0
    pop = (1 - p1[okp] ** 2 / p2[okp]) / (1 - 1 / n)
    scale = np.max(np.abs(x)) if x.size else 0.0
    zeros = float(np.mean(np.abs(x) <= 1e-9 * max(scale, 1e-300)))
    return (
        float(np.median(life)) if life.size else np.nan,
        float(np.median(pop)) if pop.size else np.nan,
        zeros,
    )


def _analyse(
    x: np.ndarray,
    *,
    seed: int,
    block_length: int,
    min_shift: int,
    n_raster_frames: int,
    sort: bool,
) -> dict[str, Any]:
    from netphys.population._nulls import shuffle_null
    from netphys.population._sorting import rastermap_sort
    from netphys.population._spectra import eigenspectrum
    from netphys.population._svca import svca

    t, n = x.shape
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    out: dict[str, Any] = {"fit_notes": []}  # cut-short power-law fits, for the caveats
    with short_fits_caught(out["fit_notes"]):
        sv = svca(z, block_length=block_length, split="random", rng=seed,
                  fit_range=_fit_range(min(n // 2, t // 2)))  # fmt: skip
        es = eigenspectrum(z, fit_range=_fit_range(min(n, t - 1)))
    rel, tot = sv["reliable_variance"].values, sv["total_variance"].values
    out["svca_alpha"] = float(sv["alpha"])
    out["svca_reliable_fraction"] = float(rel.sum() / tot.sum()) if tot.sum() > 0 else np.nan
    out["svca_reliable_fraction_1"] = float(sv["reliable_fraction"].values[0])
    out["svca_reliable"] = rel / tot.sum()
    out["svca_total"] = tot / tot.sum()
    lam = es["variance"].values
    out["eigen_alpha"] = float(es["alpha"])
    out["eigen_variance"] = es["explained_variance_ratio"].values
    out["participation_ratio"] = float(lam.sum() ** 2 / (lam**2).sum())
    out["participation_ratio_per_unit"] = out["participation_ratio"] / n
    nl = shuffle_null(z, min_shift=min_shift, rng=seed)
    real, null = nl["real_count"].values.astype(float), nl["null_count"].values.astype(float)
    out["corr_bin"] = nl["bin"].values
    out["corr_real"] = real / real.sum() if real.sum() else real
    out["corr_null"] = null / null.sum() if null.sum() else null
    out["corr_mean"] = float(nl["real_mean"])
    out["corr_null_mean"] = float(nl["null_mean"])
    out["corr_spread_ratio"] = float(nl["spread_ratio"])
    out["corr_fraction_significant"] = float(nl["fraction_significant"])
    life, pop, zeros = _sparseness(x)
    out["sparsity"], out["population_sparsity"], out["fraction_zero"] = life, pop, zeros
    order = np.arange(n)
    if sort and n >= 4:
        order = np.asarray(rastermap_sort(z, rng=seed)["order_index"].values)
    out["raster"] = z[:n_raster_frames, order].T
    return out


def compare(
    a: Any,
    b: Any,
    *,
    n_units: int | None = None,
    n_frames: int | None = None,
    labels: tuple[str, str] = ("a", "b"),
    cells_only: bool = True,
    block_length: int | None = None,
    min_shift: int | None = None,
    n_raster_frames: int = 500,
    sort: bool = True,
    n_boot: int = 10,
    boot_fraction: float = 0.5,
    rng: Any = 0,
) -> xr.Dataset:
    """Run the same population analyses on two recordings at matched numbers of units and frames.

    Power-law exponents, reliable fractions and correlation spreads all depend on the number
    of units N and frames T, so both recordings are cut to the same N and T first: a random
    contiguous block of ``n_frames`` frames, then ``n_units`` random units among those that vary
    in that block. Each unit is z-scored before SVCA, the eigenspectrum, the shuffle null and
    rastermap (sparseness uses the raw, rectified activity).

    Parameters
    ----------
    a, b : xarray.DataArray, xarray.Dataset or numpy.ndarray
        Recordings: a (time, unit) DataArray or array, or a reader's Dataset (its
        ``activity``). Files and model recording trees go through
        :func:`netphys.experiments.compare_recordings`.
    n_units, n_frames : int, optional
        Matched sizes; default the smaller of the two recordings' usable units and frames.
    labels : tuple of str, default=("a", "b")
        Names of the two recordings (the ``recording`` coord).
    cells_only : bool, default=True
        Keep only units with ``is_cell`` where that coord exists (and at least 4 are cells).
    block_length : int, optional
        SVCA train/test block length in frames; default ``max(1, min(60, n_frames // 10))``.
    min_shift : int, optional
        Minimum circular shift of the correlation null; default ``n_frames // 4``.
    n_raster_frames : int, default=500
        Frames kept in the sorted rasters.
    sort : bool, default=True
        Sort raster units with rastermap (else keep the subsample order).
    n_boot : int, default=10
        Neuron subsamples for the intervals: every number is recomputed on ``n_boot`` random
        subsets of ``boot_fraction`` of the matched units (same frames); ``<name>_ci`` is the
        full-N value plus the 2.5 and 97.5 % deviations of the subsample values from their
        median. 0 skips them.
    boot_fraction : float, default=0.5
        Fraction of the matched units in each subsample. Half-samples without replacement
        spread about as much as independent draws of all N units would (for means, exactly:
        the variance of a mean of N/2 of N units around the full mean is that of a mean of N
        fresh units), so the interval describes the uncertainty from sampling the neurons.
    rng : int, numpy.random.Generator or None, default=0
        Randomness of the subsampling and of every analysis.

    Returns
    -------
    xarray.Dataset
        Along ``recording`` (coord = ``labels``): ``n_units``, ``n_frames``, ``svca_alpha``,
        ``svca_reliable_fraction`` (reliable over total variance, all SVCs),
        ``svca_reliable_fraction_1``, ``eigen_alpha``, ``participation_ratio``
        (``(Σλ)² / Σλ²``), ``participation_ratio_per_unit``, ``corr_mean``,
        ``corr_null_mean``, ``corr_spread_ratio``, ``corr_fraction_significant``, ``sparsity``
        (median lifetime sparseness), ``population_sparsity``, ``fraction_zero``, ``frame_rate``;
        along (``recording``, ``component``): ``svca_reliable``, ``svca_total`` (fractions of
        the total SVC variance), ``eigen_variance`` (explained variance ratio); along
        (``recording``, ``corr_bin``): ``corr_real``, ``corr_null`` (normalised histograms);
        ``raster`` (``recording``, ``raster_unit``, ``raster_time``): z-scored activity sorted by
        rastermap; ``<scalar>_ci`` (``recording``, ``bound``) neuron-subsample intervals.
        When both recordings carry ``stimulus`` and ``repeat`` coords and share at least 4
        stimuli shown twice: 0-d ``rsa``, ``rsa_ceiling``, ``rsa_normalised``, ``cka``,
        ``cka_ceiling``, ``cka_normalised`` (see :func:`netphys.population._similarity.similarity`)
        with ``_ci`` intervals. Attrs: ``n_units``, ``n_frames``, ``block_length``,
        ``min_shift``, sources, ``matching`` (how the two were matched, in words) and
        ``caveats`` (numbers that are not meaningful here, in words, including power-law fits
        cut short by non-positive values: those are caveats here, not warnings).

    Raises
    ------
    ValueError
        If ``n_units``/``n_frames`` exceed what both recordings have, or they have fewer than
        8 usable units or 16 frames.

    See Also
    --------
    netphys.plot.plot_compare : one figure of this result.
    netphys.experiments.compare_files : files in, PNG + JSON + a printed table out.

    Examples
    --------
    >>> from netphys.population import simulate_population
    >>> a = simulate_population(60, 400, alpha=1.0, rng=0)["activity"]
    >>> b = simulate_population(80, 500, alpha=2.0, rng=1)["activity"]
    >>> res = compare(a, b, labels=("model", "mouse"), sort=False)
    >>> res["n_units"].values.tolist(), res["n_frames"].values.tolist()
    ([60, 60], [400, 400])
    """
    func = "compare"
    gen = as_rng(rng, func=func)
    if len(labels) != 2 or len(set(labels)) != 2:
        raise ValueError(f"{func}(): `labels` must be two different names; got {labels!r}.")
    pops, infos = [], []
    n_boot = check_int(n_boot, func=func, name="n_boot", minimum=0)
    if not 0 < boot_fraction <= 1:
        raise ValueError(f"{func}(): `boot_fraction` must be in (0, 1]; got {boot_fraction}.")
    das = []
    for x, name in ((a, "a"), (b, "b")):
        da, info = _as_population(x, func=func, name=name, cells_only=cells_only)
        pops.append(da.values)
        das.append(da)
        infos.append(info)
    t, n, bl, ms = _matched_sizes(pops, n_frames, n_units, block_length, min_shift, func=func)
    # paired design: both recordings are cut and analysed with the same random streams
    select_seed, seed = (int(s) for s in gen.integers(2**31, size=2))
    blocks = [_select(p, n, t, np.random.default_rng(select_seed))[0] for p in pops]
    n = min(x.shape[1] for x in blocks)  # a unit may be constant inside the chosen block
    analyses = [
        _analyse(
            x[:, :n],
            seed=seed,
            block_length=bl,
            min_shift=ms,
            n_raster_frames=n_raster_frames,
            sort=sort,
        )
        for x in blocks
    ]
    boots = _bootstrap(blocks, n, n_boot, boot_fraction, seed, bl, ms)
    for key, ci in boots.items():  # centre the subsample spread on the full-N value
        boots[key] = ci + np.array([r[key] for r in analyses])[:, None]
    sim = _similarity_block(das, n, n_boot, boot_fraction, seed)
    rec = list(labels)
    data = _result_variables(analyses, boots, sim, infos, n, t)
    ds = xr.Dataset(
        data,
        coords={
            "bound": ["low", "high"],
            "recording": rec,
            "component": np.arange(1, data["eigen_variance"][1].shape[1] + 1),
            "svc": np.arange(1, data["svca_reliable"][1].shape[1] + 1),
            "corr_bin": analyses[0]["corr_bin"],
        },
        attrs={
            "n_units": int(n),
            "n_frames": int(t),
            "block_length": int(bl),
            "min_shift": int(ms),
            "cells_only": bool(cells_only),
            "source_a": infos[0]["source"],
            "source_b": infos[1]["source"],
            "format_a": infos[0]["format"],
            "format_b": infos[1]["format"],
            "n_boot": int(n_boot),
            "matching": (
                f"both cut to N={n} units (random, non-constant) and T={t} contiguous frames "
                f"(random start), units z-scored; SVCA blocks of {bl} frames; intervals over "
                f"{n_boot} subsamples of {boot_fraction:.0%} of the units, centred on the "
                "full-N value"
            ),
            "caveats": _caveats(analyses, n, t, rec, sim),
        },
    )
    ds["svca_reliable"].attrs["long_name"] = "reliable variance per SVC / total SVC variance"
    ds["eigen_variance"].attrs["long_name"] = "explained variance ratio"
    ds["raster"].attrs["long_name"] = "z-scored activity, rastermap order"
    return ds


def _bootstrap(
    blocks: list[np.ndarray], n: int, n_boot: int, fraction: float, seed: int, bl: int, ms: int
) -> dict[str, np.ndarray]:
    """2.5-97.5 % ranges of every scalar over random subsets of the matched units."""
    if n_boot == 0:
        return {}
    m = max(4, round(fraction * n))
    gen = np.random.default_rng(seed + 1)
    keys = [k for k, _, _ in COMPARE_SCALARS[2:]]
    values = {k: np.full((2, n_boot), np.nan) for k in keys}
    for i in range(n_boot):
        pick = np.sort(gen.choice(n, size=min(m, n), replace=False))  # same units' slots
        for r, x in enumerate(blocks):
            try:
                res = _analyse(
                    x[:, :n][:, pick], seed=seed, block_length=bl, min_shift=ms,
                    n_raster_frames=1, sort=False,
                )  # fmt: skip
            except ValueError:  # too few units in a subsample for an analysis: no interval
                continue
            for k in keys:
                values[k][r, i] = res[k]
    out = {}
    for k, v in values.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
            ci = np.nanpercentile(v, [2.5, 97.5], axis=1).T - np.nanmedian(v, axis=1)[:, None]
        ci[np.isfinite(v).sum(axis=1) < n_boot / 2] = np.nan  # mostly undefined: no interval
        out[k] = ci
    return out


def _similarity_block(
    das: list[xr.DataArray], n: int, n_boot: int, fraction: float, seed: int
) -> dict[str, Any]:
    """RSA and CKA over the shared stimuli, at N matched units, with subsample intervals."""
    from netphys.population._similarity import shared_stimuli, similarity, split_repeats

    ids = shared_stimuli(das[0], das[1])
    if ids is None:
        return {}
    gen = np.random.default_rng(seed + 2)
    halves = []
    for da in das:
        vals = np.asarray(da.values)
        ok = np.all(np.isfinite(vals), axis=0) & (np.std(vals, axis=0) > 0)
        usable = np.flatnonzero(ok)
        pick = np.sort(gen.choice(usable, size=min(n, len(usable)), replace=False))
        halves.append(split_repeats(vals[:, pick], da["stimulus"].values, da["repeat"].values, ids))
    out: dict[str, Any] = similarity(halves[0], halves[1])
    if n_boot:
        m = max(4, round(fraction * halves[0].shape[2]))
        draws = []
        for _ in range(n_boot):
            sub = [h[:, :, np.sort(gen.choice(h.shape[2], min(m, h.shape[2]), replace=False))]
                   for h in halves]  # fmt: skip
            draws.append(similarity(sub[0], sub[1]))
        for key in ("rsa", "rsa_ceiling", "cka", "cka_ceiling"):
            boot = np.asarray([d[key] for d in draws], dtype=float)
            out[f"{key}_ci"] = out[key] + np.nanpercentile(boot, [2.5, 97.5]) - np.nanmedian(boot)
    return out


def _caveats(
    analyses: list[dict[str, Any]], n: int, t: int, rec: list[str], sim: dict[str, Any]
) -> list[str]:
    """Plain-language warnings about numbers that are not meaningful at this N and T."""
    out = []
    if n < 100:
        out.append(
            f"only {n} units per recording (fewer than 100): spectra, exponents and reliable "
            "fractions are dominated by sampling noise"
        )
    k = min(n // 2, t // 2)
    if _fit_range(k)[0] < 11:
        out.append(
            f"at most {k} SVCs/components: the power law is fitted over {_fit_range(k)}, not "
            "the papers' 11..500; exponents are not comparable to published values"
        )
    out += [
        f"{lab}: {note}" for lab, res in zip(rec, analyses, strict=True) for note in res["fit_notes"]
    ]
    if not sim:
        out.append(
            "no representational similarity: the two recordings do not share stimulus ids "
            "shown at least twice"
        )
    elif sim.get("rsa_ceiling", 1.0) < 0.2 or not np.isfinite(sim.get("rsa_ceiling", np.nan)):
        out.append("RSA noise ceiling below 0.2: the RDMs are too noisy to compare")
    return out


def _matched_sizes(
    pops: list[np.ndarray],
    n_frames: int | None,
    n_units: int | None,
    block_length: int | None,
    min_shift: int | None,
    *,
    func: str,
) -> tuple[int, int, int, int]:
    """Check and default the matched T, N, SVCA block length and minimum shift."""
    t_avail = min(p.shape[0] for p in pops)
    usable = [int(np.sum(np.all(np.isfinite(p), axis=0) & (np.std(p, axis=0) > 0))) for p in pops]
    n_avail = min(usable)
    t = t_avail if n_frames is None else check_int(n_frames, func=func, name="n_frames", minimum=16)
    n = n_avail if n_units is None else check_int(n_units, func=func, name="n_units", minimum=8)
    if t > t_avail or t < 16:
        raise ValueError(
            f"{func}(): `n_frames`={t} but the recordings have {[p.shape[0] for p in pops]} frames; "
            f"ask for 16 to {t_avail}."
        )
    if n > n_avail or n < 8:
        raise ValueError(
            f"{func}(): `n_units`={n} but the recordings have {usable} usable (non-constant, "
            f"finite) units; ask for 8 to {n_avail}."
        )
    bl = (
        max(1, min(60, t // 10))
        if block_length is None
        else check_int(block_length, func=func, name="block_length", minimum=1)
    )
    ms = (
        max(1, t // 4)
        if min_shift is None
        else check_int(min_shift, func=func, name="min_shift", minimum=1)
    )
    return t, n, bl, ms


def _result_variables(
    analyses: list[dict[str, Any]],
    boots: dict[str, np.ndarray],
    sim: dict[str, Any],
    infos: list[dict[str, Any]],
    n: int,
    t: int,
) -> dict[str, Any]:
    """Label the two analyses, their intervals and the similarity block as Dataset variables."""
    data: dict[str, Any] = {}
    for key, _, _ in COMPARE_SCALARS:
        if key in ("n_units", "n_frames"):
            continue
        data[key] = ("recording", np.array([r[key] for r in analyses], dtype=np.float64))
    data["n_units"] = ("recording", np.array([n, n]))
    data["n_frames"] = ("recording", np.array([t, t]))
    data["frame_rate"] = ("recording", np.array([i["frame_rate"] for i in infos]))

    def stack(key: str) -> np.ndarray:
        k = max(len(r[key]) for r in analyses)
        out = np.full((2, k), np.nan)
        for i, r in enumerate(analyses):
            out[i, : len(r[key])] = r[key]
        return out

    for key in ("svca_reliable", "svca_total", "eigen_variance"):
        data[key] = (
            (("recording", "component"), stack(key))
            if key.startswith("eigen")
            else (("recording", "svc"), stack(key))
        )
    data["corr_real"] = (("recording", "corr_bin"), np.stack([r["corr_real"] for r in analyses]))
    data["corr_null"] = (("recording", "corr_bin"), np.stack([r["corr_null"] for r in analyses]))
    data["raster"] = (
        ("recording", "raster_unit", "raster_time"),
        np.stack([r["raster"] for r in analyses]).astype(np.float32),
    )
    for key, _, _ in COMPARE_SCALARS[2:]:
        data[f"{key}_ci"] = (("recording", "bound"), boots.get(key, np.full((2, 2), np.nan)))
    for key, value in sim.items():
        data[key] = ((), value) if not key.endswith("_ci") else ("bound", value)
    return data
