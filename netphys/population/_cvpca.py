"""Cross-validated PCA over two repeats (Stringer, Pachitariu et al. 2019, Nature).

Gram formulation: with ``R1``, ``R2`` the (stimulus x unit) responses of the two repeats,
``u_k`` the eigenvectors of ``G11 = R1 R1ᵀ``, the signal variance of dimension ``k`` is
``u_kᵀ G21 u_k`` with ``G21 = R2 R1ᵀ``. The stimulus x stimulus Grams are accumulated in
float64 over unit chunks (one pass), and the repeat-swap shuffles are assembled from them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import as_rng, check_finite, check_int
from netphys.errors import NetphysWarning
from netphys.population._conventions import check_convention, paper_fit_range, warn_identical_grams
from netphys.population._powerlaw import (
    _check_fit_range,
    _power_law_kernel,
    power_law_variables,
    short_fit_message,
    warn_short_fit,
)
from netphys.population._stream import assemble_rows, reduce_unit_chunks, top_eigh

__all__ = ["cvpca", "repeat_responses"]


def repeat_responses(
    activity: xr.DataArray,
    *,
    repeats: tuple[int, int] = (0, 1),
    stimulus_coord: str = "stimulus",
    repeat_coord: str = "repeat",
) -> xr.DataArray:
    """Arrange (time, unit) activity as (repeat, stimulus, unit) responses for :func:`cvpca`.

    Frames are matched by their ``stimulus`` coord; only stimuli shown in both repeats are kept
    (sorted by id, first frame of each stimulus within a repeat). Stays lazy for dask input.

    Parameters
    ----------
    activity : xarray.DataArray with dims (sample, 'unit')
        Activity with sample coords ``stimulus`` and ``repeat``.
    repeats : tuple of int, default=(0, 1)
        The two repeat ids to pair.
    stimulus_coord, repeat_coord : str, default="stimulus", "repeat"
        Names of the sample coords.

    Returns
    -------
    xarray.DataArray
        Dims ('repeat', 'stimulus', 'unit'); the unit coords are kept.

    Raises
    ------
    ValueError
        If the coords are missing or no stimulus appears in both repeats.

    Examples
    --------
    >>> from netphys.population import simulate_population
    >>> sim = simulate_population(20, 30, n_repeats=2, rng=0)
    >>> repeat_responses(sim["activity"]).shape
    (2, 30, 20)
    """
    func = "repeat_responses"
    if not isinstance(activity, xr.DataArray) or activity.ndim != 2 or "unit" not in activity.dims:
        raise TypeError(
            f"{func}(): `activity` must be a 2-D DataArray with a 'unit' dim and sample coords "
            f"'{stimulus_coord}' and '{repeat_coord}'; got {type(activity).__name__}."
        )
    sample_dim = next(d for d in activity.dims if d != "unit")
    missing = [c for c in (stimulus_coord, repeat_coord) if c not in activity.coords]
    if missing:
        raise ValueError(
            f"{func}(): `activity` lacks sample coords {missing}. Add them with "
            f"`.assign_coords({missing[0]}=('{sample_dim}', values))`."
        )
    stim = np.asarray(activity[stimulus_coord].values)
    rep = np.asarray(activity[repeat_coord].values)
    firsts = []
    for r in repeats:
        idx = np.flatnonzero(rep == r)
        ids, first = np.unique(stim[idx], return_index=True)
        firsts.append(dict(zip(ids.tolist(), idx[first].tolist(), strict=True)))
    common = sorted((set(firsts[0]) & set(firsts[1])) - {-1})
    if not common:
        raise ValueError(
            f"{func}(): no stimulus appears in both repeats {repeats}; repeat ids present: "
            f"{np.unique(rep).tolist()}. Pick repeats that share stimuli."
        )
    parts = [
        activity.isel({sample_dim: [f[s] for s in common]})
        .drop_vars([c for c in activity.coords if sample_dim in activity[c].dims])
        .rename({sample_dim: "stimulus"})
        for f in firsts
    ]
    out = xr.concat(parts, dim="repeat").assign_coords(
        stimulus=np.asarray(common), repeat=np.asarray(repeats)
    )
    return out.transpose("repeat", "stimulus", "unit")


def _check_responses(responses: Any, func: str) -> tuple[Any, xr.DataArray | None, str]:
    data: Any
    if isinstance(responses, xr.DataArray):
        if responses.ndim != 3 or "repeat" not in responses.dims or "unit" not in responses.dims:
            raise ValueError(
                f"{func}(): `responses` must have dims ('repeat', sample, 'unit'); got "
                f"{responses.dims}. Build it with `repeat_responses(activity)`."
            )
        sample_dim = str(next(d for d in responses.dims if d not in ("repeat", "unit")))
        da = responses.transpose("repeat", sample_dim, "unit")
        data = da  # read unit range by unit range (dask or lazy backends stay lazy)
    else:
        da, sample_dim = None, "stimulus"
        data = np.asarray(responses)
        if data.ndim != 3:
            raise ValueError(
                f"{func}(): `responses` must be 3-D (repeat, stimulus, unit); got shape "
                f"{data.shape}."
            )
    if data.shape[0] != 2:
        raise ValueError(
            f"{func}(): `responses` needs exactly 2 repeats along its first dim ('repeat'); got "
            f"{data.shape[0]}. Select two with `.isel(repeat=[0, 1])`."
        )
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise TypeError(f"{func}(): `responses` must hold real numbers; got dtype {data.dtype}.")
    if data.shape[1] < 3 or data.shape[2] < 2:
        raise ValueError(
            f"{func}(): `responses` needs at least 3 stimuli and 2 units; got shape {data.shape}."
        )
    return data, da, sample_dim


def _grams_kernel(
    start: int, stop: int, block: np.ndarray, *, center: bool | str, func: str
) -> dict[str, Any]:
    check_finite(
        block, func=func, name="responses", dims=("repeat", "stimulus", "unit"),
        offset=(0, 0, start),
    )
    const = np.ptp(block.reshape(-1, block.shape[2]), axis=0) == 0
    if center == "pooled":
        block -= block.mean(axis=(0, 1), keepdims=True)
    elif center:
        block -= block.mean(axis=1, keepdims=True)
    block[:, :, const] = 0.0
    r1, r2 = block[0], block[1]
    return {
        "g11": r1 @ r1.T,
        "g22": r2 @ r2.T,
        "g21": r2 @ r1.T,
        "rows_constant": [(start, const[:, None])],
    }


def _grams(
    data: Any, center: bool | str, chunk_size: int | None, progress: bool | None, func: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Accumulate G11 = R1R1ᵀ, G22 = R2R2ᵀ, G21 = R2R1ᵀ (float64) over unit chunks.

    ``center``: True centres each unit per repeat; "pooled" over both repeats together. The
    chunks run on the workers when a dask.distributed client is current.
    """
    part = reduce_unit_chunks(
        data, _grams_kernel, unit_axis=2, chunk_size=chunk_size, progress=progress,
        desc="cvpca grams", center=center, func=func,
    )
    constant = assemble_rows(part["rows_constant"], data.shape[2])[:, 0].astype(bool)
    return part["g11"], part["g22"], part["g21"], constant


def _signal_variance(g11: np.ndarray, g21: np.ndarray, k: int) -> np.ndarray:
    _, vecs = top_eigh(g11, k)
    out: np.ndarray = (vecs * (g21 @ vecs)).sum(axis=0)
    return out


def _shuffled_grams(
    g11: np.ndarray, g22: np.ndarray, g21: np.ndarray, flip: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Grams after swapping the two repeats of the stimuli where ``flip`` is True."""
    g12 = g21.T
    fs, ft = flip[:, None], flip[None, :]
    new11 = np.where(fs & ft, g22, np.where(fs, g21, np.where(ft, g12, g11)))
    new21 = np.where(fs & ft, g12, np.where(fs, g11, np.where(ft, g22, g21)))
    return new11, new21


def cvpca(
    responses: Any,
    *,
    n_components: int | None = None,
    n_shuffles: int = 10,
    fit_range: tuple[int, int] | None = None,
    center: bool = True,
    chunk_size: int | None = None,
    progress: bool | None = None,
    rng: Any = 0,
    convention: str = "netphys",
) -> xr.Dataset:
    """Estimate the signal eigenspectrum by cross-validated PCA over two repeats.

    PCs are fitted on repeat 1; the signal variance of PC ``k`` is the covariance of the
    projections of repeat 1 and repeat 2 onto it, so noise (independent across repeats) cancels
    in expectation. Shuffles swap the repeats of each stimulus with probability 1/2 and the
    spectrum is averaged over them.

    Parameters
    ----------
    responses : numpy.ndarray of shape (2, n_stimuli, n_units) or xarray.DataArray
        DataArray dims ('repeat', sample, 'unit') with ``repeat`` of size 2 (see
        :func:`repeat_responses`); numpy- or dask-backed (read in unit chunks).
    n_components : int or None, default=None
        Number of dimensions; None means ``min(1024, n_stimuli - 1, n_units)`` (with
        ``convention="paper"``: ``min(n_stimuli, n_units)``, all of them).
    n_shuffles : int, default=10
        Repeat-swap shuffles to average; 0 gives the single unshuffled estimate.
    fit_range : tuple of int, optional
        1-based dimensions of the power-law fit; default ``(11, 500)`` (paper:
        ``(11, min(500, n - 2))``, fitted on ``log|ss|``, see :func:`fit_power_law`).
    center : bool, default=True
        Subtract each unit's mean over stimuli, per repeat (ignored with "paper").
    chunk_size : int or None, default=None
        Units per chunk; None uses the dask chunks or about 64 MiB.
    progress : bool or None, default=None
        Show tqdm progress bars; None shows them only for large inputs.
    rng : int, numpy.random.Generator or None, default=0
        Randomness of the shuffles.
    convention : {"netphys", "paper"}, default="netphys"
        "paper" reproduces ``shuffledSpectrum.m``/``loadProc2800.m``: each unit centred over
        all presentations pooled, the uncentred Grams, every component, the paper's power-law
        fit.

    Returns
    -------
    xarray.Dataset
        Along ``component`` (1-based): ``signal_variance`` (mean over shuffles, per stimulus),
        ``spectrum`` (``signal_variance`` / its sum), ``fitted``; ``signal_variance_shuffles``
        (shuffle, component); 0-d ``total_variance`` (summed over units, mean of the two
        repeats, per stimulus), ``signal_fraction`` (summed ``signal_variance`` over
        ``total_variance``: 1 for a noise-free recording when every component is kept),
        ``alpha``, ``intercept``, ``r2``, ``fit_start``, ``fit_stop``, ``n_nonpositive``,
        ``n_dropped``; ``is_constant`` along ``unit``.

    Raises
    ------
    ValueError
        For a wrong shape or dims, NaN/inf, or too many components.

    Warns
    -----
    NetphysWarning
        When constant units are dropped, or when the two repeats are identical (a noise-free
        model: signal variance is then all the variance).
    FitRangeWarning
        (a ``NetphysWarning``) once per call when the power-law fit used fewer components than
        ``fit_range`` (clipped to the components computed) asks for, because the signal variance
        turns non-positive inside it (``convention="paper"``: is zero), or when fewer than three
        points remain and ``alpha`` is NaN. The message gives the range asked for, the range
        used, how many components were non-positive and from which one, and a ``fit_range`` that
        fits; ``fit_stop`` and ``n_nonpositive`` hold the same numbers.

    Differences from the papers
    ---------------------------
    - Centring: netphys centres each unit per repeat (so a change of mean between repeats is
      not signal); the reference centres over both repeats pooled and then uses the
      uncentred Gram, which can add one mean-like dimension.
    - Components: netphys keeps at most ``min(1024, n_stimuli - 1, n_units)`` (one is lost to
      centring); the reference computes all of them and normalises the spectrum over all.
    - Power law: netphys stops the fit before the first non-positive value; the reference fits
      ``log|ss|`` over ``11 : min(500, n - 2)`` (see :func:`fit_power_law`).
    - Preprocessing the reference did before cvPCA (z-scoring by spontaneous statistics,
      removing 32 spontaneous PCs) is the caller's choice and is not done here.

    Notes
    -----
    ``u_k`` are the top eigenvectors of ``G11 = R1 R1ᵀ`` (stimulus space); with
    ``v_k = R1ᵀ u_k / sqrt(λ_k)`` the neuron-space PCs, ``Σ_s (R1 v_k)_s (R2 v_k)_s =
    u_kᵀ R2 R1ᵀ u_k``. A shuffle's Grams are assembled from ``G11``, ``G22``, ``G21`` by
    swapping rows and columns, so no further pass over the units is needed.

    References
    ----------
    Stringer, Pachitariu et al. (2019) High-dimensional geometry of population responses in
    visual cortex. Nature 571, 361-365. doi:10.1038/s41586-019-1346-5

    Examples
    --------
    >>> from netphys.population import repeat_responses, simulate_population
    >>> sim = simulate_population(300, 400, alpha=1.0, snr=2.0, n_repeats=2, rng=0)
    >>> res = cvpca(repeat_responses(sim["activity"]), n_shuffles=2, fit_range=(5, 50), rng=0)
    >>> bool(abs(float(res["alpha"]) - 1.0) < 0.3)
    True
    """
    func = "cvpca"
    paper = check_convention(convention, func=func) == "paper"
    data, da, sample_dim = _check_responses(responses, func)
    n_shuffles = check_int(n_shuffles, func=func, name="n_shuffles", minimum=0)
    fit_start, fit_stop = _check_fit_range((11, 500) if fit_range is None else fit_range, func=func)
    center_mode: bool | str = "pooled" if paper else center
    center = bool(center) and not paper
    if chunk_size is not None:
        check_int(chunk_size, func=func, name="chunk_size", minimum=1)
    gen = as_rng(rng, func=func)
    n_stim, n_units = data.shape[1], data.shape[2]
    limit = min(n_stim - (1 if center else 0), n_units)
    if n_components is not None:
        check_int(n_components, func=func, name="n_components", minimum=1)
        if n_components > limit:
            raise ValueError(
                f"{func}(): `n_components`={n_components} exceeds min(stimuli"
                f"{' - 1' if center else ''}, units) = {limit}. Ask for at most {limit}."
            )
    g11, g22, g21, constant = _grams(data, center_mode, chunk_size, progress, func)
    warn_identical_grams(g11, g21, g22, func=func)
    n_dropped = int(constant.sum())
    if n_dropped:
        warnings.warn(
            f"{func}(): dropped {n_dropped} constant unit(s); they are marked in `is_constant`.",
            NetphysWarning,
            stacklevel=2,
        )
    limit = min(limit, n_units - n_dropped)
    if limit < 1 or (n_components is not None and n_components > limit):
        raise ValueError(
            f"{func}(): only {n_units - n_dropped} non-constant unit(s) remain, fewer than the "
            f"{n_components} components requested. Ask for at most {max(limit, 0)}."
        )
    k = n_components if n_components is not None else (limit if paper else min(1024, limit))
    if paper and fit_range is None:
        fit_start, fit_stop = paper_fit_range(k)
    if n_shuffles == 0:
        shuffles = _signal_variance(g11, g21, k)[None]
    else:
        shuffles = np.empty((n_shuffles, k))
        for i in range(n_shuffles):
            flip = gen.random(n_stim) < 0.5
            s11, s21 = _shuffled_grams(g11, g22, g21, flip)
            shuffles[i] = _signal_variance(s11, s21, k)
    shuffles /= n_stim
    ss = shuffles.mean(axis=0)
    total = float(np.trace(g11) + np.trace(g22)) / (2 * n_stim)
    fit = _power_law_kernel(ss, fit_start, fit_stop, absolute=paper)
    warn_short_fit(
        short_fit_message(
            ss, fit, (fit_start, fit_stop), func=func, what="signal variance", absolute=paper
        )
    )
    variables: dict[str, Any] = {
        "signal_variance": ("component", ss, {"long_name": "cross-validated signal variance"}),
        "spectrum": ("component", ss / ss.sum()),
        "signal_variance_shuffles": (("shuffle", "component"), shuffles),
        "total_variance": ((), total, {"long_name": "total variance (mean of the repeats)"}),
        "signal_fraction": ((), float(ss.sum() / total) if total > 0 else np.nan),
        "n_dropped": ((), n_dropped),
        "is_constant": ("unit", constant),
    }
    variables.update(power_law_variables(fit))
    coords: dict[str, Any] = {"component": np.arange(1, k + 1)}
    if da is not None:
        for name, coord in da.coords.items():
            if coord.ndim == 1 and coord.dims[0] == "unit":
                coords[str(name)] = coord.variable
    return xr.Dataset(
        variables,
        coords=coords,
        attrs={
            "method": "cvpca",
            "n_shuffles": n_shuffles,
            "center": "pooled" if paper else int(center),
            "sample_dim": sample_dim,
            "convention": convention,
        },
    )
