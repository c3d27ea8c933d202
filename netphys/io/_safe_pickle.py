"""Load ``.npy`` files (object arrays included) without ever executing a pickle.

suite2p stores ``stat.npy`` and ``ops.npy`` (and v1's ``db.npy``, ``settings.npy``) as numpy
object arrays, which ``np.save`` writes through :mod:`pickle`. ``np.load(allow_pickle=True)``
on a file a user hands in can run arbitrary code. Here object arrays are unpickled by
:class:`SafeUnpickler`, which only resolves an allow-list of globals (numpy arrays, dtypes and
scalars, builtin containers and scalars, ``datetime`` and ``pathlib`` values) and refuses
everything else with :class:`~netphys.errors.UnsafeFileError` *before* the object is built.

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

from netphys.errors import RecordingFormatError, UnsafeFileError

__all__ = ["SafeUnpickler", "load_npy", "safe_loads"]


def _numpy_core(name: str) -> Any:
    """Return ``numpy._core.<name>`` (numpy >= 2) or ``numpy.core.<name>`` (numpy 1.x)."""
    try:
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:  # pragma: no cover - numpy 1.x
        return importlib.import_module(f"numpy.core.{name}")


_multiarray = _numpy_core("multiarray")
_numeric = _numpy_core("numeric")

# (module, name) -> object. Resolved here, never by importing what the file names.
_ALLOWED: dict[tuple[str, str], Any] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _multiarray._reconstruct
    _ALLOWED[(_mod, "scalar")] = _multiarray.scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_mod, "_frombuffer")] = _numeric._frombuffer
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype
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
    _ALLOWED[("builtins", _name)] = getattr(builtins, _name)
    _ALLOWED[("__builtin__", _name)] = getattr(builtins, _name)
_ALLOWED[("collections", "OrderedDict")] = collections.OrderedDict
for _name in ("datetime", "date", "time", "timedelta", "timezone"):
    _ALLOWED[("datetime", _name)] = getattr(datetime, _name)
for _name in ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"):
    _ALLOWED[("pathlib", _name)] = getattr(pathlib, _name)
# Python 2 / protocol 2 pickles encode bytes through _codecs.encode(str, "latin1").
_ALLOWED[("_codecs", "encode")] = __import__("_codecs").encode
# numpy >= 2 pickles some dtypes through their DType classes (numpy.dtypes.Float64DType, ...).
_NUMPY_DTYPES_MODULES = ("numpy.dtypes",)


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that builds only allow-listed numpy and builtin objects.

    Parameters
    ----------
    file : binary file object
        Stream positioned at the start of a pickle.
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

    def __init__(self, file: IO[bytes], *, source: str = "<bytes>") -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if module in _NUMPY_DTYPES_MODULES and name.endswith("DType"):
            import numpy.dtypes

            obj = getattr(numpy.dtypes, name, None)
            if isinstance(obj, type) and issubclass(obj, np.dtype):
                return obj
        raise UnsafeFileError(
            f"{self._source}: the file's pickle asks for `{module}.{name}`, which netphys refuses "
            "to build (only numpy arrays/dtypes/scalars, dicts, lists, tuples, builtin scalars, "
            "strings, datetimes and paths are allowed; unpickling anything else could run code). "
            "If you trust this file, load it yourself with `np.load(path, allow_pickle=True)` "
            "and pass the arrays to netphys."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFileError(
            f"{self._source}: the file's pickle uses persistent ids, which netphys refuses."
        )


def safe_loads(data: bytes, *, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler`.

    Examples
    --------
    >>> import pickle
    >>> safe_loads(pickle.dumps([1, "a", (2.0,)]))
    [1, 'a', (2.0,)]
    """
    return SafeUnpickler(io.BytesIO(data), source=source).load()


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


def load_npy(path: str | os.PathLike[str] | IO[bytes], *, source: str | None = None) -> Any:
    """Load a ``.npy`` file; object arrays go through :class:`SafeUnpickler`.

    Parameters
    ----------
    path : str, path-like or binary file object
        The ``.npy`` file.
    source : str, optional
        Name used in error messages (default: ``path``).

    Returns
    -------
    numpy.ndarray
        The array. A 0-d object array holding a dict (suite2p's ``ops.npy``) is returned as
        is; call ``.item()`` to get the dict.

    Raises
    ------
    UnsafeFileError
        If the file's pickle names a global outside the allow-list.
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
    own = not hasattr(path, "read")
    fp: IO[bytes] = open(path, "rb") if own else path  # type: ignore[arg-type,assignment]  # noqa: SIM115
    try:
        try:
            shape, fortran, dtype = _read_header(fp, name)
        except (ValueError, OSError, EOFError, SyntaxError) as exc:
            raise RecordingFormatError(
                f"load_npy(): {name} is not a readable .npy file ({exc}). "
                "Check that the file is complete (not truncated) and really an np.save output."
            ) from exc
        if not dtype.hasobject:
            count = int(np.prod(shape, dtype=np.int64))
            raw = fp.read(count * dtype.itemsize)
            if len(raw) != count * dtype.itemsize:
                raise RecordingFormatError(
                    f"load_npy(): {name} is truncated: the header promises shape {shape} of "
                    f"{dtype} ({count * dtype.itemsize} bytes) but only {len(raw)} bytes follow. "
                    "Copy the file again from its source."
                )
            arr = np.frombuffer(raw, dtype=dtype, count=count).copy()
            return arr.reshape(shape, order="F") if fortran else arr.reshape(shape)
        try:
            arr = SafeUnpickler(fp, source=name).load()
        except UnsafeFileError:
            raise
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
    finally:
        if own:
            fp.close()
