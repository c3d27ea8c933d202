"""Read NWB 2 files (ophys ROI series or units tables) with h5py; write NWB ophys with pynwb.

Reading needs only h5py (:mod:`netphys.io._nwb_read` for checked reads, tables and masks,
:mod:`netphys.io._nwb_ophys` for ROI series and units). Writing (:mod:`netphys.io._nwb_write`)
uses pynwb (``pip install netphys[nwb]``), which also builds the cached specification a valid
NWB file carries. Files that point at other files (external links or storage, virtual
datasets) are refused unless ``trusted=True``; every dataset's declared size is checked against
``max_bytes`` before it is read.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from netphys.errors import RecordingFormatError, UnsafeFileError
from netphys.io._common import build_dataset, choose_activity, frame_rate_from_times
from netphys.io._guard import (
    DEFAULT_MAX_BYTES,
    ByteBudget,
    check_hdf5_confined,
    check_read_chunks,
)
from netphys.io._hdf5_lazy import LazySpec
from netphys.io._nwb_ophys import read_ophys, read_units
from netphys.io._nwb_read import behaviour, intervals, text
from netphys.io._nwb_write import write_nwb

__all__ = ["read_nwb", "to_nwb", "write_nwb"]


def read_nwb(
    path: str | os.PathLike[str],
    *,
    activity: str | None = None,
    modality: str = "auto",
    bin_width: float = 0.05,
    t_start: float | None = None,
    t_stop: float | None = None,
    swap_xy: bool | str = "auto",
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    trusted: bool = False,
    chunks: str | int | None = "auto",
) -> xr.Dataset:
    """Read an NWB 2 file (HDF5) into the (time, unit) reader schema, with h5py only.

    Parameters
    ----------
    path : str or path-like
        The ``.nwb`` file.
    activity : str, optional
        Which ROI series becomes ``activity``: ``'spks'`` (series named Deconvolved/spks/
        events), ``'dff'`` (DfOverF), ``'F'`` (Fluorescence) or ``'neuropil'``. Default: the
        first present in that order. For units tables ``activity`` is ``'counts'``.
    modality : {'auto', 'ophys', 'units'}, default='auto'
        ``'auto'`` reads ROI response series when the file has any, else the units table.
    bin_width : float, default=0.05
        Bin width (s) for spike times of a units table.
    t_start, t_stop : float, optional
        Time span binned (s); default from ``min(0, first spike)`` to the last spike.
    swap_xy : bool or 'auto', default='auto'
        suite2p's NWB export writes image rows (``ypix``) into the mask's ``x`` field and columns
        into ``y``. ``'auto'`` swaps back when the PlaneSegmentation description mentions
        suite2p; True/False force it.
    max_bytes : int or None, default=4 GiB
        Most bytes the reader may allocate, checked against every dataset's declared size (and
        the number of spike bins) before reading it. None: no limit. Lazy ROI series (see
        ``chunks``) are not counted, as nothing of them is read at open, except a series
        compressed more than 100-fold (a compression bomb), whose whole declared size is;
        each chunk must fit in ``max_bytes``.
    trusted : bool, default=False
        Follow HDF5 external links, external raw storage and virtual datasets, which read other
        files on the machine. Refused by default.
    chunks : 'auto', int or None, default='auto'
        How the ROI series come back. ``'auto'``: lazily, as dask arrays over the file's HDF5
        chunks (as :func:`xarray.open_zarr` does): every unit in one chunk and as many frames
        as fit in dask's ``array.chunk-size`` (128 MiB unless configured), rounded to whole
        HDF5 chunks; nothing is read until computed, and the arrays can be computed by
        dask.distributed workers (each reopens the file read-only). An int: that many frames
        per chunk (rounded up to whole HDF5 chunks). None: read into memory (NumPy) now.
        Timestamps, ROI tables, behaviour and interval tables, and the spike counts of a units
        table are always read at once.

    Returns
    -------
    xarray.Dataset
        Dims ``(time, unit)``: ``activity`` plus ``F``, ``dff``, ``neuropil``, ``spks`` as found
        (ophys) or ``counts`` (units, spikes per bin); coords ``frame_time`` (series timestamps,
        or ``starting_time + arange(n) / rate``; bin centres for units), ``unit_id`` (table
        ``id``), ``plane``, ``pos_x``/``pos_y``/``pos_z`` (weighted centroid of pixel/voxel masks
        or image masks, in pixels; else the centre of Allen-style ``x``/``y``/``width``/
        ``height`` box columns), ``is_cell``/``cell_prob`` (``iscell`` column) and every plain
        1-D column of the ROI or units table (e.g. ``location``); ``behaviour`` (time,
        behaviour_var) for regularly sampled TimeSeries in /acquisition and /processing,
        nearest sample per frame (NaN outside their span); variables along ``interval`` for every
        table under /intervals (``interval_start``, ``interval_stop``, ``interval_table``,
        ``interval_tags``, other columns as ``interval_<name>``). Attrs ``frame_rate``,
        ``source``, ``format='nwb'``, ``modality``, ``nwb_version``.

    Raises
    ------
    RecordingFormatError
        If the file is not readable HDF5 (truncated, corrupted, a link cycle, datasets declared
        but never written) or holds neither ROI response series nor a units table with spike
        times, or its activity is not real numbers.
    UnsafeFileError
        If the file reads other files (external links or storage, virtual datasets) and
        ``trusted`` is False.
    ResourceLimitError
        If the file asks for more than ``max_bytes``.

    Notes
    -----
    Every check of an eager read is made at open on the lazy path too (confinement, link
    cycles, datasets never written, compression bombs), plus: every stored chunk lies inside
    the file (a truncated file fails at open). Each chunk read checks again that the file is
    unchanged since it was opened; a changed file raises :class:`RecordingFormatError`.
    Lazy values equal the eager (``chunks=None``) ones exactly.

    Examples
    --------
    >>> import numpy as np, tempfile, xarray as xr
    >>> act = xr.DataArray(np.random.default_rng(0).random((30, 5)), dims=("time", "unit"),
    ...                    attrs={"frame_rate": 10.0})
    >>> path = write_nwb(act, tempfile.mkdtemp() + "/rec.nwb")
    >>> ds = read_nwb(path)
    >>> ds.activity.shape, ds.activity.chunks
    ((30, 5), ((30,), (5,)))
    >>> bool((ds.activity == read_nwb(path, chunks=None).activity).all())
    True
    """
    func = "read_nwb"
    name = os.fspath(path)
    if modality not in ("auto", "ophys", "units"):
        raise ValueError(
            f"{func}(): `modality` must be 'auto', 'ophys' or 'units'; got {modality!r}."
        )
    if not (isinstance(bin_width, (int, float)) and bin_width > 0):
        raise ValueError(f"{func}(): `bin_width` must be a positive number (s); got {bin_width!r}.")
    chunks = check_read_chunks(chunks, func=func)
    if not Path(name).is_file():
        raise FileNotFoundError(f"{func}(): `path` {name!r} is not a file.")
    budget = ByteBudget(max_bytes, func=func, source=name)
    lazy = None if chunks is None else LazySpec(chunks=chunks, trusted=bool(trusted))
    try:
        f = h5py.File(name, "r")
    except OSError as exc:
        raise RecordingFormatError(
            f"{func}(): {name} is not a readable HDF5/NWB file ({exc}). It may be truncated or "
            "corrupted; copy it again from its source."
        ) from exc
    try:
        with f:
            check_hdf5_confined(f, func=func, source=name, trusted=trusted)
            return _read_open(
                f,
                name,
                activity=activity,
                modality=modality,
                bin_width=bin_width,
                t_start=t_start,
                t_stop=t_stop,
                swap_xy=swap_xy,
                budget=budget,
                lazy=lazy,
            )
    except (RecordingFormatError, UnsafeFileError):
        raise
    except ValueError as exc:
        if str(exc).startswith(f"{func}():"):  # our own message about an argument
            raise
        raise RecordingFormatError(
            f"{func}(): {name}: could not read the file ({type(exc).__name__}: {exc}). It may be "
            "truncated or corrupted."
        ) from exc
    except (OSError, KeyError, TypeError, RuntimeError, IndexError) as exc:
        raise RecordingFormatError(
            f"{func}(): {name}: could not read the file ({type(exc).__name__}: {exc}). It may be "
            "truncated or corrupted."
        ) from exc


def _read_open(
    f: h5py.File,
    name: str,
    *,
    activity: str | None,
    modality: str,
    bin_width: float,
    t_start: float | None,
    t_stop: float | None,
    swap_xy: bool | str,
    budget: ByteBudget,
    lazy: LazySpec | None,
) -> xr.Dataset:
    func = "read_nwb"
    traces: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if modality in ("auto", "ophys"):
        traces, frame_time, coords, extra, chosen = read_ophys(
            f, name, activity=activity, swap_xy=swap_xy, budget=budget, lazy=lazy
        )
    has_units = "units" in f and "spike_times" in f["units"]
    if not traces and modality in ("auto", "units") and has_units:
        traces, frame_time, coords, extra = read_units(
            f, name, bin_width=bin_width, t_start=t_start, t_stop=t_stop, budget=budget
        )
        chosen = choose_activity(
            list(traces), activity, preference=("counts",), func=func, source=name
        )
    if not traces:
        raise RecordingFormatError(
            f"{func}(): {name} has no neural data netphys can read: looked for RoiResponseSeries "
            "(processing/ophys/Fluorescence, DfOverF, ...) with a PlaneSegmentation ROI table"
            + (" and for a /units table with spike_times" if modality != "ophys" else "")
            + f" (modality={modality!r}). Found top-level groups {sorted(f.keys())}."
        )
    ds = build_dataset(
        traces,
        activity=chosen,
        frame_time=frame_time,
        unit_coords=coords,
        attrs={
            "frame_rate": frame_rate_from_times(frame_time),
            "source": name,
            "format": "nwb",
            "nwb_version": text(f.attrs.get("nwb_version", "")),
            **extra,  # an exact frame_rate (series rate, 1 / bin_width) overrides the estimate
        },
    )
    for c, v in coords.items():
        if c not in ds.coords and np.shape(v) == (ds.sizes["unit"],):
            ds = ds.assign_coords({c: ("unit", v)})
    beh = behaviour(f, np.asarray(frame_time), budget)
    if beh is not None:
        ds["behaviour"] = xr.Variable(
            ("time", "behaviour_var"),
            beh[0],
            attrs={"long_name": "behaviour, nearest sample per frame"},
        )
        ds = ds.assign_coords(behaviour_var=("behaviour_var", beh[1]))
    for k, var in intervals(f, budget).items():
        if k in ("interval_table", "interval_tags"):
            ds = ds.assign_coords({k: var})
        else:
            ds[k] = var
    return ds


def to_nwb(recording: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write an NWB file: deprecated alias of :func:`write_nwb` (removed next release).

    Examples
    --------
    >>> import numpy as np, tempfile, warnings, xarray as xr
    >>> act = xr.DataArray(np.zeros((4, 2)), dims=("time", "unit"), attrs={"frame_rate": 5.0})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = to_nwb(act, tempfile.mkdtemp() + "/x.nwb")
    >>> caught[0].category.__name__
    'DeprecationWarning'
    """
    warnings.warn(
        "netphys.io.to_nwb() is renamed write_nwb() (read_*/write_* pairs); the old name will "
        "be removed in the next release.",
        DeprecationWarning,
        stacklevel=2,
    )
    return write_nwb(recording, path, **kwargs)
