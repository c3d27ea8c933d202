"""Cross-session analyses: representational drift, subspace alignment, spectra, concept persistence.

A *session* is one checkpoint of a model (or one day of imaging). Every function here takes a
(sample, unit) population with a ``session`` coordinate along the sample dim (or a mapping
``{session: population}`` whose units are matched), streams over sample chunks the way the other
population analyses do, and returns session x session results. Unit ids of a model are identical
across sessions, so the comparisons are exact; for real data, pass only tracked cells.
"""

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import check_int
from netphys.errors import FitRangeWarning
from netphys.population._alignment import subspace_alignment
from netphys.population._drift import tuning_drift
from netphys.population._persistence import concept_persistence
from netphys.population._powerlaw import _check_fit_range, short_fits_caught
from netphys.population._session_common import (
    _check_session_finite,
    _session_coords,
    _session_population,
)
from netphys.population._spectra import eigenspectrum
from netphys.population._svca import split_units, svca

__all__ = ["concept_persistence", "spectrum_over_sessions", "subspace_alignment", "tuning_drift"]


# ----------------------------------------------------------------------------- spectra ----
def spectrum_over_sessions(
    activity: Any,
    *,
    n_components: int = 64,
    fit_range: tuple[int, int] = (2, 50),
    condition: str | None = "stimulus",
    sessions: Sequence[Any] | None = None,
    reliable: bool = True,
    block_length: int = 1,
    min_svca_frames: int = 40,
    chunk_size: int | None = None,
    progress: bool | None = None,
    rng: Any = 0,
) -> xr.Dataset:
    """Fit PCA (and SVCA) power-law spectra in every session.

    Units constant within a session (dead ReLUs) are left out of that session's spectra.

    Parameters
    ----------
    activity : xarray.DataArray with dims (sample, 'unit'), or dict {session: DataArray}
        Population with a ``session`` coordinate along the sample dim (numpy or dask).
    n_components : int, default=64
        Components per spectrum (fewer where a session's frames or units do not allow them;
        the rest are NaN).
    fit_range : tuple of int, default=(2, 50)
        1-based components of the power-law fits.
    condition : str or None, default="stimulus"
        Keep only frames with this ``condition`` (ignored without that coord); None keeps all.
    sessions : sequence or None, default=None
        Session ids; None means all, sorted. One session is allowed.
    reliable : bool, default=True
        Also run :func:`netphys.population._svca` in sessions with at least
        ``min_svca_frames`` frames (NaN elsewhere).
    block_length : int, default=1
        SVCA train/test block length (1 for i.i.d. stimuli).
    min_svca_frames : int, default=40
        Fewest frames a session needs for SVCA.
    chunk_size : int or None, default=None
        Samples per chunk; None uses dask chunks or about 64 MiB.
    progress : bool or None, default=None
        Show progress bars; None shows them only for large inputs.
    rng : int, numpy.random.Generator or None, default=0
        Seed of the SVCA splits (the same seed for every session).

    Returns
    -------
    xarray.Dataset
        Along (session, component): ``pca_variance``, ``pca_explained_variance_ratio``,
        ``svca_reliable_variance``, ``svca_reliable_fraction``. Along session: ``pca_alpha``,
        ``pca_r2``, ``svca_alpha``, ``svca_r2``, ``reliable_fraction`` (reliable over total
        variance, summed over the SVCs), ``n_frames``, ``n_active_units``.

    Raises
    ------
    ValueError
        Without a ``session`` coordinate, or with unmatched (NaN) units.

    Warns
    -----
    FitRangeWarning
        (a ``NetphysWarning``) once per call when any session's PCA or SVCA power-law fit used
        fewer components than ``fit_range`` asks for (see :func:`svca`); the message names the
        sessions and gives the first three sessions' details.

    Examples
    --------
    >>> import xarray as xr
    >>> from netphys.population import simulate_population
    >>> a = simulate_population(80, 200, alpha=1.0, snr=10.0, rng=0)["activity"]
    >>> b = simulate_population(80, 200, alpha=2.0, snr=10.0, rng=1)["activity"]
    >>> res = spectrum_over_sessions({0: a, 1: b}, n_components=30, fit_range=(2, 20))
    >>> res["pca_alpha"].values.round(0)
    array([1., 2.])
    """
    func = "spectrum_over_sessions"
    k_req = check_int(n_components, func=func, name="n_components", minimum=1)
    fit = _check_fit_range(fit_range, func=func)
    min_svca_frames = check_int(min_svca_frames, func=func, name="min_svca_frames", minimum=4)
    block_length = check_int(block_length, func=func, name="block_length", minimum=1)
    da, ids, rows = _session_population(
        activity, func=func, sessions=sessions, condition=condition, min_sessions=1
    )
    dim = da.dims[0]
    n_s = len(ids)
    pvar = np.full((n_s, k_req), np.nan)
    pratio = np.full((n_s, k_req), np.nan)
    rvar = np.full((n_s, k_req), np.nan)
    rfrac = np.full((n_s, k_req), np.nan)
    scalars = {name: np.full(n_s, np.nan) for name in
               ("pca_alpha", "pca_r2", "svca_alpha", "svca_r2", "reliable_fraction")}  # fmt: skip
    n_frames, n_active = np.zeros(n_s, int), np.zeros(n_s, int)
    notes: list[str] = []
    for i, (sid, r) in enumerate(zip(ids.tolist(), rows, strict=True)):
        with short_fits_caught(notes, prefix=f"session {sid}: "):
            sub = da.isel({dim: r})
            _check_session_finite(sub, func, sid, chunk_size)
            sd = np.asarray(sub.std(str(dim)).values)
            sub = sub.isel(unit=np.flatnonzero(sd > 0))
            n_frames[i], n_active[i] = sub.shape
            if n_active[i] < 2 or n_frames[i] < 3:
                continue
            k = min(k_req, n_active[i], n_frames[i] - 1)
            spec = eigenspectrum(sub, n_components=k, fit_range=fit, chunk_size=chunk_size,
                                 progress=progress)  # fmt: skip
            pvar[i, :k] = spec["variance"].values
            pratio[i, :k] = spec["explained_variance_ratio"].values
            scalars["pca_alpha"][i] = float(spec["alpha"])
            scalars["pca_r2"][i] = float(spec["r2"])
            if not reliable or n_frames[i] < min_svca_frames:
                continue
            n_blocks = -(-int(n_frames[i]) // block_length)
            n_train = min(int(np.ceil(n_blocks * 0.5)) * block_length, int(n_frames[i]))
            sets, _ = split_units(sub, rng=np.random.default_rng(0), func=func)
            ks = min(k_req, int((sets == 1).sum()), int((sets == 2).sum()), n_train - 2)
            if ks < 1:
                continue
            res = svca(sub, n_components=ks, block_length=block_length, fit_range=fit,
                       chunk_size=chunk_size, progress=progress, rng=rng)  # fmt: skip
            ks = res.sizes["component"]
            rvar[i, :ks] = res["reliable_variance"].values
            rfrac[i, :ks] = res["reliable_fraction"].values
            scalars["svca_alpha"][i] = float(res["alpha"])
            scalars["svca_r2"][i] = float(res["r2"])
            scalars["reliable_fraction"][i] = float(
                res["reliable_variance"].sum() / res["total_variance"].sum()
            )
    _warn_sessions_cut_short(notes, n_s, func)
    coords: dict[str, Any] = {"session": ids, "component": np.arange(1, k_req + 1)}
    for name, vals in _session_coords(da, ids, rows).items():
        coords[name] = ("session", vals)
    variables: dict[str, Any] = {
        "pca_variance": (("session", "component"), pvar),
        "pca_explained_variance_ratio": (("session", "component"), pratio),
        "svca_reliable_variance": (("session", "component"), rvar),
        "svca_reliable_fraction": (("session", "component"), rfrac),
        "n_frames": (("session",), n_frames),
        "n_active_units": (("session",), n_active),
    }
    variables.update({name: (("session",), v) for name, v in scalars.items()})
    return xr.Dataset(
        variables, coords=coords,
        attrs={"method": func, "fit_start": fit[0], "fit_stop": fit[1],
               "condition": "all" if condition is None else str(condition)},
    )  # fmt: skip


def _warn_sessions_cut_short(notes: list[str], n_sessions: int, func: str) -> None:
    """One warning for every session whose power-law fit was cut short (or gave NaN)."""
    if not notes:
        return
    more = f" (and {len(notes) - 3} more)" if len(notes) > 3 else ""
    warnings.warn(
        f"{func}(): {len(notes)} power-law fit(s) over {n_sessions} session(s) used fewer "
        f"components than `fit_range` asked for{more}; " + " | ".join(notes[:3]),
        FitRangeWarning,
        stacklevel=3,
    )
