"""Reduced-rank regression (ridge-regularised; reference ``CanonCor2``) and behaviour → SVCs."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import xarray as xr

from netphys._validation import SAMPLE_DIMS, as_rng, check_int, check_population
from netphys.population._conventions import PAPER, bin_frames, check_convention
from netphys.population._powerlaw import short_fits_caught
from netphys.population._rrr_estimator import ReducedRankRegression, _rrr_fit, _rrr_predict
from netphys.population._rrr_moments import (
    as_lazy_matrix,
    choose_lambdas,
    fit_moments,
    fold_groups,
    residual_products,
    sample_moments,
    scale_source,
    subset,
    targets,
    train_scale,
)
from netphys.population._svca import split_time_blocks
from netphys.population._svca import svca as _svca

__all__ = ["ReducedRankRegression", "reduced_rank_regression", "svca_predict"]

_DEFAULT_LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


# ------------------------------------------------------------------------------- kernel -----
def _as_matrix(data: Any, *, func: str, name: str) -> tuple[np.ndarray, xr.DataArray | None]:
    if isinstance(data, xr.DataArray):
        if data.ndim == 1:
            data = data.expand_dims("feature", axis=1)
        if data.ndim != 2:
            raise ValueError(f"{func}(): `{name}` must be 2-D (sample, feature); got {data.dims}.")
        if data.dims[1] in SAMPLE_DIMS and data.dims[0] not in SAMPLE_DIMS:
            data = data.T
        arr = np.asarray(data.values, dtype=np.float64)
        da = data
    else:
        arr = np.array(data, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ValueError(f"{func}(): `{name}` must be 2-D (sample, feature); got {arr.shape}.")
        da = None
    if not np.isfinite(arr).all():
        raise ValueError(
            f"{func}(): `{name}` contains NaN or inf. Fill or drop those samples first."
        )
    return arr, da


def _check_ranks(ranks: Any, max_rank: int, *, func: str) -> list[int]:
    if ranks is None:
        out = [r for r in (2 ** np.arange(12)).tolist() if r < max_rank] + [max_rank]
        return out
    ranks = [ranks] if isinstance(ranks, numbers.Integral) else list(ranks)
    for r in ranks:
        if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 1:
            raise ValueError(
                f"{func}(): `ranks` must be positive ints; got {r!r}. Use e.g. ranks=[1, 2, 4]."
            )
        if int(r) > max_rank:
            raise ValueError(
                f"{func}(): rank {r} exceeds min(n_source_features, n_targets) = {max_rank}. "
                f"Use ranks <= {max_rank}."
            )
    return sorted({int(r) for r in ranks})


def _check_lambdas(lambdas: Any, *, func: str) -> list[float]:
    lams = [float(v) for v in np.atleast_1d(np.asarray(lambdas, dtype=float))]
    if not lams or any(not np.isfinite(v) or v < 0 for v in lams):
        raise ValueError(f"{func}(): `lambdas` must be finite numbers >= 0; got {lambdas!r}.")
    return lams


def reduced_rank_regression(
    source: Any,
    target: Any,
    *,
    ranks: Any = None,
    lambdas: Any = _DEFAULT_LAMBDAS,
    n_splits: int = 5,
    block_length: int = 1,
    standardize: bool = True,
    rng: Any = 0,
    chunk_size: int | None = None,
    progress: bool | None = None,
) -> xr.Dataset:
    """Cross-validated variance of ``target`` explained by ridge RRR from ``source``, per rank.

    Samples are cut into ``n_splits`` contiguous folds; each fold is tested once with a model
    fitted on the others, whose ridge ``lambda`` (per rank) is chosen on an inner 75/25 split
    of the training samples in blocks of ``block_length``.

    Parameters
    ----------
    source : array-like or xarray.DataArray of shape (n_samples, n_features)
        Predictors (e.g. the model's logits); numpy- or dask-backed.
    target : array-like or xarray.DataArray of shape (n_samples, n_targets)
        Responses (e.g. SVC time courses or units); numpy- or dask-backed.
    ranks : int, sequence of int or None, default=None
        Ranks to evaluate; None means 1, 2, 4, ... and ``min(n_features, n_targets)``.
    lambdas : sequence of float, default=(1e-4, 1e-3, 1e-2, 1e-1, 1.0)
        Ridge values to choose from (relative to unit-variance predictors when ``standardize``).
    n_splits : int, default=5
        Number of contiguous outer folds.
    block_length : int, default=1
        Block length of the inner train/validation split.
    standardize : bool, default=True
        Z-score the predictors with training statistics.
    rng : int, numpy.random.Generator or None, default=0
        Randomness of the inner split.
    chunk_size : int or None, default=None
        Samples per chunk; None uses the dask chunks, or about 64 MiB for numpy input.
    progress : bool or None, default=None
        Show a progress bar over the sample chunks; None shows it on large inputs.

    Returns
    -------
    xarray.Dataset
        Along ``rank``: ``variance_explained`` (pooled over folds); (split, rank):
        ``variance_explained_split``, ``lam``; (rank, target): ``variance_explained_target``.

    Raises
    ------
    ValueError
        On mismatched lengths, NaN/inf, non-positive or too large ranks, negative lambdas or too
        few samples for the folds.

    See Also
    --------
    ReducedRankRegression : the estimator used for each fit.

    Notes
    -----
    The data are read once, in sample chunks: each fold's fits and errors follow from sums
    over its sample groups (``Σx``, ``Σy``, ``Σxxᵀ``, ``Σxyᵀ``, ``Σy²``), so memory holds one
    chunk plus ``2 n_splits`` such sums. With a ``dask.distributed`` client and dask-backed
    inputs the sums are computed on the workers (one task per chunk, tree-reduced); results
    equal the in-memory ones.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((300, 6))
    >>> Y = X @ rng.standard_normal((6, 2)) @ rng.standard_normal((2, 8))
    >>> Y += 0.1 * rng.standard_normal(Y.shape)
    >>> res = reduced_rank_regression(X, Y, ranks=[1, 2, 3], rng=0)
    >>> bool(res["variance_explained"].sel(rank=2) > 0.95)
    True
    """
    func = "reduced_rank_regression"
    x, _ = as_lazy_matrix(source, func=func, name="source")
    y, yda = as_lazy_matrix(target, func=func, name="target")
    if len(x) != len(y):
        raise ValueError(
            f"{func}(): `source` and `target` must have the same number of samples; got "
            f"{len(x)} and {len(y)}."
        )
    n_splits = check_int(n_splits, func=func, name="n_splits", minimum=2)
    block_length = check_int(block_length, func=func, name="block_length", minimum=1)
    if len(x) < 4 * n_splits:
        raise ValueError(
            f"{func}(): {len(x)} samples are too few for `n_splits`={n_splits} (need at least "
            f"{4 * n_splits}). Use fewer splits."
        )
    ranks_l = _check_ranks(ranks, min(x.shape[1], y.shape[1]), func=func)
    lams = _check_lambdas(lambdas, func=func)
    gen = as_rng(rng, func=func)
    groups = fold_groups(len(x), n_splits, block_length, gen, func)
    if chunk_size is not None:
        check_int(chunk_size, func=func, name="chunk_size", minimum=1)
    moments, _ = sample_moments(
        x, y, groups, func=func, chunk_size=chunk_size, progress=progress
    )
    total = moments[0]
    for m in moments[1:n_splits]:
        total = subset(total, m)
    sse = np.zeros((n_splits, len(ranks_l), y.shape[1]))
    sst = np.zeros((n_splits, y.shape[1]))
    chosen = np.zeros((n_splits, len(ranks_l)))
    for f in range(n_splits):
        train = subset(total, moments[f], -1.0)
        sets = [train, subset(train, moments[n_splits + f], -1.0), moments[n_splits + f]]
        sets.append(moments[f])
        if standardize:
            scale = train_scale(train)
            sets = [scale_source(m, scale) for m in sets]
        train, inner, valid, test = sets
        chosen[f] = choose_lambdas(inner, valid, ranks_l, lams)
        fits = {lam: fit_moments(train, lam) for lam in set(chosen[f].tolist())}
        for j, r in enumerate(ranks_l):
            sse[f, j] = residual_products(test, (fits[chosen[f, j]],), r)
        sst[f] = residual_products(test, (fits[chosen[f, 0]],), 0)
    target_dim = str(yda.dims[1]) if yda is not None and yda.ndim == 2 else "target"
    if target_dim in SAMPLE_DIMS:
        target_dim = "target"
    return xr.Dataset(
        {
            "variance_explained": ("rank", 1 - sse.sum(axis=(0, 2)) / sst.sum()),
            "variance_explained_split": (("split", "rank"), 1 - sse.sum(2) / sst.sum(1)[:, None]),
            "lam": (("split", "rank"), chosen),
            "variance_explained_target": (
                ("rank", target_dim),
                1 - sse.sum(axis=0) / np.where(sst.sum(0) > 0, sst.sum(0), np.nan),
            ),
        },
        coords={"rank": ranks_l, "split": np.arange(n_splits)},
        attrs={
            "method": "reduced_rank_regression",
            "n_splits": n_splits,
            "standardize": int(standardize),
            "lambdas": lams,
        },
    )


def _check_svca_result(res: Any, n_samples: int, *, func: str) -> xr.Dataset:
    """Check that ``res`` is an :func:`svca` result with projections for ``n_samples``."""
    if not isinstance(res, xr.Dataset) or "reliable_variance" not in res:
        raise TypeError(
            f"{func}(): `svca` must be the Dataset returned by svca(); got "
            f"{type(res).__name__}. Pass `svca=svca(activity, keep_projections=True)`."
        )
    if "projection_1" not in res:
        raise ValueError(
            f"{func}(): `svca` has no SVC time courses. Fit it with "
            "`svca(activity, keep_projections=True)`."
        )
    if res["projection_1"].shape[0] != n_samples:
        raise ValueError(
            f"{func}(): `svca` was fitted on {res['projection_1'].shape[0]} samples but "
            f"`activity` has {n_samples}. Pass the SVCA result of this `activity`."
        )
    return res


def svca_predict(
    activity: Any,
    behaviour: Any,
    *,
    ranks: Any = None,
    lambdas: Any = _DEFAULT_LAMBDAS,
    n_components: int | None = None,
    block_length: int = 60,
    svca: xr.Dataset | None = None,
    rng: Any = 0,
    convention: str = "netphys",
    **svca_options: Any,
) -> xr.Dataset:
    """Predict the SVC time courses from behaviour and report the reliable variance explained.

    SVCA is fitted on the train samples; for each unit set, RRR from ``behaviour`` to that set's
    SVC time courses is fitted on the train samples (``lambda`` per rank chosen on an inner
    split). On test samples the residuals ``r1 = s1 - ŝ1``, ``r2 = s2 - ŝ2`` give the reliable
    variance left unexplained, ``mean_t r1·r2``; the explained reliable variance is the SVC's
    reliable variance minus that.

    Parameters
    ----------
    activity : numpy.ndarray or xarray.DataArray with dims (sample, 'unit')
        Population activity; numpy- or dask-backed (SVCA reads it in sample chunks, on the
        workers when a ``dask.distributed`` client is current). The regression is fitted from
        sums over sample chunks of ``behaviour`` and the SVC time courses.
    behaviour : array-like or xarray.DataArray of shape (n_samples, n_outputs)
        Behaviour per sample (for a model: its logits), aligned with ``activity``.
    ranks : int, sequence of int or None, default=None
        RRR ranks; None means 1, 2, 4, ... and ``min(n_outputs, n_components)``.
    lambdas : sequence of float, default=(1e-4, 1e-3, 1e-2, 1e-1, 1.0)
        Ridge values (behaviour is z-scored with train statistics).
    n_components : int or None, default=None
        Number of SVCs (see :func:`svca`).
    block_length : int, default=60
        Block length of the SVCA time split and of the inner split.
    svca : xarray.Dataset or None, default=None
        A previous :func:`svca` result of ``activity`` computed with
        ``keep_projections=True``: reused instead of refitting SVCA (its train/test split and
        components are used; ``n_components`` and ``svca_options`` are then ignored). With the
        same ``rng`` and ``block_length`` as the fit, the result equals a refit.
    rng : int, numpy.random.Generator or None, default=0
        Randomness of the splits (the inner lambda split draws from a child stream of
        ``rng``, so it is the same whether SVCA is refitted or reused).
    convention : {"netphys", "paper"}, default="netphys"
        "paper" reproduces ``predictPCsFromAllBeh.m``: activity lagged one frame after
        behaviour, both averaged into 1.2 s bins (when the frame rate is known), SVCA with
        ``convention="paper"``, behaviour z-scored over the whole recording and multiplied by
        10, fixed ``lambda = 0.15`` (``lambdas`` ignored), no intercept, ranks 1, 2, 3, 4, 8,
        ..., 128 (unless ``ranks`` is given). A given ``svca`` must then be fitted on the
        lagged, binned activity.
    **svca_options
        Further options of :func:`svca`.

    Returns
    -------
    xarray.Dataset
        The :func:`svca` variables (without projections), plus along (rank, component):
        ``explained_reliable_variance``, ``explained_fraction`` (of each SVC's reliable
        variance), ``explained_total_fraction`` (of its total variance),
        ``cumulative_explained_fraction`` (cumulative explained over cumulative reliable),
        ``cumulative_explained_total_fraction`` (cumulative explained over cumulative total
        variance: the papers' curve); along ``rank``: ``explained_fraction_128``;
        (rank, unit_set): ``lam``.

    Raises
    ------
    ValueError
        As :func:`svca` and :func:`reduced_rank_regression`, or when ``behaviour`` does not
        match ``activity`` in length.

    Differences from the papers
    ---------------------------
    - lambda: netphys chooses it per rank on an inner split of the training blocks; the
      reference fixes 0.15 (on behaviour z-scored and multiplied by 10), a value picked after
      looking at test results in ``incNeurFacePred.m``.
    - Behaviour scaling: netphys z-scores with train statistics (no test statistic enters the
      fit) and fits an intercept; the reference z-scores over the whole recording, scales by
      10 and fits none.
    - Lag and bins: netphys pairs sample t with sample t; the reference lags activity one
      frame after behaviour and bins to 1.2 s.
    - Summary curves: ``cumulative_explained_fraction`` is over reliable variance; the
      papers plot ``cumulative_explained_total_fraction`` (over total variance).
    - SVCA itself follows ``convention`` (see :func:`svca`).

    Examples
    --------
    >>> from netphys.population import simulate_population
    >>> sim = simulate_population(200, 1200, alpha=1.0, snr=10.0, behaviour_rank=2, rng=0)
    >>> res = svca_predict(sim["activity"], sim["behaviour"], n_components=20, block_length=20)
    >>> bool(res["explained_fraction"].sel(rank=2, component=1) > 0.5)
    True
    """
    func = "svca_predict"
    paper = check_convention(convention, func=func) == "paper"
    gen = as_rng(rng, func=func)
    x, _ = _as_matrix(behaviour, func=func, name="behaviour")
    n_samples = (
        activity.sizes[next(d for d in activity.dims if d != "unit")]
        if isinstance(activity, xr.DataArray) and "unit" in activity.dims
        else np.shape(activity)[0]
    )
    if len(x) != n_samples:
        raise ValueError(
            f"{func}(): `behaviour` has {len(x)} samples but `activity` has {n_samples}. "
            "Align them first (same frames, same order)."
        )
    if paper:
        activity, x = _paper_lag_and_bin(activity, x, func)
        n_samples = len(x)
    inner_gen = gen.spawn(1)[0]
    if svca is None:
        with short_fits_caught():  # only the projections are used, not the exponent
            res = _svca(
                activity,
                n_components=n_components,
                block_length=block_length,
                rng=gen,
                keep_projections=True,
                convention=convention,
                **svca_options,
            )
    else:
        res = _check_svca_result(svca, n_samples, func=func)
    k = res.sizes["component"]
    if paper and ranks is None:
        ranks = [r for r in PAPER["rrr_ranks"] if r <= min(x.shape[1], k)]
    ranks_l = _check_ranks(ranks, min(x.shape[1], k), func=func)
    if paper:
        lambdas = (PAPER["rrr_lambda"],)
    lams = _check_lambdas(lambdas, func=func)
    if paper:
        xs = (x - x.mean(0)) / np.where(x.std(0, ddof=1) > 0, x.std(0, ddof=1), 1.0)
        xs = xs * PAPER["rrr_scale"]
        return _paper_rrr(res, xs, ranks_l, res["is_train"].values)
    unexplained, chosen = _svca_regression(
        res, x, ranks_l, lams, block_length=block_length, gen=inner_gen, func=func
    )
    return _explained(res, unexplained, chosen, ranks_l)


def _svca_regression(
    res: xr.Dataset, x: np.ndarray, ranks_l: list[int], lams: list[float], *,
    block_length: int, gen: np.random.Generator, func: str,
) -> tuple[np.ndarray, np.ndarray]:
    """RRR from behaviour to each set's SVC time courses; unexplained reliable variance.

    Fitted on the train samples (lambda per rank chosen on an inner block split), from sums
    over sample chunks of behaviour and the projections; returns ``mean_t r1·r2`` on the test
    samples per (rank, SVC) and the chosen lambdas per (rank, unit set).
    """
    is_train = res["is_train"].values
    k = res.sizes["component"]
    inner = split_time_blocks(
        int(is_train.sum()),
        block_length=min(block_length, max(1, int(is_train.sum()) // 4)),
        train_fraction=0.75,
        rng=gen,
        func=func,
    )
    valid = np.zeros(len(is_train), dtype=bool)
    valid[np.flatnonzero(is_train)[~inner]] = True
    projections = np.hstack([res["projection_1"].values, res["projection_2"].values])
    moments, _ = sample_moments(
        x, projections, np.stack([is_train & ~valid, valid, ~is_train]), func=func,
        names=("behaviour", "svca projections"), paired=True,
    )
    scale = train_scale(subset(moments[0], moments[1]))
    inner_m, valid_m, test_m = (scale_source(m, scale) for m in moments)
    chosen = np.zeros((len(ranks_l), 2))
    fits: list[dict[float, dict[str, np.ndarray]]] = []
    for s in range(2):
        cols = slice(s * k, (s + 1) * k)
        chosen[:, s] = choose_lambdas(
            targets(inner_m, cols), targets(valid_m, cols), ranks_l, lams
        )
        train_s = targets(subset(inner_m, valid_m), cols)
        fits.append({lam: fit_moments(train_s, lam) for lam in set(chosen[:, s])})
    unexplained = np.stack(
        [
            residual_products(test_m, (fits[0][chosen[j, 0]], fits[1][chosen[j, 1]]), r)
            for j, r in enumerate(ranks_l)
        ]
    ) / int((~is_train).sum())
    return unexplained, chosen


def _explained(
    res: xr.Dataset, unexplained: np.ndarray, chosen: np.ndarray, ranks_l: list[int]
) -> xr.Dataset:
    """Label the explained reliable variance per (rank, SVC)."""
    rel, tot = res["reliable_variance"].values, res["total_variance"].values
    explained = rel[None] - unexplained
    out = res.drop_vars(["projection_1", "projection_2"])
    with np.errstate(divide="ignore", invalid="ignore"):
        out["explained_reliable_variance"] = (("rank", "component"), explained)
        out["explained_fraction"] = (("rank", "component"), explained / rel[None])
        out["explained_total_fraction"] = (("rank", "component"), explained / tot[None])
        out["cumulative_explained_fraction"] = (
            ("rank", "component"),
            np.cumsum(explained, 1) / np.cumsum(rel)[None],
        )
        out["cumulative_explained_total_fraction"] = (
            ("rank", "component"),
            np.cumsum(explained, 1) / np.cumsum(tot)[None],
        )
        out["explained_fraction_128"] = ("rank", explained[:, :128].sum(1) / rel[:128].sum())
    out["lam"] = (("rank", "unit_set_id"), chosen)
    out = out.assign_coords(rank=ranks_l, unit_set_id=[1, 2])
    out.attrs["method"] = "svca_predict"
    return out


def _paper_lag_and_bin(activity: Any, x: np.ndarray, func: str) -> tuple[xr.DataArray, np.ndarray]:
    """Activity one frame after behaviour (``tdelay = 1``), both in 1.2 s bins."""
    da = check_population(activity, func=func, min_samples=4)
    lag = PAPER["rrr_lag"]
    da = da.isel({da.dims[0]: slice(lag, None)})
    x = x[: len(x) - lag]
    da, k = bin_frames(da)
    n = da.shape[0]
    x = x[: n * k].reshape(n, k, -1).mean(axis=1)
    return da, x


def _paper_rrr(
    res: xr.Dataset, xs: np.ndarray, ranks_l: list[int], is_train: np.ndarray
) -> xr.Dataset:
    """Fixed-lambda RRR without intercept, per unit set, on the train bins."""
    lam = PAPER["rrr_lambda"]
    residuals = []
    for name in ("projection_1", "projection_2"):
        y = res[name].values
        fit = _rrr_fit(xs[is_train], y[is_train], lam, intercept=False)
        residuals.append(
            np.stack([y[~is_train] - _rrr_predict(fit, xs[~is_train], r) for r in ranks_l])
        )
    unexplained = np.einsum("rtk,rtk->rk", residuals[0], residuals[1]) / int((~is_train).sum())
    out = _explained(res, unexplained, np.full((len(ranks_l), 2), lam), ranks_l)
    out.attrs["convention"] = "paper"
    return out
