"""Simulated populations with a planted power-law spectrum, categories and behaviour."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.signal
import xarray as xr

from netphys._validation import SAMPLE_DIMS, as_rng, check_choice, check_int, check_positive_float

__all__ = ["simulate_population"]


def _planted_latents(
    gen: np.random.Generator,
    n_samples: int,
    n_latents: int,
    *,
    alpha: float,
    n_categories: int,
    category_strength: float,
    timescale: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latent variances ``λ_k ∝ k^-alpha`` (sum 1), sample labels and the latents."""
    lam = np.arange(1, n_latents + 1, dtype=np.float64) ** -alpha
    lam /= lam.sum()
    labels = gen.integers(n_categories, size=n_samples)
    centres = gen.standard_normal((n_categories, n_latents))
    eps = gen.standard_normal((n_samples, n_latents))
    if timescale > 0:  # stationary AR(1) with unit variance
        phi = np.exp(-1.0 / timescale)
        eps[0] /= np.sqrt(1 - phi**2)
        eps = scipy.signal.lfilter([np.sqrt(1 - phi**2)], [1, -phi], eps, axis=0)
    xi = np.sqrt(category_strength) * centres[labels] + np.sqrt(1 - category_strength) * eps
    return lam, labels, xi * np.sqrt(lam)


def simulate_population(
    n_units: int,
    n_samples: int,
    *,
    alpha: float = 1.0,
    snr: float = 1.0,
    n_latents: int | None = None,
    n_categories: int = 10,
    category_strength: float = 0.0,
    n_behaviour: int = 10,
    behaviour_rank: int = 3,
    behaviour_noise: float = 0.1,
    timescale: float = 0.0,
    n_repeats: int = 1,
    sample_dim: str = "time",
    dtype: Any = np.float64,
    rng: Any = 0,
) -> xr.Dataset:
    """Simulate a population driven by latents with variance ``∝ k^-alpha`` plus noise.

    Latent ``k`` has variance ``λ_k ∝ k^-alpha`` (normalised so that ``Σλ = 1``); units load
    on the latents through orthonormal loadings scaled by ``sqrt(n_units)``, so the signal
    covariance has exactly the planted spectrum and a unit's signal variance is 1 on average.
    Isotropic noise of variance ``1/snr`` is added. Each sample belongs to a category; a share
    ``category_strength`` of every latent's variance is a per-category mean. The "behaviour" is a
    known linear map of the first ``behaviour_rank`` latents plus noise.

    Parameters
    ----------
    n_units : int
        Number of units.
    n_samples : int
        Number of samples (distinct stimuli when ``n_repeats > 1``).
    alpha : float, default=1.0
        Planted power-law exponent of the signal spectrum.
    snr : float, default=1.0
        Mean signal variance over noise variance per unit.
    n_latents : int or None, default=None
        Number of latent dimensions; None means ``min(n_units, n_samples, 1024)``.
    n_categories : int, default=10
        Number of sample categories (``label`` coord).
    category_strength : float, default=0.0
        Share of latent variance given by the category means, in [0, 1]. With few categories
        this share sits in at most ``n_categories`` directions, which bends the leading part of
        the spectrum; keep 0 where the planted exponent must be recovered.
    n_behaviour : int, default=10
        Number of behaviour outputs (like a model's logits).
    behaviour_rank : int, default=3
        Rank of the linear latent-to-behaviour map.
    behaviour_noise : float, default=0.1
        Standard deviation of the noise added to the behaviour.
    timescale : float, default=0.0
        Autocorrelation time of the latents in samples (AR(1)); 0 gives i.i.d. samples.
    n_repeats : int, default=1
        Presentations of each sample; repeats share the signal, not the noise, and are laid
        out one repeat after the other with ``stimulus`` and ``repeat`` coords.
    sample_dim : str, default="time"
        Name of the sample dim.
    dtype : numpy dtype, default=numpy.float64
        Dtype of ``activity``.
    rng : int, numpy.random.Generator or None, default=0
        Randomness.

    Returns
    -------
    xarray.Dataset
        ``activity`` (sample, unit), ``signal`` (sample, unit; activity without noise),
        ``latents`` (sample, latent), ``behaviour`` (sample, output), ``loadings``
        (unit, latent), ``latent_variance`` (latent), ``behaviour_map``
        (behaviour_latent, output); unit coords ``pos_x``, ``pos_y`` (µm, random in
        [0, 500)); sample coords ``label``, ``stimulus``, ``repeat``; attrs with the planted
        parameters.

    Raises
    ------
    ValueError
        If a count or fraction is out of range.

    Examples
    --------
    >>> sim = simulate_population(50, 100, alpha=1.0, snr=5.0, rng=0)
    >>> sim["activity"].dims, sim["activity"].shape
    (('time', 'unit'), (100, 50))
    """
    func = "simulate_population"
    n_units = check_int(n_units, func=func, name="n_units", minimum=1)
    n_samples = check_int(n_samples, func=func, name="n_samples", minimum=1)
    alpha = check_positive_float(alpha, func=func, name="alpha", allow_zero=True)
    snr = check_positive_float(snr, func=func, name="snr")
    n_categories = check_int(n_categories, func=func, name="n_categories", minimum=1)
    n_behaviour = check_int(n_behaviour, func=func, name="n_behaviour", minimum=1)
    n_repeats = check_int(n_repeats, func=func, name="n_repeats", minimum=1)
    timescale = check_positive_float(timescale, func=func, name="timescale", allow_zero=True)
    behaviour_noise = check_positive_float(
        behaviour_noise, func=func, name="behaviour_noise", allow_zero=True
    )
    check_choice(sample_dim, SAMPLE_DIMS, func=func, name="sample_dim")
    if not 0 <= category_strength <= 1:
        raise ValueError(
            f"{func}(): `category_strength` must be in [0, 1]; got {category_strength}."
        )
    max_latents = min(n_units, n_samples)
    if n_latents is None:
        n_latents = min(max_latents, 1024)
    n_latents = check_int(n_latents, func=func, name="n_latents", minimum=1, maximum=max_latents)
    behaviour_rank = check_int(
        behaviour_rank, func=func, name="behaviour_rank", minimum=1, maximum=n_latents
    )
    gen = as_rng(rng, func=func)

    lam, labels, latents = _planted_latents(
        gen,
        n_samples,
        n_latents,
        alpha=alpha,
        n_categories=n_categories,
        category_strength=category_strength,
        timescale=timescale,
    )
    q, _ = np.linalg.qr(gen.standard_normal((n_units, n_latents)))
    loadings = q * np.sqrt(n_units)
    signal = latents @ loadings.T
    bmap = gen.standard_normal((behaviour_rank, n_behaviour)) / np.sqrt(lam[:behaviour_rank, None])
    behaviour = latents[:, :behaviour_rank] @ bmap
    behaviour += behaviour_noise * gen.standard_normal(behaviour.shape)

    stim = np.tile(np.arange(n_samples), n_repeats)
    repeat = np.repeat(np.arange(n_repeats), n_samples)
    noise = gen.standard_normal((n_samples * n_repeats, n_units)) / np.sqrt(snr)
    activity = (signal[stim] + noise).astype(dtype)
    pos = gen.uniform(0, 500, size=(2, n_units))
    s, u = sample_dim, "unit"
    return xr.Dataset(
        {
            "activity": ((s, u), activity, {"long_name": "simulated activity"}),
            "signal": ((s, u), signal[stim]),
            "latents": ((s, "latent"), latents[stim]),
            "behaviour": ((s, "output"), behaviour[stim]),
            "loadings": ((u, "latent"), loadings),
            "latent_variance": ("latent", lam),
            "behaviour_map": (("behaviour_latent", "output"), bmap),
        },
        coords={
            u: np.arange(n_units),
            "pos_x": (u, pos[0], {"units": "um"}),
            "pos_y": (u, pos[1], {"units": "um"}),
            "label": (s, labels[stim]),
            "stimulus": (s, stim),
            "repeat": (s, repeat),
            "latent": np.arange(1, n_latents + 1),
            "output": np.arange(n_behaviour),
        },
        attrs={
            "method": "simulate_population",
            "alpha": alpha,
            "snr": snr,
            "n_categories": n_categories,
            "category_strength": float(category_strength),
            "behaviour_rank": behaviour_rank,
            "timescale": timescale,
            "n_repeats": n_repeats,
        },
    )
