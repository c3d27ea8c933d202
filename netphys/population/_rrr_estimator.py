"""The reduced-rank regression estimator (scikit-learn style) and its ridge kernel."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from netphys._validation import check_int

__all__ = ["ReducedRankRegression"]


def _rrr_fit(
    x: np.ndarray, y: np.ndarray, lam: float, *, intercept: bool = True
) -> dict[str, np.ndarray]:
    """Closed-form ridge RRR, all ranks at once.

    ``Cxx = cov(X) + lam I``, ``K = Cxx^-1/2``, ``M = Cyx K = D S Cᵀ``; x weights ``b = K C``,
    y weights ``a = D S``; the rank-r prediction is ``(X - x̄) b[:, :r] a[:, :r]ᵀ + ȳ``.
    ``intercept=False`` uses uncentred second moments and no means (the papers' RRR on
    whole-recording-centred data).
    """
    if intercept:
        x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    else:
        x_mean, y_mean = np.zeros(x.shape[1]), np.zeros(y.shape[1])
    xc, yc = x - x_mean, y - y_mean
    denom = max(x.shape[0] - 1, 1)
    return _rrr_from_cov(xc.T @ xc / denom, yc.T @ xc / denom, lam, x_mean, y_mean)


def _rrr_from_cov(
    cxx: np.ndarray, cyx: np.ndarray, lam: float, x_mean: np.ndarray, y_mean: np.ndarray
) -> dict[str, np.ndarray]:
    """Return the RRR solution from the feature covariance ``cxx`` (before ridge) and ``cyx``."""
    cxx = cxx + lam * np.eye(cxx.shape[0])
    evals, evecs = np.linalg.eigh(cxx)
    tol = evals.max(initial=0.0) * cxx.shape[0] * np.finfo(float).eps
    inv_sqrt = np.where(evals > tol, 1.0 / np.sqrt(np.where(evals > tol, evals, 1.0)), 0.0)
    k = (evecs * inv_sqrt) @ evecs.T
    d, s, ct = np.linalg.svd(cyx @ k, full_matrices=False)
    return {"x_mean": x_mean, "y_mean": y_mean, "b": k @ ct.T, "a": d * s, "s": s}


def _rrr_predict(fit: dict[str, np.ndarray], x: np.ndarray, rank: int) -> np.ndarray:
    out: np.ndarray = (x - fit["x_mean"]) @ fit["b"][:, :rank] @ fit["a"][:, :rank].T
    out += fit["y_mean"]
    return out


def _is_dask(data: Any) -> bool:
    """Tell whether ``data`` is a dask array or a dask-backed DataArray."""
    import sys

    if "dask.array" not in sys.modules:
        return False
    import dask.array as dsa

    return isinstance(getattr(data, "data", data), dsa.Array)


# ---------------------------------------------------------------------------- estimator -----
class ReducedRankRegression(RegressorMixin, BaseEstimator):
    """Ridge-regularised reduced-rank regression (scikit-learn estimator).

    Parameters
    ----------
    rank : int or None, default=None
        Rank of the coefficient matrix; None means ``min(n_features, n_targets)`` (plain ridge).
    lam : float, default=0.0
        Ridge added to the feature covariance (in the units of the features' variance).

    Attributes
    ----------
    coef_ : numpy.ndarray of shape (n_targets, n_features) or (n_features,)
        Coefficients of the rank-``rank_`` fit.
    intercept_ : numpy.ndarray of shape (n_targets,) or float
        Intercept.
    rank_ : int
        Rank used.
    x_weights_ : numpy.ndarray of shape (n_features, max_rank)
        Input weights ``b`` (all ranks; the first ``rank_`` are used).
    y_weights_ : numpy.ndarray of shape (n_targets, max_rank)
        Output weights ``a``.
    singular_values_ : numpy.ndarray of shape (max_rank,)
        Singular values of ``Cyx Cxx^-1/2``.
    n_features_in_ : int
        Number of features seen in ``fit``.

    See Also
    --------
    reduced_rank_regression : cross-validated variance explained per rank, labelled.

    Notes
    -----
    With ``Cxx = cov(X) + lam I`` and ``Cyx = cov(Y, X)``, ``K = Cxx^{-1/2}`` and the SVD
    ``Cyx K = D S Cᵀ``, the rank-r prediction is ``(X - x̄) K C_r (D_r S_r)ᵀ + ȳ``; at full
    rank this is ridge regression.

    With dask-backed ``X`` or ``y`` (dask arrays or DataArrays), ``fit`` reads them once in
    sample chunks and fits from their sums (on the workers when a ``dask.distributed`` client
    is current), and ``predict`` of a dask ``X`` returns a lazy dask array.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 5))
    >>> Y = X @ rng.standard_normal((5, 1)) @ rng.standard_normal((1, 4))
    >>> model = ReducedRankRegression(rank=1).fit(X, Y)
    >>> round(model.score(X, Y), 6)
    1.0
    """

    coef_: np.ndarray
    intercept_: Any

    def __init__(self, rank: int | None = None, lam: float = 0.0) -> None:
        self.rank = rank
        self.lam = lam

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: Any, y: Any) -> ReducedRankRegression:
        """Fit the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Predictors.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets.

        Returns
        -------
        ReducedRankRegression
            The fitted estimator.
        """
        if _is_dask(X) or _is_dask(y):
            return self._fit_blockwise(X, y)
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        y2 = y.reshape(len(y), -1).astype(np.float64)
        rank = self._checked_rank(X.shape[1], y2.shape[1])
        return self._store(_rrr_fit(X, y2, float(self.lam)), rank, single=y.ndim == 1)

    def _checked_rank(self, n_features: int, n_targets: int) -> int:
        """Check ``lam`` and ``rank``; return the rank to use."""
        if (
            isinstance(self.lam, bool)
            or not isinstance(self.lam, numbers.Real)
            or not (np.isfinite(self.lam) and self.lam >= 0)
        ):
            raise ValueError(
                f"ReducedRankRegression: `lam` must be a finite number >= 0; got {self.lam!r}."
            )
        max_rank = min(n_features, n_targets)
        if self.rank is None:
            return max_rank
        rank = check_int(self.rank, func="ReducedRankRegression", name="rank", minimum=1)
        if rank > max_rank:
            raise ValueError(
                f"ReducedRankRegression: `rank`={rank} exceeds min(n_features, n_targets) = "
                f"{max_rank}. Use rank <= {max_rank} or rank=None."
            )
        return rank

    def _fit_blockwise(self, X: Any, y: Any) -> ReducedRankRegression:
        """Fit from sums over sample chunks of dask-backed ``X``/``y`` (never loaded whole)."""
        from netphys.population._rrr_moments import fit_moments, sample_moments

        x2, y2 = (getattr(a, "data", a) for a in (X, y))
        single = y2.ndim == 1
        y2 = y2[:, None] if single else y2
        if x2.ndim != 2 or y2.ndim != 2 or len(x2) != len(y2):
            raise ValueError(
                "ReducedRankRegression: `X` must be 2-D and `y` 1-D or 2-D with as many "
                f"samples; got shapes {x2.shape} and {y2.shape}."
            )
        rank = self._checked_rank(x2.shape[1], y2.shape[1])
        (moments,), ref = sample_moments(
            x2, y2, np.ones((1, len(x2)), dtype=bool), func="ReducedRankRegression",
            names=("X", "y"),
        )
        fit = fit_moments(moments, float(self.lam))
        n_x = x2.shape[1]
        fit["x_mean"], fit["y_mean"] = fit["x_mean"] + ref[:n_x], fit["y_mean"] + ref[n_x:]
        self.n_features_in_ = n_x
        return self._store(fit, rank, single=single)

    def _store(self, fit: dict[str, np.ndarray], rank: int, *, single: bool) -> Any:
        """Set the fitted attributes from an all-ranks fit."""
        b, a = fit["b"], fit["a"]
        coef = a[:, :rank] @ b[:, :rank].T
        intercept = fit["y_mean"] - coef @ fit["x_mean"]
        self.coef_ = coef[0] if single else coef
        self.intercept_ = float(intercept[0]) if single else intercept
        self.rank_ = rank
        self.x_weights_, self.y_weights_, self.singular_values_ = b, a, fit["s"]
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predict targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Predictors.

        Returns
        -------
        numpy.ndarray of shape (n_samples,) or (n_samples, n_targets)
            Predictions.
        """
        check_is_fitted(self)
        if _is_dask(X):  # blockwise and lazy: a dask array of predictions
            data = getattr(X, "data", X).astype(np.float64)
            return data @ np.asarray(self.coef_).T + self.intercept_
        X = validate_data(self, X, reset=False, dtype=np.float64)
        coef: np.ndarray = np.asarray(self.coef_)
        intercept: Any = self.intercept_
        out: np.ndarray = X @ coef.T + intercept
        return out


# ---------------------------------------------------------------------------- functions -----
