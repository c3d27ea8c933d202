"""Input checks shared by the public functions of netphys.

This module is the only home of input validation. Kernels assume valid input.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
import xarray as xr

__all__ = [
    "SAMPLE_DIMS",
    "as_rng",
    "check_choice",
    "check_finite",
    "check_fraction",
    "check_int",
    "check_labels",
    "check_magnitude",
    "check_matrix",
    "check_population",
    "check_positive_float",
    "renamed_argument",
]

#: Largest magnitude whose square (variances, correlations) stays finite in float64, with room
#: for sums over many samples: sqrt(float64 max) is about 1.3e154.
MAX_SAFE_MAGNITUDE = 1e150

#: Names accepted for the sample dimension of a population array.
SAMPLE_DIMS = ("time", "stimulus", "trial", "frame", "sample")


def as_rng(rng: Any, *, func: str = "netphys", name: str = "rng") -> np.random.Generator:
    """Turn ``rng`` (None, int or Generator) into a :class:`numpy.random.Generator`.

    netphys has one randomness convention: every function that draws random numbers takes a
    keyword ``rng`` (int seed, Generator or None) and nothing else (no global state). Analyses
    default to ``rng=0``, so the same call gives the same result; pass ``rng=None`` for fresh
    entropy or a Generator to share one stream across calls.

    Parameters
    ----------
    rng : int, numpy.random.Generator, numpy.random.SeedSequence or None
        The seed or generator.
    func, name : str
        Function and argument named in the error message.

    Returns
    -------
    numpy.random.Generator
        ``rng`` itself when it is a Generator, else a new one seeded from it.

    Raises
    ------
    ValueError
        For a negative seed.
    TypeError
        For anything else (a float, a bool, a RandomState).

    Examples
    --------
    >>> as_rng(0).integers(10)
    np.int64(8)
    >>> as_rng(True)
    Traceback (most recent call last):
    ...
    TypeError: netphys(): `rng` must be None, an int seed or a numpy.random.Generator; got the bool True. Pass e.g. `rng=0`.
    """
    if isinstance(rng, (bool, np.bool_)):
        raise TypeError(
            f"{func}(): `{name}` must be None, an int seed or a numpy.random.Generator; got "
            f"the bool {rng!r}. Pass e.g. `{name}=0`."
        )
    if rng is None or isinstance(rng, (numbers.Integral, np.random.SeedSequence)):
        if isinstance(rng, numbers.Integral) and int(rng) < 0:
            raise ValueError(f"{func}(): `{name}` must be a non-negative int seed; got {rng}.")
        return np.random.default_rng(
            None if rng is None else (int(rng) if isinstance(rng, numbers.Integral) else rng)
        )
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(
        f"{func}(): `{name}` must be None, an int seed or a numpy.random.Generator; "
        f"got {type(rng).__name__}. Pass e.g. `{name}=0` or `{name}=np.random.default_rng(0)`."
    )


def check_int(
    value: Any,
    *,
    func: str,
    name: str,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """Check that ``value`` is an integer within [minimum, maximum] and return it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{func}(): `{name}` must be an int; got {type(value).__name__} {value!r}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{func}(): `{name}` must be >= {minimum}; got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{func}(): `{name}` must be <= {maximum}; got {value}.")
    return value


def check_positive_float(value: Any, *, func: str, name: str, allow_zero: bool = False) -> float:
    """Check that ``value`` is a finite positive (or non-negative) real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{func}(): `{name}` must be a number; got {type(value).__name__}.")
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not np.isfinite(value) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{func}(): `{name}` must be finite and {bound}; got {value}.")
    return value


def check_choice(value: Any, choices: tuple[str, ...], *, func: str, name: str) -> str:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(
            f"{func}(): `{name}` must be one of {', '.join(map(repr, choices))}; got {value!r}."
        )
    return str(value)


def check_population(
    data: Any,
    *,
    func: str,
    name: str = "activity",
    min_samples: int = 2,
    min_units: int = 1,
) -> xr.DataArray:
    """Return ``data`` as a 2-D DataArray with dims ``(sample_dim, "unit")``.

    Accepts a numpy array (rows are samples, columns are units), or an xarray DataArray
    (numpy- or dask-backed) with a ``unit`` dim and one other dim. Nothing is loaded or
    copied: dask arrays stay lazy. NaN checks are left to the caller (they need a pass).

    Examples
    --------
    >>> check_population(np.zeros((5, 3)), func="f").dims
    ('time', 'unit')
    """
    if isinstance(data, xr.Dataset):
        raise TypeError(
            f"{func}(): `{name}` must be a DataArray or array, got a Dataset with variables "
            f"{list(data.data_vars)}. Pick one, e.g. `ds['activity']`."
        )
    if isinstance(data, xr.DataArray):
        da = data
        if da.ndim != 2:
            raise ValueError(
                f"{func}(): `{name}` must be 2-D (sample, 'unit'); got dims {da.dims}. "
                "Stack extra dims with `.stack(unit=[...])` or select one with `.isel()`."
            )
        if "unit" not in da.dims:
            raise ValueError(
                f"{func}(): `{name}` needs a 'unit' dim; got dims {da.dims}. "
                "Rename with e.g. `.rename(neuron='unit')`."
            )
        sample_dim = next(d for d in da.dims if d != "unit")
        da = da.transpose(sample_dim, "unit")
    else:
        try:
            arr = np.asarray(data)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise TypeError(
                f"{func}(): `{name}` must be a numpy array or xarray DataArray; "
                f"got {type(data).__name__}."
            ) from exc
        if arr.ndim != 2:
            raise ValueError(
                f"{func}(): `{name}` must be 2-D (samples x units); got shape {arr.shape}."
            )
        da = xr.DataArray(arr, dims=("time", "unit"))
    if np.issubdtype(da.dtype, np.complexfloating):
        raise TypeError(
            f"{func}(): `{name}` must hold real numbers; got complex dtype {da.dtype}. netphys "
            "never drops the imaginary part silently: pass `np.abs(x)` or `x.real` yourself."
        )
    if not np.issubdtype(da.dtype, np.number):
        raise TypeError(f"{func}(): `{name}` must hold real numbers; got dtype {da.dtype}.")
    n_samples, n_units = da.shape
    if n_samples < min_samples:
        raise ValueError(
            f"{func}(): `{name}` needs at least {min_samples} samples along "
            f"'{da.dims[0]}'; got {n_samples}."
        )
    if n_units < min_units:
        raise ValueError(f"{func}(): `{name}` needs at least {min_units} units; got {n_units}.")
    return da


def check_magnitude(
    values: Any, *, func: str, name: str = "activity", limit: float = MAX_SAFE_MAGNITUDE
) -> float:
    """Refuse finite values so large that their squares overflow (NaN correlations).

    Returns the largest finite magnitude found (NaN and inf are left to the caller's NaN
    check). Loads dask-backed data.

    Examples
    --------
    >>> check_magnitude(np.array([1.0, -3.0]), func="f")
    3.0
    >>> check_magnitude(np.array([1e160]), func="f")
    Traceback (most recent call last):
    ...
    ValueError: f(): `activity` holds values up to 1e+160; ...
    """
    arr = np.asarray(values)
    if arr.size == 0 or arr.dtype.kind not in "iuf":
        return 0.0
    # fmax/fmin skip NaN without warnings and without a temporary copy of the data
    biggest = max(
        abs(float(np.fmax.reduce(arr, axis=None))), abs(float(np.fmin.reduce(arr, axis=None)))
    )
    if not np.isfinite(biggest):  # inf present (or all NaN): look at the finite values only
        finite = np.abs(arr[np.isfinite(arr)])
        biggest = float(finite.max()) if finite.size else 0.0
    if biggest > limit:
        raise ValueError(
            f"{func}(): `{name}` holds values up to {biggest:.3g}; squares of values above "
            f"{limit:.0e} overflow float64, so variances and correlations would come out NaN. "
            f"Rescale first, e.g. `{name} / {name}.std()`."
        )
    return biggest


def check_fraction(value: Any, *, func: str, name: str, hint: str = "") -> float:
    """Check that ``value`` is a real number in (0, 1] and return it as ``float``.

    Examples
    --------
    >>> check_fraction(0.9, func="f", name="theta")
    0.9
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(float(value))
        or not (0 < float(value) <= 1)
    ):
        raise ValueError(
            f"{func}(): `{name}` must be a number in (0, 1]; got {value!r}.{' ' + hint if hint else ''}"
        )
    return float(value)


def check_labels(labels: Any, n: int, *, func: str, name: str = "labels") -> np.ndarray:
    """Check that ``labels`` is 1-D with one entry per sample and return it as an array.

    Examples
    --------
    >>> check_labels([0, 1, 1], 3, func="f").tolist()
    [0, 1, 1]
    """
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(
            f"{func}(): `{name}` must have one entry per sample ({n}); got shape {y.shape}. "
            "Pass the labels of the same samples, in order."
        )
    return y


def renamed_argument(
    new_value: Any, old_value: Any, *, func: str, new: str, old: str, default: Any
) -> Any:
    """Resolve a keyword renamed from ``old`` to ``new``, warning when ``old`` is used.

    ``old_value`` is None when the old keyword was not given. Giving both keywords with
    different values is an error.

    Examples
    --------
    >>> renamed_argument("pred", None, func="f", new="flow_seed", old="seed", default="activity")
    'pred'
    """
    if old_value is None:
        return new_value
    if new_value != default and new_value != old_value:
        raise TypeError(
            f"{func}(): got both `{new}`={new_value!r} and its deprecated name "
            f"`{old}`={old_value!r}; pass only `{new}`."
        )
    warnings.warn(
        f"{func}(): `{old}` is deprecated and will be removed in the next release; "
        f"use `{new}={old_value!r}`.",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value


def check_matrix(weights: Any, *, func: str, name: str) -> np.ndarray:
    """Return ``weights`` as a finite, non-empty 2-D float64 array (a copy).

    Examples
    --------
    >>> check_matrix([[1, 2], [3, 4]], func="f", name="w").dtype
    dtype('float64')
    """
    if isinstance(weights, (xr.Dataset, dict)):
        raise TypeError(
            f"{func}(): `{name}` must be one 2-D weight matrix; got {type(weights).__name__}. "
            "For several layers use `weight_spectra({name: matrix, ...})`."
        )
    try:
        w = np.array(weights, dtype=np.float64)  # a copy: the input is never modified
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{func}(): `{name}` must be a real 2-D array; got {type(weights).__name__}."
        ) from exc
    if w.ndim != 2:
        raise ValueError(
            f"{func}(): `{name}` must be 2-D (out x in); got shape {w.shape}. Reshape conv "
            "kernels (out, in, kh, kw) to `w.reshape(w.shape[0], -1)`, or use "
            "`netphys.recorder.layer_weights(model)`."
        )
    if w.size == 0:
        raise ValueError(
            f"{func}(): `{name}` is empty (shape {w.shape}); a layer needs at least one input "
            "and one output. Leave empty layers out."
        )
    if not np.isfinite(w).all():
        n_bad = int((~np.isfinite(w)).sum())
        raise ValueError(
            f"{func}(): `{name}` holds {n_bad} NaN or inf values (shape {w.shape}); the model's "
            "weights diverged or were not initialised. Check training, or leave the layer out."
        )
    check_magnitude(w, func=func, name=name)
    return w


def activity_array(x: Any, *, func: str, name: str, fix: str) -> xr.DataArray:
    """Return the (sample, ``unit``) activity of a DataArray, or of a Dataset's ``activity``.

    The Dataset's attrs are merged into the result's; ``fix`` ends the error for other inputs.

    Examples
    --------
    >>> ds = xr.Dataset({"activity": (("unit", "time"), np.zeros((3, 5)))}, attrs={"rate": 2})
    >>> da = activity_array(ds, func="f", name="x", fix="")
    >>> da.dims, da.attrs["rate"]
    (('time', 'unit'), 2)
    """
    if isinstance(x, xr.Dataset):
        if "activity" not in x.data_vars:
            raise ValueError(
                f"{func}(): `{name}` is a Dataset without an 'activity' variable; it has "
                f"{list(x.data_vars)}. Pass `ds[name]` for the variable to use."
            )
        attrs = dict(x.attrs)
        x = x["activity"]
        x.attrs = {**attrs, **x.attrs}
    if not isinstance(x, xr.DataArray) or x.ndim != 2 or "unit" not in x.dims:
        got = f" with dims {x.dims}" if isinstance(x, xr.DataArray) else ""
        raise TypeError(
            f"{func}(): `{name}` must be a 2-D (time, 'unit') DataArray or a Dataset with "
            f"'activity'; got {type(x).__name__}{got}. {fix}".rstrip()
        )
    sample = next(d for d in x.dims if d != "unit")
    return x.transpose(sample, "unit")


def check_finite(
    values: np.ndarray,
    *,
    func: str,
    name: str = "activity",
    dims: tuple[str, ...] = ("sample", "unit"),
    offset: tuple[int, ...] | None = None,
    context: str = "",
) -> None:
    """Raise one ValueError, with one fix text, when ``values`` holds NaN or inf.

    The message names the function, the argument, the position of the first bad value
    (``dims`` name the axes; ``offset`` is added to the index, for chunks) and the fix.

    Examples
    --------
    >>> check_finite(np.ones((2, 2)), func="f")
    >>> check_finite(np.array([[1.0, np.nan]]), func="f")
    Traceback (most recent call last):
    ...
    ValueError: f(): `activity` contains NaN or inf (first at sample 0, unit 1). Fill or drop \
them first, e.g. `activity.fillna(0)` or `activity.dropna('unit')`.
    """
    finite = np.isfinite(values)
    if finite.all():
        return
    bad = np.argwhere(~finite)[0]
    if offset is not None:
        bad = bad + np.asarray(offset[: len(bad)])
    where = ", ".join(f"{d} {int(i)}" for d, i in zip(dims, bad, strict=False))
    raise ValueError(
        f"{func}(): `{name}` contains NaN or inf{context} (first at {where}). Fill or drop "
        f"them first, e.g. `{name}.fillna(0)` or `{name}.dropna('unit')`."
    )


# ---------------------------------------------------------------------------------------------
# Recorder and recording checks (issue 11). Kept in one block to ease merging.
# ---------------------------------------------------------------------------------------------
__all__ += ["check_bool", "check_int_values", "check_layer_names"]


def check_bool(value: Any, *, func: str, name: str) -> bool:
    """Check that ``value`` is a bool (numpy bools included) and return it.

    Examples
    --------
    >>> check_bool(True, func="f", name="flag")
    True
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{func}(): `{name}` must be True or False; got {type(value).__name__} {value!r}."
        )
    return bool(value)


def check_int_values(value: Any, *, func: str, name: str, fix: str = "") -> np.ndarray:
    """Return ``value`` (scalar or 1-D) as int64, refusing non-integer numbers.

    Floats are accepted only when every value is a whole number (``[0.0, 2.0]``); ``[0.2,
    1.5]`` is refused instead of being truncated. Bools are refused.

    Examples
    --------
    >>> check_int_values([0.0, 2.0], func="f", name="label")
    array([0, 2])
    """
    arr = np.asarray(value)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(
            f"{func}(): `{name}` must hold integers; got dtype {arr.dtype}. {fix}".rstrip()
        )
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bool(np.any(bad)):
            first = arr[bad].ravel()[0]
            raise TypeError(
                f"{func}(): `{name}` must hold integers; got non-integer value {first!r} "
                f"(dtype {arr.dtype}). Pass integer class ids, e.g. `np.asarray(y, int)` after "
                f"checking the values. {fix}".rstrip()
            )
    return arr.astype("int64")


def check_layer_names(
    layers: Any,
    valid: list[str],
    *,
    func: str,
    owner: str,
    list_hint: str = "netphys.recorder.list_layers(model)",
) -> list[str]:
    """Check module names against ``valid``; suggest the closest names for a wrong one.

    ``layers`` is one name or a sequence of names; the result is a list without duplicates.
    A wrong name gets the closest valid names first (``difflib``), then every valid name when
    there are at most 30, else the call that lists them all (``list_hint``). Names may end in
    ``:k`` (the k-th call of a module that runs several times per forward).

    Examples
    --------
    >>> check_layer_names("relu", ["conv", "relu"], func="f", owner="Net")
    ['relu']
    """
    import difflib

    names = [layers] if isinstance(layers, str) else layers
    if not isinstance(names, (list, tuple)):
        raise TypeError(
            f"{func}(): `layers` must be a module name or a list of module names; got "
            f"{type(layers).__name__} {layers!r}. Pass e.g. `layers=['relu1', 'relu2']`."
        )
    names = list(names)
    if not names:
        raise ValueError(
            f"{func}(): `layers` is empty; pass at least one module name (or None for the "
            "default choice where the function has one)."
        )
    valid_set = set(valid)
    bad = [n for n in names if not isinstance(n, str) or _site_module(n) not in valid_set]
    if bad:
        close: list[str] = []
        for n in bad:
            close += difflib.get_close_matches(str(n), valid, n=5, cutoff=0.4)
        close = list(dict.fromkeys(close))
        if len(valid) <= 30:
            rest = [v for v in valid if v not in close]
            listing = "Valid names (closest first): " + ", ".join(map(repr, close + rest)) + "."
        else:
            listing = f"Valid names: {len(valid)} in all; list them with `{list_hint}`" + (
                f" (closest: {', '.join(map(repr, close))})." if close else "."
            )
        guess = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"{func}(): `layers` {bad} are not modules of {owner}: {bad[0]!r} in `layers` is "
            f"not a module name from `model.named_modules()`.{guess} {listing}"
        )
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{func}(): `layers` lists {dup} twice: {names}. List each layer once.")
    return [str(n) for n in names]


def _site_module(name: str) -> str:
    """Return the module name of a layer name: ``"block.relu:1"`` -> ``"block.relu"``."""
    base, sep, k = name.rpartition(":")
    return base if sep and k.isdigit() else name
