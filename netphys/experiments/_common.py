"""Helpers shared by the experiments: strict JSON and figure files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["json_safe", "save_figure", "write_json"]


def json_safe(value: Any) -> Any:
    """Turn numpy scalars and arrays, tuples and non-finite floats into strict JSON values.

    NaN and infinities become ``None`` (``null``), numpy scalars Python scalars, arrays and
    tuples lists, mappings dicts with string keys; anything else unknown becomes its ``str``.

    Parameters
    ----------
    value : object
        A nested structure of dicts, lists, numbers and strings.

    Returns
    -------
    object
        The same structure, safe for ``json.dumps(..., allow_nan=False)``.

    Examples
    --------
    >>> import numpy as np
    >>> json_safe({"a": np.float32(1.5), "b": [np.nan, 2], "c": np.arange(2), "d": np.array(3.0)})
    {'a': 1.5, 'b': [None, 2], 'c': [0, 1], 'd': 3.0}
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def write_json(path: str | os.PathLike[str], value: Any) -> None:
    r"""Write ``value`` as strict, indented JSON (NaN as ``null``).

    Parameters
    ----------
    path : str or path-like
        File to write.
    value : object
        Anything :func:`json_safe` accepts.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.json"
    >>> write_json(p, {"loss": float("nan")})
    >>> p.read_text()
    '{\n  "loss": null\n}'
    """
    Path(path).write_text(json.dumps(json_safe(value), indent=2, allow_nan=False))


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: int = 110) -> str:
    """Save a matplotlib Figure to ``path`` and release it; return the file name.

    Figures drawn by :mod:`netphys.plot` are plain ``Figure`` objects (no pyplot state), so
    nothing stays open once the figure is saved and dropped.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or path-like
        File to write (the format follows the suffix).
    dpi : int, default=110
        Resolution.

    Returns
    -------
    str
        ``Path(path).name``.
    """
    path = Path(path)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path.name
