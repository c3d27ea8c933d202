"""Concept significance against a reference population of concepts (the untrained control)."""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["selectivity_vs_reference"]


def _max_selectivity(selectivity: xr.Dataset, func: str, name: str) -> np.ndarray:
    if not isinstance(selectivity, xr.Dataset) or "selectivity" not in selectivity:
        raise TypeError(
            f"{func}(): `{name}` must be the Dataset of concept_selectivity() (with a "
            f"'selectivity' (concept, category) variable); got {type(selectivity).__name__}."
        )
    si = np.asarray(selectivity["selectivity"].values, dtype=float)
    if si.ndim != 2:
        raise ValueError(f"{func}(): `{name}.selectivity` must be 2-D (concept, category).")
    return si.max(axis=1) if si.shape[1] else np.full(si.shape[0], np.nan)


def selectivity_vs_reference(
    selectivity: xr.Dataset, reference: xr.Dataset, *, same: bool = False
) -> xr.DataArray:
    """P-value of each concept's maximal selectivity against a reference set of concepts.

    A label-permutation p-value asks whether a concept prefers a category at all; the inputs
    alone make most concepts of an *untrained* network category-selective too. This asks
    whether a concept is more selective than the concepts of a reference (the re-initialised
    control): ``p = (1 + #{reference concepts with max SI >= s}) / (1 + n_reference)``.

    Parameters
    ----------
    selectivity : xarray.Dataset
        Output of :func:`netphys.population.paths.concept_selectivity` for the tested model.
    reference : xarray.Dataset
        The same for the reference (control) model.
    same : bool, default=False
        ``selectivity`` is the reference itself: each concept is left out of its own
        reference set, so ``p = #{other concepts with max SI >= s} / n_reference`` (about a
        fraction ``alpha`` of the reference's concepts fall below ``alpha``).

    Returns
    -------
    xarray.DataArray
        ``p_value`` along ``concept`` (NaN where a concept has no score); attrs
        ``n_reference``.

    Raises
    ------
    TypeError
        If an argument is not a ``concept_selectivity`` Dataset.
    ValueError
        If the reference has no concept.

    Examples
    --------
    >>> import xarray as xr
    >>> def sel(rows):
    ...     return xr.Dataset({"selectivity": (("concept", "category"), rows)})
    >>> ref = sel([[0.1, 0.0], [0.2, 0.1], [0.3, 0.0]])
    >>> selectivity_vs_reference(sel([[0.9, 0.0], [0.15, 0.1]]), ref).values.tolist()
    [0.25, 0.75]
    """
    func = "selectivity_vs_reference"
    s = _max_selectivity(selectivity, func, "selectivity")
    ref = _max_selectivity(reference, func, "reference")
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        raise ValueError(f"{func}(): `reference` has no scored concept; nothing to compare with.")
    ge = (ref[None, :] >= s[:, None]).sum(axis=1)
    if same:
        p = ge / ref.size  # ge counts the concept itself
    else:
        p = (1.0 + ge) / (1.0 + ref.size)
    p = np.where(np.isfinite(s), p, np.nan).astype(float)
    coords = {"concept": selectivity["concept"].values} if "concept" in selectivity.coords else {}
    return xr.DataArray(
        p, dims=("concept",), coords=coords, name="p_value", attrs={"n_reference": int(ref.size)}
    )
