"""Alignment of the top PCA or SVCA subspaces between sessions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg
import xarray as xr

from netphys._validation import (
    as_rng,
    check_choice,
    check_int,
)
from netphys.population._session_common import (
    _check_session_finite,
    _nonfinite_error,
    _session_coords,
    _session_population,
)
from netphys.population._spectra import _covariance, _gram
from netphys.population._stream import iter_sample_chunks, iter_unit_chunks, reduce_sample_chunks
from netphys.population._svca import split_time_blocks, split_units
from netphys.population._svca_engine import decompose_dense as _top_svd_dense

__all__ = ["subspace_alignment"]


# -------------------------------------------------------------------------- alignment ----
def _pca_basis(
    sub: xr.DataArray,
    k: int,
    chunk_size: int | None,
    progress: bool | None,
    func: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Compute the top-k PCA eigenvalues, basis, unit means and total variance of a session.

    Uses the basis (N, k) in unit space, via the
    smaller of the unit covariance (streamed over frames) and the frame Gram matrix (streamed
    over units).
    """
    n, n_u = sub.shape
    if n_u <= n:
        cov, mean = _covariance(sub, chunk_size, progress, func)
        m = cov.shape[0]
        evals, vecs = scipy.linalg.eigh(cov, subset_by_index=[m - k, m - 1])
        return evals[::-1], vecs[:, ::-1], mean, float(np.trace(cov))
    gram = _gram(sub, chunk_size, progress, func)
    evals, u = scipy.linalg.eigh(gram, subset_by_index=[n - k, n - 1])
    evals, u = evals[::-1], u[:, ::-1]
    scale = np.sqrt(np.clip(evals, 1e-300, None) * max(n - 1, 1))
    basis, mean = np.zeros((n_u, k)), np.zeros(n_u)
    for start, stop, block in iter_unit_chunks(sub, unit_axis=1, chunk_size=chunk_size):
        mean[start:stop] = block.mean(axis=0)
        basis[start:stop] = (block - mean[start:stop]).T @ u / scale
    return evals, basis, mean, float(np.trace(gram))


def _along_kernel(
    start: int, stop: int, block: np.ndarray, *, mean: np.ndarray, basis: np.ndarray
) -> dict[str, Any]:
    """Sum of squared projections of one chunk's centred frames on every basis vector."""
    return {"acc": (((block - mean) @ basis) ** 2).sum(axis=0)}


def _reliable_kernel(
    start: int, stop: int, block: np.ndarray, *, is_test: np.ndarray,
    idx: tuple[np.ndarray, np.ndarray], means: tuple[np.ndarray, np.ndarray],
    bases: tuple[np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """Sum over one chunk's test frames of the products of the two sets' SVC projections."""
    b = block[is_test[start:stop]]
    p1 = (b[:, idx[0]] - means[0]) @ bases[0]
    p2 = (b[:, idx[1]] - means[1]) @ bases[1]
    return {"acc": (p1 * p2).sum(axis=0)}


def _cross_kernel(
    start: int, stop: int, block: np.ndarray, *, is_train: np.ndarray,
    idx: tuple[np.ndarray, np.ndarray], func: str, sid: Any,
) -> dict[str, Any]:
    """Train sums and cross-products of the two unit sets in one chunk."""
    if not np.isfinite(block).all():
        raise _nonfinite_error(func, sid, block)
    bl = block[is_train[start:stop]]
    a, b = bl[:, idx[0]], bl[:, idx[1]]
    return {"s1": a.sum(0), "s2": b.sum(0), "cross": a.T @ b}


def _angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles (degrees, ascending) between the column spaces of a and b."""
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    cos = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)
    return np.degrees(np.arccos(np.sort(cos)[::-1]))


def subspace_alignment(
    activity: Any,
    *,
    n_components: int = 10,
    method: str = "pca",
    condition: str | None = "stimulus",
    sessions: Sequence[Any] | None = None,
    split: str = "auto",
    block_length: int = 1,
    train_fraction: float = 0.5,
    chunk_size: int | None = None,
    progress: bool | None = None,
    rng: Any = 0,
) -> xr.Dataset:
    """Compare the top PCA or SVCA subspaces of every pair of sessions.

    For each session, the top ``n_components`` principal components (PCA), or the top shared
    variance components of two fixed unit sets (SVCA, fitted on the session's train frames),
    span a subspace of unit space. Between sessions this returns the principal angles of the
    subspaces and how much of session A's variance (reliable variance on A's test frames, for
    SVCA) session B's components capture, relative to what A's own components capture.

    Parameters
    ----------
    activity : xarray.DataArray with dims (sample, 'unit'), or dict {session: DataArray}
        Population with a ``session`` coordinate along the sample dim (numpy or dask).
    n_components : int, default=10
        Dimension of each session's subspace.
    method : {"pca", "svca"}, default="pca"
        Subspace of each session.
    condition : str or None, default="stimulus"
        Keep only frames with this ``condition`` (ignored without that coord); None keeps all.
    sessions : sequence or None, default=None
        Session ids (two, or more for all pairs); None means all, sorted.
    split : {"auto", "checkerboard", "strips", "random"}, default="auto"
        SVCA unit split (the same for all sessions), see :func:`netphys.population.split_units`.
    block_length : int, default=1
        SVCA train/test blocks of consecutive frames (1 for i.i.d. stimuli).
    train_fraction : float, default=0.5
        SVCA fraction of each session's blocks used to fit the components.
    chunk_size : int or None, default=None
        Samples per chunk; None uses dask chunks or about 64 MiB.
    progress : bool or None, default=None
        Show progress bars; None shows them only for large inputs.
    rng : int, numpy.random.Generator or None, default=0
        Randomness of the SVCA unit and time splits.

    Returns
    -------
    xarray.Dataset
        ``principal_angle`` (session_a, session_b, angle) in degrees, ascending (for SVCA the
        mean of the angles of the two unit sets); ``mean_cos2`` (session_a, session_b) mean
        squared cosine of the angles (1: same subspace, 0: orthogonal);
        ``component_variance`` (session_a, session_b, component) variance of session A's frames
        along session B's components (reliable variance for SVCA); ``captured_variance``
        (session_a, session_b) their sum over the sum along A's own components (for SVCA it
        can exceed 1: A's own components are fitted on half of A's frames, and another
        session's may generalise better to A's test frames); for PCA,
        ``explained_variance`` (session_a, session_b) the same sum over A's total variance and
        ``total_variance`` (session).

    Raises
    ------
    ValueError
        Without a ``session`` coordinate, with fewer than two sessions, with unmatched units,
        or with more components than a session's frames (or SVCA train frames) allow.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> rng = np.random.default_rng(0)
    >>> q = np.linalg.qr(rng.normal(size=(40, 4)))[0]
    >>> x = np.concatenate([rng.normal(size=(200, 2)) * 5 @ q[:, :2].T,
    ...                     rng.normal(size=(200, 2)) * 5 @ q[:, 2:].T])
    >>> act = xr.DataArray(x + 0.1 * rng.normal(size=x.shape), dims=("time", "unit"),
    ...                    coords={"session": ("time", np.repeat([0, 1], 200))})
    >>> res = subspace_alignment(act, n_components=2)
    >>> res["principal_angle"].sel(session_a=0, session_b=1).values.round(-1)
    array([90., 90.])
    """
    func = "subspace_alignment"
    method = check_choice(method, ("pca", "svca"), func=func, name="method")
    k = check_int(n_components, func=func, name="n_components", minimum=1)
    da, ids, rows = _session_population(
        activity, func=func, sessions=sessions, condition=condition, min_sessions=2
    )
    dim = da.dims[0]
    n_s, n_u = len(ids), da.sizes["unit"]
    subs = [da.isel({dim: r}) for r in rows]
    for sid, sub in zip(ids.tolist(), subs, strict=True):
        limit = min(n_u, sub.shape[0] - 1)
        if method == "pca" and k > limit:
            raise ValueError(
                f"{func}(): `n_components`={k} exceeds min(units={n_u}, frames - 1="
                f"{sub.shape[0] - 1}) = {limit} in session {sid!r}. Ask for at most {limit}."
            )
    variables: dict[str, Any] = {}
    if method == "pca":
        bases, own, totals, means = [], [], [], []
        for sid, sub in zip(ids.tolist(), subs, strict=True):
            _check_session_finite(sub, func, sid, chunk_size)
            ev, basis, mean, total = _pca_basis(sub, k, chunk_size, progress, func)
            bases.append(basis)
            own.append(ev)
            totals.append(total)
            means.append(mean)
        allb = np.concatenate(bases, axis=1)
        comp = np.zeros((n_s, n_s, k))
        for a, sub in enumerate(subs):
            acc = reduce_sample_chunks(
                sub, _along_kernel, chunk_size=chunk_size, mean=means[a], basis=allb
            )["acc"]
            comp[a] = (acc / max(sub.shape[0] - 1, 1)).reshape(n_s, k)
        angles = np.stack([np.stack([_angles(ba, bb) for bb in bases]) for ba in bases])
        tot = np.asarray(totals)
        with np.errstate(divide="ignore", invalid="ignore"):
            variables["explained_variance"] = (
                ("session_a", "session_b"), comp.sum(-1) / tot[:, None],
                {"long_name": "variance of A along B's components / A's total variance"},
            )  # fmt: skip
        variables["total_variance"] = (("session",), tot)
    else:
        comp, angles = _svca_alignment(
            da, subs, ids, k, split, block_length, train_fraction, chunk_size, progress, func, rng
        )
    own_sum = np.einsum("aak->a", comp)
    with np.errstate(divide="ignore", invalid="ignore"):
        captured = comp.sum(-1) / own_sum[:, None]
    cos2 = np.mean(np.cos(np.radians(angles)) ** 2, axis=-1)
    coords: dict[str, Any] = {
        "session": ids, "session_a": ids, "session_b": ids,
        "component": np.arange(1, k + 1), "angle": np.arange(1, k + 1),
    }  # fmt: skip
    for name, vals in _session_coords(da, ids, rows).items():
        coords[name] = ("session", vals)
    variables.update(
        {
            "principal_angle": (
                ("session_a", "session_b", "angle"), angles, {"units": "degree"}
            ),
            "mean_cos2": (("session_a", "session_b"), cos2),
            "component_variance": (("session_a", "session_b", "component"), comp),
            "captured_variance": (
                ("session_a", "session_b"), captured,
                {"long_name": "variance of A along B's components / along A's own"},
            ),
        }
    )  # fmt: skip
    attrs = {"method": method, "n_components": k,
             "condition": "all" if condition is None else str(condition)}  # fmt: skip
    if method == "svca":
        attrs.update(block_length=int(block_length), train_fraction=float(train_fraction))
    return xr.Dataset(variables, coords=coords, attrs=attrs)




def _svca_alignment(
    da: xr.DataArray,
    subs: list[xr.DataArray],
    ids: np.ndarray,
    k: int,
    split: str,
    block_length: int,
    train_fraction: float,
    chunk_size: int | None,
    progress: bool | None,
    func: str,
    rng: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-session SVCA bases on shared unit sets; reliable variance of A along B's SVCs."""
    gen = as_rng(rng, func=func)
    unit_set, _ = split_units(da, split=split, rng=gen, func=func)
    i1, i2 = np.flatnonzero(unit_set == 1), np.flatnonzero(unit_set == 2)
    us, vs, means, tests = [], [], [], []
    for sid, sub in zip(ids.tolist(), subs, strict=True):
        n = sub.shape[0]
        is_train = split_time_blocks(
            n, block_length=block_length, train_fraction=train_fraction, rng=gen, func=func
        )
        n_tr = int(is_train.sum())
        limit = min(len(i1), len(i2), n_tr - 1)
        if k > limit:
            raise ValueError(
                f"{func}(): `n_components`={k} exceeds min(set 1 units={len(i1)}, set 2 units="
                f"{len(i2)}, train frames - 1={n_tr - 1}) = {limit} in session {sid!r}. Ask for "
                f"at most {limit}, or use `method='pca'`."
            )
        if n_tr * (len(i1) + len(i2)) <= len(i1) * len(i2):
            # few train frames: keep them (smaller than the cross-covariance) and take the SVD
            # of C = A'B / n through thin QRs of A' and B' (exact, rank <= n_train)
            train = np.concatenate([
                block[is_train[start:stop]]
                for start, stop, block in iter_sample_chunks(sub, chunk_size=chunk_size,
                                                             rows=is_train)
            ])  # fmt: skip
            if not np.isfinite(train).all():
                raise _nonfinite_error(func, sid, train)
            xa, xb = train[:, i1], train[:, i2]
            m1, m2 = xa.mean(0), xb.mean(0)
            qa, ra = np.linalg.qr((xa - m1).T)
            qb, rb = np.linalg.qr((xb - m2).T)
            um, _, vmt = np.linalg.svd(ra @ rb.T / n_tr)
            u, v = qa @ um[:, :k], qb @ vmt[:k].T
        else:
            part = reduce_sample_chunks(
                sub, _cross_kernel, chunk_size=chunk_size, rows=is_train, progress=progress,
                desc=func, is_train=is_train, idx=(i1, i2), func=func, sid=sid,
            )
            s1, s2, cross = part["s1"], part["s2"], part["cross"]
            m1, m2 = s1 / n_tr, s2 / n_tr
            cross = cross / n_tr - np.outer(m1, m2)
            u, _, v = _top_svd_dense(cross, k)
        us.append(u)
        vs.append(v)
        means.append((m1, m2))
        tests.append(~is_train)
    allu, allv = np.concatenate(us, axis=1), np.concatenate(vs, axis=1)
    n_s = len(ids)
    comp = np.zeros((n_s, n_s, k))
    for a, sub in enumerate(subs):
        acc, n_te = np.zeros(allu.shape[1]), int(tests[a].sum())
        acc = reduce_sample_chunks(
            sub, _reliable_kernel, chunk_size=chunk_size, rows=tests[a], is_test=tests[a],
            idx=(i1, i2), means=means[a], bases=(allu, allv),
        )["acc"]
        comp[a] = (acc / max(n_te, 1)).reshape(n_s, k)
    angles = np.stack([
        np.stack([(_angles(us[a], us[b]) + _angles(vs[a], vs[b])) / 2 for b in range(n_s)])
        for a in range(n_s)
    ])  # fmt: skip
    return comp, angles
