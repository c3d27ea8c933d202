"""Constructors the allow-list unpickler hands to a pickle, and the check of what it built.

A pickle calls whatever its ``find_class`` returns. numpy's own reconstructors trust their
arguments: ``numpy.ndarray((1,), numpy.dtype("O"), b"A" * 8)`` wraps eight bytes as an object
pointer (the interpreter crashes when the array is freed), ``scalar`` reads a structured dtype
with object fields out of raw bytes, and a dtype's ``__setstate__`` accepts field offsets past
its itemsize. So the unpickler never hands out ``numpy.ndarray`` itself (only a token that
:func:`reconstruct` accepts), every dtype is rebuilt from its plain description before numpy
sees it (:func:`rebuild_dtype`), and arrays are built as :class:`PendingArray` whose
``__setstate__`` checks the state. :func:`finish` then walks the result: it turns pending arrays
into plain ones, refuses reference cycles, deep nesting and memo trees (one small list
referenced twice per level, doubling at every level) whose expanded size passes the budget.
"""

from __future__ import annotations

import codecs
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from netphys.errors import RecordingFormatError, ResourceLimitError, UnsafeFileError
from netphys.io._guard import ByteBudget, declared_nbytes

try:
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

__all__ = [
    "NDARRAY",
    "PendingArray",
    "finish",
    "frombuffer",
    "guarded_builtin",
    "latin1_encode",
    "make_dtype",
    "rebuild_dtype",
    "reconstruct",
    "scalar",
]

_PLAIN_KINDS = "biufcUSVMm"
_SCALARS = frozenset({int, float, bool, type(None), complex})
_MAX_DEPTH = 64
_MAX_FIELDS = 4096


class _Refused(UnsafeFileError):
    """Raised inside the unpickler; :class:`SafeUnpickler` adds the file name."""


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` in a pickle: accepted by :func:`reconstruct`, never called."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Refused(
            "the pickle calls `numpy.ndarray(...)` directly, which builds arrays from raw memory "
            "(object pointers from bytes, uninitialised memory); np.save never does this"
        )

    def __repr__(self) -> str:
        return "<numpy.ndarray (pickle token)>"


NDARRAY = _NdarrayToken()


def rebuild_dtype(dtype: Any, *, depth: int = 0) -> np.dtype:
    """Return a fresh dtype equal to the plain description of ``dtype``, or refuse it.

    Allowed: booleans, integers, floats, complex, fixed-width strings, datetimes and raw
    bytes, and structured or sub-array dtypes of those (rebuilt through numpy's validating
    constructor); the plain object dtype ``'O'``. Structured dtypes with object fields are
    refused.
    """
    if not isinstance(dtype, np.dtype) or depth > 8:
        raise _Refused(f"the pickle names an unusable dtype {type(dtype).__name__}")
    if dtype.fields is not None:
        names = dtype.names or ()
        if len(names) > _MAX_FIELDS:
            raise _Refused(f"the pickle's structured dtype has {len(names)} fields")
        fields = [dtype.fields[n] for n in names]
        try:
            return np.dtype(
                {
                    "names": list(names),
                    "formats": [rebuild_dtype(f[0], depth=depth + 1) for f in fields],
                    "offsets": [int(f[1]) for f in fields],
                    "itemsize": int(dtype.itemsize),
                }
            )
        except (TypeError, ValueError) as exc:
            raise _Refused(f"the pickle's structured dtype is inconsistent ({exc})") from None
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        if declared_nbytes(shape, 1) > 2**31:
            raise _Refused(f"the pickle's sub-array dtype has shape {shape}")
        return np.dtype((rebuild_dtype(base, depth=depth + 1), tuple(int(s) for s in shape)))
    if dtype.kind == "O":
        return np.dtype("O")
    if dtype.kind not in _PLAIN_KINDS and dtype.char != "?":
        raise _Refused(f"the pickle asks for arrays of dtype kind {dtype.kind!r}")
    try:
        fresh = np.dtype(dtype.str)
    except TypeError as exc:
        raise _Refused(f"the pickle names an invalid dtype ({exc})") from None
    if fresh.itemsize != dtype.itemsize or fresh.hasobject:
        raise _Refused(f"the pickle's dtype {dtype.str} has an inconsistent itemsize")
    return fresh


_REBUILT: dict[int, tuple[np.dtype, np.dtype]] = {}


def _rebuilt(dtype: Any) -> np.dtype:
    """:func:`rebuild_dtype`, cached by identity (numpy pickles share one dtype object).

    Only the fresh dtype is ever handed to numpy, so a pickle that changes a shared dtype's
    state after its first use still gets a consistent dtype (numpy checks the data against it).
    """
    hit = _REBUILT.get(id(dtype))
    if hit is not None and hit[0] is dtype:
        return hit[1]
    fresh = rebuild_dtype(dtype)
    if len(_REBUILT) > 256:
        _REBUILT.clear()
    _REBUILT[id(dtype)] = (dtype, fresh)
    return fresh


def make_dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype(obj, align, copy)`` as pickles call it: ``obj`` must be a type string."""
    if not isinstance(obj, str) or len(obj) > 16:
        raise _Refused(f"the pickle builds a dtype from {type(obj).__name__} (only type codes)")
    try:
        return np.dtype(obj, align=bool(align), copy=bool(copy))
    except TypeError as exc:
        raise _Refused(f"the pickle names an invalid dtype {obj!r} ({exc})") from None


def _plain_dtype(dtype: Any, what: str) -> np.dtype:
    fresh = rebuild_dtype(dtype)
    if fresh.hasobject:
        raise _Refused(f"the pickle builds {what} of object dtype from raw bytes")
    return fresh


class PendingArray(np.ndarray):
    """An array being unpickled; ``__setstate__`` checks the state before numpy uses it."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("the pickle gives an array an unexpected state")
        version = state[0] if len(state) == 5 else 0
        shape, dtype, fortran, raw = state[-4:]
        fresh = _rebuilt(dtype)
        if not isinstance(shape, tuple) or not all(
            isinstance(s, (int, np.integer)) and int(s) >= 0 for s in shape
        ):
            raise _Refused(f"the pickle gives an array the shape {shape!r}")
        if fresh.hasobject and not isinstance(raw, list):
            raise _Refused("the pickle builds an object array from raw bytes")
        if not fresh.hasobject and not isinstance(raw, (bytes, bytearray, str)):
            raise _Refused(f"the pickle fills a {fresh} array from {type(raw).__name__}")
        new = (version, shape, fresh, bool(fortran), raw)
        super().__setstate__(new if len(state) == 5 else new[1:])  # type: ignore[arg-type]


def reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    """``numpy._core.multiarray._reconstruct`` restricted to plain ``ndarray``."""
    if subtype is not NDARRAY:
        raise _Refused(f"the pickle reconstructs an array of type {subtype!r}")
    out: np.ndarray = _multiarray._reconstruct(PendingArray, (0,), b"b")  # type: ignore[assignment]
    return out


def scalar(dtype: Any, obj: Any = None) -> Any:
    """``numpy._core.multiarray.scalar`` for plain dtypes from bytes of exactly the itemsize."""
    fresh = _plain_dtype(dtype, "a scalar")
    if not isinstance(obj, bytes) or len(obj) != fresh.itemsize:
        raise _Refused(f"the pickle builds a {fresh} scalar from {type(obj).__name__}")
    return _multiarray.scalar(fresh, obj)


def frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """``numpy._core.numeric._frombuffer`` (pickle protocol 5) for plain dtypes."""
    fresh = _plain_dtype(dtype, "an array")
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise _Refused(f"the pickle builds an array from {type(buf).__name__}")
    out: np.ndarray = _numeric._frombuffer(buf, fresh, shape, order)  # type: ignore[attr-defined]
    return out


_ARG_TYPES = (str, bytes, bytearray, numbers.Number, list, tuple, dict, type(None))


def guarded_builtin(cls: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a builtin or value type: flat arguments only, never ``bytes(n)``/``bytearray(n)``.

    ``str(x)`` of a memo tree, ``bytes(10**10)`` and the like ask for unbounded work from a few
    bytes of pickle; the types suite2p's pickles use never need such arguments.
    """
    scalar_like = cls in (int, float, complex, bool, str)

    def build(*args: Any, **kwargs: Any) -> Any:
        for a in (*args, *kwargs.values()):
            if not isinstance(a, _ARG_TYPES) and not _is_value(a):
                raise _Refused(f"the pickle calls {cls.__name__}() on a {type(a).__name__}")
            if scalar_like and isinstance(a, (list, tuple, dict)):
                raise _Refused(f"the pickle calls {cls.__name__}() on a container")
            if cls in (bytes, bytearray) and isinstance(a, numbers.Integral):
                raise _Refused(f"the pickle calls {cls.__name__}({a}), which allocates memory")
        return cls(*args, **kwargs)

    build.__name__ = getattr(cls, "__name__", "builtin")
    build.__qualname__ = build.__name__
    return build


def _is_value(a: Any) -> bool:
    import datetime

    return isinstance(a, (datetime.tzinfo, datetime.timedelta, datetime.date, datetime.time))


def latin1_encode(obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it (``str`` to ``latin1`` bytes) only."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise _Refused(f"the pickle calls _codecs.encode with encoding {encoding!r}")
    return codecs.encode(obj, encoding, "strict")


def finish(obj: Any, budget: ByteBudget, *, unique_bytes: int, source: str) -> Any:
    """Turn :class:`PendingArray` into ``ndarray`` and refuse cycles, depth and memo bombs.

    ``unique_bytes`` is the size of the pickle stream; a result whose expanded size (shared
    objects counted each time they are referenced) passes the budget, or is over 64 MiB and
    more than 64 times the stream, is refused before any caller expands it.
    """
    walker = _Walker()
    out = walker.visit(obj, 0)
    expanded = walker.sizes.get(id(obj), 8)
    if expanded > 64 * 2**20 and expanded > 64 * unique_bytes:
        raise ResourceLimitError(
            f"{budget.func}(): {source}: the pickle's objects reference each other so "
            f"that they expand to {expanded} bytes from {unique_bytes} stored (a memo tree). "
            "netphys refuses such files; suite2p never writes them."
        )
    budget.take(expanded, f"the pickled objects of {source}")
    return out


class _Walker:
    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.done: dict[int, Any] = {}
        self.active: set[int] = set()
        self.keep: list[Any] = []  # keep objects alive so that ids stay unique

    def visit(self, obj: Any, depth: int) -> Any:
        key = id(obj)
        if key in self.done:
            return self.done[key]
        if key in self.active:
            raise RecordingFormatError(
                "the pickle holds a reference cycle (an object that contains itself); "
                "np.save of suite2p data never writes one"
            )
        if depth > _MAX_DEPTH:
            raise RecordingFormatError(
                f"the pickle nests objects more than {_MAX_DEPTH} levels deep"
            )
        self.active.add(key)
        self.keep.append(obj)
        out, size = self._convert(obj, depth)
        self.active.discard(key)
        self.done[key] = out
        self.sizes[key] = size
        return out

    def _children(self, items: Any, depth: int) -> tuple[list[Any], int]:
        outs, total = [], 0
        for item in items:
            kind = type(item)
            if kind in _SCALARS:  # leaves that hold nothing: no memo needed
                outs.append(item)
                total += 8
            elif kind is str or kind is bytes:
                outs.append(item)
                total += len(item) + 8
            elif kind is PendingArray and not item.dtype.hasobject:  # a plain array: a leaf
                key = id(item)
                if key not in self.done:
                    self.keep.append(item)
                    self.done[key] = item.view(np.ndarray)
                    self.sizes[key] = int(item.nbytes)
                outs.append(self.done[key])
                total += self.sizes[key]
            else:
                outs.append(self.visit(item, depth + 1))
                total += self.sizes[id(item)]
        return outs, total

    def _convert(self, obj: Any, depth: int) -> tuple[Any, int]:
        if isinstance(obj, np.ndarray):
            arr = obj.view(np.ndarray) if type(obj) is PendingArray else obj
            if not arr.dtype.hasobject:
                return arr, int(arr.nbytes)
            outs, total = self._children(list(arr.flat), depth)
            for i, v in enumerate(outs):
                arr.flat[i] = v
            return arr, total + 8 * arr.size
        if isinstance(obj, list):
            outs, total = self._children(obj, depth)
            obj[:] = outs
            return obj, total + 8 * len(obj)
        if isinstance(obj, tuple):
            outs, total = self._children(obj, depth)
            same = all(a is b for a, b in zip(outs, obj, strict=True))
            return (obj if same else tuple(outs)), total + 8 * len(obj)
        if isinstance(obj, dict):
            keys, ktotal = self._children(list(obj.keys()), depth)
            values, vtotal = self._children(list(obj.values()), depth)
            for k, v in zip(keys, values, strict=True):
                obj[k] = v
            return obj, ktotal + vtotal + 16 * len(obj)
        if isinstance(obj, (set, frozenset)):
            _, total = self._children(list(obj), depth)
            return obj, total + 16 * len(obj)
        if isinstance(obj, (str, bytes, bytearray)):
            return obj, len(obj) + 8
        return obj, 8
