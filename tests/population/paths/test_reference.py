"""selectivity_vs_reference: concept significance against the untrained control's concepts."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from netphys.population.paths import selectivity_vs_reference


def _sel(si: np.ndarray) -> xr.Dataset:
    return xr.Dataset(
        {"selectivity": (("concept", "category"), si)},
        coords={"concept": np.arange(si.shape[0]), "category": np.arange(si.shape[1])},
    )


def test_planted_selective_concepts_stand_out() -> None:
    gen = np.random.default_rng(0)
    ref = _sel(gen.uniform(-1, 0.5, (200, 10)))  # control: max SI below 0.5
    test = _sel(np.r_[gen.uniform(-1, 0.5, (20, 10)), np.full((5, 10), -1.0)])
    test["selectivity"][20:, 3] = 0.95  # five planted, strongly selective concepts
    p = selectivity_vs_reference(test, ref)
    assert (p.values[20:] == 1 / 201).all()
    assert (p.values[:20] > 0.01).mean() > 0.9
    assert p.attrs["n_reference"] == 200


def test_agrees_with_a_direct_count() -> None:
    gen = np.random.default_rng(1)
    ref, test = gen.normal(size=(30, 4)), gen.normal(size=(12, 4))
    p = selectivity_vs_reference(_sel(test), _sel(ref)).values
    r = ref.max(1)
    for i, s in enumerate(test.max(1)):
        assert p[i] == pytest.approx((1 + sum(v >= s for v in r)) / (1 + len(r)))
    own = selectivity_vs_reference(_sel(ref), _sel(ref), same=True).values
    for i, s in enumerate(r):
        others = np.delete(r, i)
        assert own[i] == pytest.approx((1 + sum(v >= s for v in others)) / len(r))
    # the control against itself: about alpha of its concepts fall below alpha
    assert (own < 0.05).sum() <= 2


def test_errors() -> None:
    with pytest.raises(TypeError, match="`reference` must be the Dataset of concept_selectivity"):
        selectivity_vs_reference(_sel(np.zeros((2, 2))), np.zeros((2, 2)))  # type: ignore[arg-type]
    empty = _sel(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="`reference` has no scored concept"):
        selectivity_vs_reference(_sel(np.zeros((2, 2))), empty)
