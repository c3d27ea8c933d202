"""Load ``.npy`` files (object arrays included) without ever executing a pickle.

suite2p stores ``stat.npy`` and ``ops.npy`` (and v1's ``db.npy``, ``settings.npy``) as numpy
object arrays, which ``np.save`` writes through :mod:`pickle`. ``np.load(allow_pickle=True)``
on a file a user hands in can run arbitrary code. Here object arrays are unpickled by
:class:`SafeUnpickler`, which only resolves an allow-list of globals (numpy arrays, dtypes and
scalars, builtin containers and scalars, ``datetime`` and ``pathlib`` values) and refuses
everything else with :class:`~netphys.errors.UnsafeFileError` *before* the object is built.
numpy's constructors are handed out wrapped (:mod:`netphys.io._pickle_guard`): arrays are only
rebuilt through numpy's reconstruct path with plain dtypes, never ``numpy.ndarray(shape, dtype,
buffer)`` (object pointers from raw bytes crash the interpreter; without a buffer it is
uninitialised memory). The result is then checked for reference cycles, deep nesting and memo
trees that would expand past ``max_bytes`` (default 4 GiB), and every ``.npy`` header's declared
size is checked before anything is allocated.

Examples
--------
>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "stat.npy")
>>> np.save(path, np.array([{"med": [3, 4], "npix": 5}], dtype=object))
>>> load_npy(path)[0]["med"]
[3, 4]
"""

from __future__ import annotations

import builtins
import collections
import datetime
import importlib
import io
import os
import pathlib
import pickle
from typing import IO, Any

import numpy as np

from netphys.errors import RecordingFormatError, ResourceLimitError, UnsafeFileError
from netphys.io import _pickle_guard as _guard
from netphys.io._guard import DEFAULT_MAX_BYTES, ByteBudget, declared_nbytes
from netphys.io._pickle_scan import scan_pickle

__all__ = ["SafeUnpickler", "load_npy", "safe_loads"]


# (module, name) -> object. Resolved here, never by importing what the file names. numpy's own
# constructors are wrapped (netphys.io._pickle_guard) so that they only build arrays, scalars and
# dtypes of plain kinds from data of the right size: a pickle calling `numpy.ndarray(shape,
# dtype('O'), buffer)` (object pointers from raw bytes) or handing `scalar` a forged dtype is
# refused instead of crashing the interpreter.
_ALLOWED: dict[tuple[str, str], Any] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _guard.reconstruct
    _ALLOWED[(_mod, "scalar")] = _guard.scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_mod, "_frombuffer")] = _guard.frombuffer
_ALLOWED[("numpy", "ndarray")] = _guard.NDARRAY
_ALLOWED[("numpy", "dtype")] = _guard.make_dtype
for _name in (
    "dict",
    "list",
    "tuple",
    "set",
    "frozenset",
    "int",
    "float",
    "complex",
    "bool",
    "str",
    "bytes",
    "bytearray",
    "slice",
):
    _ALLOWED[("builtins", _name)] = _guard.guarded_builtin(getattr(builtins, _name))
    _ALLOWED[("__builtin__", _name)] = _ALLOWED[("builtins", _name)]
_ALLOWED[("collections", "OrderedDict")] = _guard.guarded_builtin(collections.OrderedDict)
for _name in ("datetime", "date", "time", "timedelta", "timezone"):
    _ALLOWED[("datetime", _name)] = _guard.guarded_builtin(getattr(datetime, _name))
for _name in ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"):
    _ALLOWED[("pathlib", _name)] = _guard.guarded_builtin(getattr(pathlib, _name))
# Python 2 / protocol 2 pickles encode bytes through _codecs.encode(str, "latin1").
_ALLOWED[("_codecs", "encode")] = _guard.latin1_encode


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that builds only allow-listed numpy and builtin objects.

    Parameters
    ----------
    file : binary file object
        Seekable stream positioned at the start of a pickle (it is scanned, then read).
    source : str, default="<bytes>"
        Name of the file, used in the error message.

    Raises
    ------
    UnsafeFileError
        When the pickle names any global outside the allow-list (``os.system``,
        ``builtins.eval``, a user class, ...). Nothing from the file has run by then.

    Examples
    --------
    >>> import io, pickle
    >>> SafeUnpickler(io.BytesIO(pickle.dumps({"fs": 10.0}))).load()
    {'fs': 10.0}
    """

    def __init__(
        self,
        file: IO[bytes],
        *,
        source: str = "<bytes>",
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        budget: ByteBudget | None = None,
    ) -> None:
        super().__init__(file)
        self._source = source
        self._budget = budget or ByteBudget(max_bytes, func="load_npy", source=source)
        self._stream_bytes = _remaining(file)
        self._file = file

    def find_class(self, module: str, name: str) -> Any:
        """Return the allow-listed (and wrapped) object for ``module.name``, else refuse."""
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        raise UnsafeFileError(
            f"{self._source}: the file's pickle asks for `{module}.{name}`, which netphys refuses "
            "to build (only numpy arrays/dtypes/scalars, dicts, lists, tuples, builtin scalars, "
            f"strings, datetimes and paths are allowed; unpickling anything else could run code). {_FIX}"
        )

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids (they name objects outside the pickle)."""
        raise UnsafeFileError(
            f"{self._source}: the file's pickle uses persistent ids, which netphys refuses."
        )

    def load(self) -> Any:
        """Unpickle, then check the result (see :func:`netphys.io._pickle_guard.finish`)."""
        try:
            self._prescan()
            obj = super().load()
            return _guard.finish(
                obj, self._budget, unique_bytes=self._stream_bytes, source=self._source
            )
        except _guard._Refused as exc:
            raise UnsafeFileError(f"{self._source}: {exc}; netphys refuses it. {_FIX}") from None
        except RecordingFormatError as exc:
            if isinstance(exc, ResourceLimitError) or str(exc).startswith(self._source):
                raise
            raise RecordingFormatError(f"{self._source}: {exc}.") from None

    def _prescan(self) -> None:
        """Refuse hash/memo bombs and deep nesting before any opcode runs (:mod:`._pickle_scan`).

        The limit is the budget left, and at most 64 times the stream (or 64 MiB) as for
        :func:`netphys.io._pickle_guard.finish`.
        """
        file = self._file
        start = file.tell()
        ratio_limit = max(64 * 2**20, 64 * self._stream_bytes)
        budget = self._budget
        left = None if budget.max_bytes is None else max(budget.max_bytes - budget.used, 0)
        if left is not None and left < ratio_limit:
            limit, hint = (
                left,
                (
                    f"That passes `max_bytes`={budget.max_bytes} of {budget.func}(); if the file is "
                    "genuine and you have the memory, pass a larger `max_bytes=`."
                ),
            )
        else:
            limit, hint = ratio_limit, ""
        try:
            scan_pickle(file, limit=limit, source=self._source, hint=hint)
        finally:
            file.seek(start)


_FIX = (
    "If you trust this file, load it yourself with `np.load(path, allow_pickle=True)` "
    "and pass the arrays to netphys."
)


def _remaining(file: IO[bytes]) -> int:
    try:
        return len(file.getbuffer()) - file.tell()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return 0


def safe_loads(
    data: bytes, *, source: str = "<bytes>", max_bytes: int | None = DEFAULT_MAX_BYTES
) -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler`.

    Examples
    --------
    >>> import pickle
    >>> safe_loads(pickle.dumps([1, "a", (2.0,)]))
    [1, 'a', (2.0,)]
    """
    return SafeUnpickler(io.BytesIO(data), source=source, max_bytes=max_bytes).load()


def _read_limited(fp: IO[bytes], nbytes: int | None, budget: ByteBudget | None, what: str) -> bytes:
    """Read ``nbytes`` (None: to the end, checked against ``budget``) in bounded pieces.

    Never allocates ahead of the data (``fp.read(n)`` on a file allocates ``n`` up front).
    """
    pieces: list[bytes] = []
    got = 0
    while nbytes is None or got < nbytes:
        want = _PIECE if nbytes is None else min(_PIECE, nbytes - got)
        piece = fp.read(want)
        if not piece:
            break
        got += len(piece)
        if budget is not None:
            budget.check(got, what)
        pieces.append(piece)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


_PIECE = 64 * 2**20


def _read_header(fp: IO[bytes], source: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    version = fmt.read_magic(fp)
    if version == (1, 0):
        return fmt.read_array_header_1_0(fp)
    if version == (2, 0):
        return fmt.read_array_header_2_0(fp)
    # version 3.0 (utf8 field names): only a private reader exists
    for module in ("numpy.lib._format_impl", "numpy.lib.format"):
        reader = getattr(importlib.import_module(module), "_read_array_header", None)
        if reader is not None:
            return reader(fp, version)
    raise ValueError(f"unsupported .npy format version {version}")  # pragma: no cover


def load_npy(
    path: str | os.PathLike[str] | IO[bytes],
    *,
    source: str | None = None,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    budget: ByteBudget | None = None,
) -> Any:
    """Load a ``.npy`` file; object arrays go through :class:`SafeUnpickler`.

    Parameters
    ----------
    path : str, path-like or binary file object
        The ``.npy`` file.
    source : str, optional
        Name used in error messages (default: ``path``).
    max_bytes : int or None, default=4 GiB
        Refuse a file whose header (or pickle) asks for more memory than this, before
        allocating it. None: no limit.
    budget : ByteBudget, optional
        A running budget shared with other reads (overrides ``max_bytes``).

    Returns
    -------
    numpy.ndarray
        The array. A 0-d object array holding a dict (suite2p's ``ops.npy``) is returned as
        is; call ``.item()`` to get the dict.

    Raises
    ------
    UnsafeFileError
        If the file's pickle names a global outside the allow-list, or builds arrays from raw
        memory or of forged dtypes.
    ResourceLimitError
        If the file asks for more than ``max_bytes``.
    RecordingFormatError
        If the file is not a readable ``.npy`` file (wrong magic, truncated, corrupted).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ops.npy")
    >>> np.save(path, {"fs": 30.0, "Ly": 512})
    >>> load_npy(path).item()["fs"]
    30.0
    """
    name = source if source is not None else str(getattr(path, "name", path))
    budget = budget or ByteBudget(max_bytes, func="load_npy", source=name)
    own = not hasattr(path, "read")
    fp: IO[bytes] = open(path, "rb") if own else path  # type: ignore[arg-type,assignment]  # noqa: SIM115
    try:
        try:
            shape, fortran, dtype = _read_header(fp, name)
            if not dtype.hasobject:
                dtype = _guard.rebuild_dtype(dtype)
        except _guard._Refused as exc:
            raise UnsafeFileError(f"load_npy(): {name}: {exc}. {_FIX}") from None
        except (ValueError, OSError, EOFError, SyntaxError) as exc:
            raise RecordingFormatError(
                f"load_npy(): {name} is not a readable .npy file ({exc}). "
                "Check that the file is complete (not truncated) and really an np.save output."
            ) from exc
        if not dtype.hasobject:
            return _read_plain(fp, name, shape, fortran, dtype, budget)
        return _read_object(fp, name, budget)
    finally:
        if own:
            fp.close()


def _read_plain(
    fp: IO[bytes],
    name: str,
    shape: tuple[int, ...],
    fortran: bool,
    dtype: np.dtype,
    budget: ByteBudget,
) -> np.ndarray:
    nbytes = declared_nbytes(shape, dtype.itemsize)
    budget.take(nbytes, f"the array (shape {shape}, {dtype})")
    raw = _read_limited(fp, nbytes, None, "the array")  # nbytes is already taken
    if len(raw) != nbytes:
        raise RecordingFormatError(
            f"load_npy(): {name} is truncated: the header promises shape {shape} of "
            f"{dtype} ({nbytes} bytes) but only {len(raw)} bytes follow. "
            "Copy the file again from its source."
        )
    arr = np.frombuffer(raw, dtype=dtype).copy()
    return arr.reshape(shape, order="F") if fortran else arr.reshape(shape)


def _read_object(fp: IO[bytes], name: str, budget: ByteBudget) -> np.ndarray:
    data = _read_limited(fp, None, budget, "the pickled object array")
    try:
        arr = SafeUnpickler(io.BytesIO(data), source=name, budget=budget).load()
    except UnsafeFileError:
        raise
    except RecordingFormatError as exc:
        raise RecordingFormatError(f"load_npy(): {exc}") from None
    except Exception as exc:
        raise RecordingFormatError(
            f"load_npy(): {name} holds an object array that could not be unpickled "
            f"({type(exc).__name__}: {exc}). The file may be truncated or corrupted."
        ) from exc
    if not isinstance(arr, np.ndarray):
        raise RecordingFormatError(
            f"load_npy(): {name} should hold a pickled numpy array after its header; "
            f"got {type(arr).__name__}."
        )
    return arr
