"""SVCA numerics: the fit of the train cross-covariance and the projection of test frames.

Four routes to the top singular triplets of the train cross-covariance ``C = Aᵀ B`` (A, B the
centred train frames of unit sets 1 and 2, shape (T, N1) and (T, N2)):

- ``dense``: form C (float64, one pass over sample chunks) and take the eigendecomposition of
  the smaller of ``C Cᵀ`` and ``Cᵀ C``. Exact.
- ``gram``: when there are fewer train frames than units, work in the frames x frames space:
  with ``A Aᵀ = E_a L_a E_aᵀ`` and ``B Bᵀ = E_b L_b E_bᵀ``, C has the singular values of the
  small core ``M = (E_a L_a^½)ᵀ (E_b L_b^½)`` and ``U = Aᵀ E_a L_a^-½ U_M`` (likewise V).
  Exact (C is never formed; memory O(T² + N·k)).
- ``randomized``: a randomized SVD (Halko et al. 2011) of C, formed in memory when it fits in
  the budget, else of the implicit product (streaming passes, memory O(N·k)).

Every pass is a reduction over sample chunks (:func:`reduce_sample_chunks`), so with a
``dask.distributed`` client and a dask-backed recording the passes run on the workers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
import xarray as xr

from netphys._validation import check_finite
from netphys.population._stream import (
    assemble_rows,
    fits_on_workers,
    is_lazy,
    iter_sample_chunks,
    reduce_sample_chunks,
    top_eigh,
)

__all__ = ["fit_svca", "project_svca"]


def _first_row(da: xr.DataArray) -> np.ndarray:
    first = next(iter_sample_chunks(da, chunk_size=1))[2][0]
    # NaN/inf in this row is reported by the statistics pass
    return np.where(np.isfinite(first), first, 0.0)


def _stats_kernel(
    start: int, stop: int, block: np.ndarray, *, is_train: np.ndarray, shift: np.ndarray
) -> dict[str, Any]:
    """Finite check, unit min/max over all rows, and train sums (shifted)."""
    check_finite(block, func="svca", offset=(start, 0))
    x = block[is_train[start:stop]] - shift
    return {"min": block.min(axis=0), "max": block.max(axis=0), "sum": x.sum(axis=0)}


def _cov_kernel(
    start: int,
    stop: int,
    block: np.ndarray,
    *,
    is_train: np.ndarray,
    shift: np.ndarray,
    idx1: np.ndarray,
    idx2: np.ndarray,
) -> dict[str, Any]:
    out = _stats_kernel(start, stop, block, is_train=is_train, shift=shift)
    x = block[is_train[start:stop]] - shift
    out["cov"] = x[:, idx1].T @ x[:, idx2]
    return out


def _times_c_kernel(
    start: int,
    stop: int,
    block: np.ndarray,
    *,
    is_train: np.ndarray,
    mean: np.ndarray,
    idx_in: np.ndarray,
    idx_out: np.ndarray,
    mat: np.ndarray,
) -> dict[str, Any]:
    """``X_outᵀ (X_in @ mat)`` over the centred train rows of one chunk."""
    x = block[is_train[start:stop]] - mean
    return {"out": x[:, idx_out].T @ (x[:, idx_in] @ mat)}


def _top_svd_dense(cov: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k singular triplets of ``cov`` via the eigendecomposition of the smaller Gram."""
    n1, n2 = cov.shape
    small = cov @ cov.T if n1 <= n2 else cov.T @ cov
    evals, evecs = top_eigh(small, k)
    sv = np.sqrt(np.clip(evals, 0, None))
    safe = np.where(sv > 0, sv, 1.0)
    if n1 <= n2:
        u = evecs
        v = (cov.T @ u) / safe
    else:
        v = evecs
        u = (cov @ v) / safe
    v[:, sv == 0] = 0.0
    u[:, sv == 0] = 0.0
    return u, sv, v


#: Default extra random vectors of the randomized SVD beyond the requested components.
DEFAULT_OVERSAMPLES = 128


def _lu_normalise(mat: np.ndarray) -> np.ndarray:
    """Basis of the column span of ``mat`` (the permuted L of its LU, as scikit-learn does).

    Cheaper than a QR (a blocked LU runs at matrix-product speed where Householder QR is
    bound by memory) and enough to keep power iterations from collapsing onto the top vector.
    """
    return np.asarray(scipy.linalg.lu(mat, permute_l=True, check_finite=False)[0])


def _orthonormalise(mat: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the column span of a float64 ``mat`` (CholeskyQR after an LU).

    A second CholeskyQR pass runs only when the first leaves ``QᵀQ`` more than 1e-10 from
    the identity (CholeskyQR2); Householder QR when the Gram matrix is not positive definite
    or the columns are still not orthonormal to 1e-10.
    """
    q = _lu_normalise(mat)
    eye = np.eye(q.shape[1])
    gram = q.T @ q
    try:
        for _ in range(2):
            r = scipy.linalg.cholesky(gram, lower=False, check_finite=False)
            q = scipy.linalg.solve_triangular(r, q.T, trans="T", check_finite=False).T
            gram = q.T @ q
            if np.abs(gram - eye).max() < 1e-10:
                return np.ascontiguousarray(q)
    except np.linalg.LinAlgError:
        pass
    return np.linalg.qr(mat)[0]


def randomized_svd(
    apply: Any,
    apply_t: Any,
    n_rows: int,
    n_cols: int,
    k: int,
    n_oversamples: int | None,
    n_power_iter: int,
    gen: np.random.Generator,
    final: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compute the Halko et al. (2011) randomized SVD of an operator.

    The operator is given by ``apply(M) = C M`` and ``apply_t(M) = Cᵀ M``. The range of C is
    sampled with ``k + n_oversamples`` random vectors (None: 128) and
    refined by ``n_power_iter`` LU-normalised power iterations; the basis is then made
    orthonormal in float64 and the top ``k`` triplets come from the exact SVD of ``Qᵀ C``
    (via its small Gram matrix). ``final`` (default ``apply_t``) computes ``Cᵀ Q`` for that
    last step (float64 there when the passes are float32).
    """
    extra = DEFAULT_OVERSAMPLES if n_oversamples is None else n_oversamples
    width = min(k + extra, n_rows, n_cols)
    q = apply(gen.standard_normal((n_cols, width)))
    for _ in range(n_power_iter):
        q = apply(_lu_normalise(apply_t(_lu_normalise(q))))
    q = _orthonormalise(np.asarray(q, dtype=np.float64))
    core_t = np.asarray((final or apply_t)(q), dtype=np.float64)
    uc, sv, v = _top_svd_dense(core_t.T, min(k, width))
    return q @ uc, sv, v


def _gram_svd(
    da: xr.DataArray, is_train: np.ndarray, idx: tuple[np.ndarray, np.ndarray],
    mean: np.ndarray, k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact top-k SVD of ``C = Aᵀ B`` in the frames x frames space (see module notes)."""
    rows = np.flatnonzero(is_train)
    if is_lazy(da):
        import dask

        x = da.data[rows].astype(np.float64)
        a, b = x[:, idx[0]] - mean[idx[0]], x[:, idx[1]] - mean[idx[1]]
        ga, gb = dask.compute(a @ a.T, b @ b.T)
    else:
        x = np.asarray(da.values[rows], dtype=np.float64)
        a, b = x[:, idx[0]] - mean[idx[0]], x[:, idx[1]] - mean[idx[1]]
        ga, gb = a @ a.T, b @ b.T
    factors = []
    for g in (ga, gb):
        evals, evecs = np.linalg.eigh(g)
        keep = evals > evals.max() * 1e-12 if evals.max() > 0 else np.zeros(len(evals), bool)
        factors.append((evecs[:, keep], np.sqrt(evals[keep])))
    (ea, la), (eb, lb) = factors
    um, sv, vmt = np.linalg.svd((ea * la).T @ (eb * lb), full_matrices=False)
    k = min(k, len(sv))
    wa = (ea / la) @ um[:, :k]
    wb = (eb / lb) @ vmt[:k].T
    if is_lazy(da):
        u, v = dask.compute(a.T @ wa, b.T @ wb)
    else:
        u, v = a.T @ wa, b.T @ wb
    return np.asarray(u), sv[:k], np.asarray(v)


def fit_svca(
    da: xr.DataArray,
    is_train: np.ndarray,
    idx1: np.ndarray,
    idx2: np.ndarray,
    *,
    solver: str,
    k: int,
    max_cov_bytes: int,
    n_oversamples: int | None,
    n_power_iter: int,
    gen: np.random.Generator,
    chunk_size: int | None,
    progress: bool | None,
    fixed_mean: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fit SVCA on the train frames, centred on ``fixed_mean`` when given.

    Returns unit ``stats``, ``mean`` and either ``cov``
    (dense route, decomposed by the caller after dropping constant units) or ``u``, ``sv``,
    ``v`` for the top ``k`` components.
    """
    shift = _first_row(da) if fixed_mean is None else fixed_mean
    n_train = int(is_train.sum())
    opts: dict[str, Any] = {
        "chunk_size": chunk_size, "progress": progress, "is_train": is_train, "shift": shift
    }
    cov_bytes = len(idx1) * len(idx2) * 8
    # on a cluster, the partial cross-covariances of the reduction must fit on each worker
    form_cov = solver == "dense" or (
        solver == "randomized" and cov_bytes <= max_cov_bytes and fits_on_workers(cov_bytes, da)
    )
    if form_cov:
        part = reduce_sample_chunks(da, _cov_kernel, desc="svca fit", idx1=idx1, idx2=idx2, **opts)
    else:
        part = reduce_sample_chunks(da, _stats_kernel, desc="svca stats", **opts)
    m = part["sum"] / n_train if fixed_mean is None else np.zeros_like(shift)
    mean = shift + m
    out: dict[str, Any] = {"stats": {"min": part["min"], "max": part["max"]}, "mean": mean}
    if form_cov:
        cov = part["cov"] - n_train * np.outer(m[idx1], m[idx2])
        if solver == "dense":
            out["cov"] = cov
            return out
        # float32 products (2x faster); the range is refined in float64 by the final pass
        c32 = cov.astype(np.float32)
        u, sv, v = randomized_svd(
            lambda mat: c32 @ mat.astype(np.float32), lambda mat: c32.T @ mat.astype(np.float32),
            len(idx1), len(idx2), k, n_oversamples, n_power_iter, gen,
            final=(lambda mat: cov.T @ mat),
        )
    elif solver == "gram":
        u, sv, v = _gram_svd(da, is_train, (idx1, idx2), mean, k)
    else:

        def times(mat: np.ndarray, transpose: bool) -> np.ndarray:
            src, dst = (idx1, idx2) if transpose else (idx2, idx1)
            res = reduce_sample_chunks(
                da, _times_c_kernel, chunk_size=chunk_size, progress=progress,
                desc="svca pass", rows=is_train, is_train=is_train, mean=mean,
                idx_in=src, idx_out=dst, mat=mat,
            )
            return np.asarray(res["out"])

        u, sv, v = randomized_svd(
            lambda mat: times(mat, False), lambda mat: times(mat, True), len(idx1), len(idx2),
            k, n_oversamples, n_power_iter, gen,
        )
    out.update(u=u, sv=sv, v=v)
    return out


def decompose_dense(cov: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact top-k singular triplets of a formed cross-covariance."""
    return _top_svd_dense(cov, k)


def _project_kernel(
    start: int,
    stop: int,
    block: np.ndarray,
    *,
    is_test: np.ndarray,
    mean: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    idx1: np.ndarray,
    idx2: np.ndarray,
    keep: bool,
) -> dict[str, Any]:
    sel = is_test[start:stop]
    x = (block if keep else block[sel]) - mean
    p1, p2 = x[:, idx1] @ u, x[:, idx2] @ v
    out: dict[str, Any] = {}
    if keep:
        out["rows1"], out["rows2"] = [(start, p1)], [(start, p2)]
        p1, p2 = p1[sel], p2[sel]
    out["reliable"] = np.einsum("tk,tk->k", p1, p2)
    out["total1"] = np.einsum("tk,tk->k", p1, p1)
    out["total2"] = np.einsum("tk,tk->k", p2, p2)
    return out


def project_svca(
    da: xr.DataArray,
    u: np.ndarray,
    v: np.ndarray,
    idx: tuple[np.ndarray, np.ndarray],
    mean: np.ndarray,
    is_test: np.ndarray,
    *,
    keep_projections: bool,
    chunk_size: int | None,
    progress: bool | None,
) -> dict[str, Any]:
    """Compute the reliable and total variance per SVC on the test frames.

    Optionally also the SVC time
    courses of every frame).
    """
    part = reduce_sample_chunks(
        da, _project_kernel, rows=None if keep_projections else is_test,
        chunk_size=chunk_size, progress=progress, desc="svca test", is_test=is_test,
        mean=mean, u=u, v=v, idx1=idx[0], idx2=idx[1], keep=keep_projections,
    )
    n_test = int(is_test.sum())
    n = da.shape[0]
    return {
        "reliable": part["reliable"] / n_test,
        "total": (part["total1"] + part["total2"]) / (2 * n_test),
        "proj1": assemble_rows(part["rows1"], n) if keep_projections else None,
        "proj2": assemble_rows(part["rows2"], n) if keep_projections else None,
    }
