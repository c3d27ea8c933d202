"""One entry point that opens any supported recording as the (time, unit) reader schema."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from netphys.errors import RecordingFormatError

__all__ = ["open_dataset"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _sniff(path: Path) -> str:
    with open(path, "rb") as fp:
        head = fp.read(1024)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "npz"
    if head.startswith(b"MATLAB"):
        return "mat"  # v5, or v7.3 (HDF5 with a 512-byte MATLAB header)
    if head.startswith(_HDF5_MAGIC):
        return "nwb"
    return "unknown"


def _model_recording(path: Path, layers: Any = None) -> xr.Dataset:
    from netphys.io.recording import layer_activity, open_recording

    tree = open_recording(path)
    da = layer_activity(tree, layers)
    ds = da.to_dataset(name="activity")
    ds.attrs = {
        "frame_rate": float(tree.attrs.get("frame_rate", np.nan)),
        "source": str(path),
        "format": "netphys",
        "activity_variable": "activity",
    }
    if "behaviour" in tree.children:
        beh = tree.children["behaviour"].to_dataset(inherit=False)
        for name, var in beh.data_vars.items():
            if var.dims and var.dims[0] == "time" and var.ndim <= 2:
                ds[f"behaviour_{name}"] = var
    return ds


def _accepted(reader: Any) -> list[str]:
    params = inspect.signature(reader).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def _check_options(
    name: str, accepted: list[str], kwargs: dict[str, Any], strict: bool
) -> dict[str, Any]:
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown and strict:
        raise TypeError(
            f"open_dataset(): the file is read by {name}(), which does not take "
            f"{', '.join(f'`{k}`' for k in unknown)}; it accepts {', '.join(accepted)}. Drop "
            "the option, or pass `strict=False` when one set of options serves several formats."
        )
    return {k: v for k, v in kwargs.items() if k in accepted}


def _call(reader: Any, path: Path, kwargs: dict[str, Any], strict: bool) -> xr.Dataset:
    options = _check_options(reader.__name__, _accepted(reader), kwargs, strict)
    return reader(path, **options)


def open_dataset(path: str | os.PathLike[str], *, strict: bool = True, **kwargs: Any) -> xr.Dataset:
    """Open a recording of any supported format as a (time, unit) Dataset.

    Dispatches on what it finds: a ``*.zarr`` directory (or one holding ``zarr.json``) is a
    netphys model recording (``netphys.open_recording`` + ``layer_activity``, all layers, or
    ``layers=``); a directory with ``F.npy`` in it, in ``plane*/`` or in ``suite2p/plane*/``
    is a suite2p folder (:func:`~netphys.io.read_suite2p`); files are recognised by their first
    bytes, not their names: zip = ``.npz`` (:func:`~netphys.io.read_npz`), a MATLAB header =
    ``.mat`` (:func:`~netphys.io.read_stringer_mat`), HDF5 = NWB (:func:`~netphys.io.read_nwb`).

    Parameters
    ----------
    path : str or path-like
        File or directory.
    strict : bool, default=True
        Refuse options the chosen reader does not take (a :class:`TypeError` naming the
        option, the reader and what it accepts). ``strict=False`` drops them instead, so one
        set of options can serve several formats (``bin_width`` only matters for spike times).
    **kwargs
        Passed on to the reader (e.g. ``activity=``, ``bin_width=``, ``frame_rate=``,
        ``max_bytes=``, ``trusted=``, or ``layers=`` for a model recording).

    Returns
    -------
    xarray.Dataset
        The reader's output: ``activity`` (time, unit) with ``frame_time``, unit coords and
        attrs ``frame_rate``, ``source``, ``format`` (``'suite2p'``, ``'nwb'``, ``'mat'``,
        ``'npz'`` or ``'netphys'``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    RecordingFormatError
        If ``path`` is none of the supported formats (the message lists what was looked for).
    TypeError
        If ``strict`` and an option is not one the chosen reader takes.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> path = tempfile.mkdtemp() + "/spikes.npz"
    >>> np.savez(path, spike_times=np.array([0.1, 0.2]), spike_clusters=np.array([0, 1]))
    >>> open_dataset(path, bin_width=0.1).attrs["format"]
    'npz'
    """
    func = "open_dataset"
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{func}(): `path` {str(p)!r} does not exist.")
    if p.is_dir():
        if p.suffix == ".zarr" or (p / "zarr.json").is_file() or (p / ".zgroup").is_file():
            options = _check_options("open_recording", ["layers"], kwargs, strict)
            return _model_recording(p, options.get("layers"))
        from netphys.io.suite2p import is_suite2p_folder, read_suite2p

        if is_suite2p_folder(p):
            return _call(read_suite2p, p, kwargs, strict)
        raise RecordingFormatError(
            f"{func}(): the directory {p} is neither a netphys recording (*.zarr with zarr.json) "
            "nor a suite2p output (F.npy in it, in plane*/ or in suite2p/plane*/)."
        )
    if not p.is_file():  # reading a FIFO would block forever, a device never ends
        raise RecordingFormatError(
            f"{func}(): {p} is neither a regular file nor a folder (a FIFO, socket or device); "
            "netphys reads recordings only from files and folders. Save the data to a file first."
        )
    kind = _sniff(p)
    if kind == "npz":
        from netphys.io.npz import read_npz

        return _call(read_npz, p, kwargs, strict)
    if kind == "mat":
        from netphys.io.matlab import read_stringer_mat

        return _call(read_stringer_mat, p, kwargs, strict)
    if kind == "nwb":
        from netphys.io.nwb import read_nwb

        return _call(read_nwb, p, kwargs, strict)
    raise RecordingFormatError(
        f"{func}(): {p} is not a recognised recording: looked for a zip (.npz), a MATLAB .mat "
        "header and an HDF5 (NWB) signature in its first bytes, and found none. Supported: "
        "suite2p folders, NWB 2 files, MATLAB .mat, .npz and netphys *.zarr recordings."
    )
