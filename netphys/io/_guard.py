"""Guards for readers of untrusted files: a byte budget and confinement checks.

Every reader in :mod:`netphys.io` takes ``max_bytes=`` (default :data:`DEFAULT_MAX_BYTES`,
4 GiB) and checks what a file *declares* (array shapes, zip member sizes, HDF5 dataset
shapes, numbers of spike bins) against it before allocating anything, so a small file that asks
for huge work fails fast with :class:`~netphys.errors.ResourceLimitError`. Readers of HDF5
files (NWB, MATLAB v7.3) refuse external links, external raw storage and virtual datasets,
which would read other files on the machine, unless ``trusted=True``.
:func:`check_store_confined` does the same for a directory store (Zarr): no symlink may point
out of it.

Examples
--------
>>> budget = ByteBudget(1000, func="read_x", source="x.bin")
>>> budget.take(600, "the traces")
>>> budget.take(600, "the masks")
Traceback (most recent call last):
...
netphys.errors.ResourceLimitError: read_x(): x.bin: the masks need 600 bytes, ...
"""

from __future__ import annotations

import numbers
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from netphys.errors import RecordingFormatError, ResourceLimitError, UnsafeFileError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "ByteBudget",
    "check_max_bytes",
    "check_read_chunks",
    "check_store_confined",
    "declared_nbytes",
]

#: Default of every reader's ``max_bytes=``: 4 GiB of arrays per call.
DEFAULT_MAX_BYTES = 4 * 2**30


def check_max_bytes(max_bytes: Any, *, func: str) -> int | None:
    """Check a ``max_bytes=`` argument: a positive int, or None for no limit.

    Examples
    --------
    >>> check_max_bytes(2**20, func="read_npz")
    1048576
    """
    if max_bytes is None:
        return None
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral):
        raise TypeError(
            f"{func}(): `max_bytes` must be an int number of bytes or None (no limit); got "
            f"{type(max_bytes).__name__} {max_bytes!r}. E.g. `max_bytes=16 * 2**30` for 16 GiB."
        )
    if int(max_bytes) <= 0:
        raise ValueError(f"{func}(): `max_bytes` must be > 0 (or None); got {max_bytes}.")
    return int(max_bytes)


def declared_nbytes(shape: Iterable[Any], itemsize: int) -> int:
    """Bytes an array of ``shape`` and ``itemsize`` needs, in Python ints (never overflows).

    Examples
    --------
    >>> declared_nbytes((10**10, 10**10), 8)
    800000000000000000000
    """
    n = int(itemsize)
    for s in shape:
        n *= max(int(s), 0)
    return n


def _human(n: int) -> str:
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


class ByteBudget:
    """Running total of the bytes a reader allocates, checked before each allocation.

    Parameters
    ----------
    max_bytes : int or None
        The limit (None: no limit).
    func : str
        Public function name, for the error message.
    source : str
        File being read, for the error message.

    Examples
    --------
    >>> b = ByteBudget(None, func="f", source="s")
    >>> b.take(10**30, "anything"); b.used
    1000000000000000000000000000000
    """

    def __init__(self, max_bytes: int | None, *, func: str, source: str) -> None:
        self.max_bytes = check_max_bytes(max_bytes, func=func)
        self.func = func
        self.source = source
        self.used = 0

    def check(self, nbytes: int, what: str) -> None:
        """Raise :class:`ResourceLimitError` if ``nbytes`` more would pass the limit."""
        if self.max_bytes is not None and self.used + int(nbytes) > self.max_bytes:
            raise ResourceLimitError(
                f"{self.func}(): {self.source}: {what} need {_human(int(nbytes))}, which with "
                f"{_human(self.used)} already read passes `max_bytes`={self.max_bytes} "
                f"({_human(self.max_bytes)}). If the file is genuine and you have the memory, "
                "pass a larger `max_bytes=` (or `max_bytes=None` for no limit)."
            )

    def take(self, nbytes: int, what: str) -> None:
        """Check ``nbytes`` (see :meth:`check`) and add it to the total."""
        self.check(nbytes, what)
        self.used += int(nbytes)

    def take_array(self, shape: Iterable[Any], dtype: Any, what: str) -> None:
        """:meth:`take` the bytes of an array of ``shape`` and ``dtype``."""
        self.take(declared_nbytes(shape, np.dtype(dtype).itemsize), what)


def check_store_confined(
    path: str | os.PathLike[str],
    *,
    func: str = "open_recording",
    files: Iterable[str | os.PathLike[str]] | None = None,
    what: str = "store",
    fix: str = "replace the link by a copy of the file if you trust it.",
) -> None:
    """Refuse a symlink that leads out of the directory ``path`` (or dangles out of it).

    Zarr reads chunk files by path; a chunk that is a symlink to ``/etc/passwd`` (or into
    another store) would return that file's bytes as data, and a suite2p folder whose
    ``F.npy`` links elsewhere would read that file. Symlinks that stay inside ``path`` are
    allowed; ``path`` itself may be a symlink (it is resolved first: the user named it).

    Parameters
    ----------
    path : str or path-like
        Root of the store or folder.
    func : str, default="open_recording"
        Public function name, for the error message.
    files : iterable of paths, optional
        Check only these paths (the files and folders a reader will open, below ``path``):
        each must resolve inside ``path``, through whatever links. Default: walk the whole
        tree (directory symlinks are not followed; their targets are checked).
    what : str, default="store"
        What ``path`` is, for the error message (``"store"``, ``"suite2p folder"``).
    fix : str
        The end of the error message: how to proceed if the user trusts the link.

    Raises
    ------
    UnsafeFileError
        If an entry resolves outside ``path``, or is a FIFO, socket or device (reading it
        would block or never end).

    Examples
    --------
    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> os.symlink("/etc/hostname", os.path.join(root, "c0"))
    >>> check_store_confined(root)
    Traceback (most recent call last):
    ...
    netphys.errors.UnsafeFileError: open_recording(): .../c0 is a symlink to /etc/hostname, ...
    >>> check_store_confined(root, files=[])  # only the files a reader opens are checked
    """
    root = Path(path).resolve()
    entries: Iterable[tuple[Path, bool | None]] = (
        _walk(root) if files is None else ((Path(f), None) for f in files)
    )
    for entry, special in entries:
        link = entry.is_symlink()
        if special or ((link or special is None) and _special(entry)):
            # reading a FIFO blocks forever; a device never ends
            raise UnsafeFileError(
                f"{func}(): {entry} is not a regular file or folder (a FIFO, socket or device); "
                f"netphys reads only regular files from a {what}. Replace it by a copy of the data."
            )
        if special is not None and not link:
            continue
        target = entry.resolve()
        if target != root and root not in target.parents:
            how = "is a symlink to" if link else "is reached through a symlink, at"
            raise UnsafeFileError(
                f"{func}(): {entry} {how} {target}, outside the {what} {root}. "
                f"netphys refuses to read data from outside a {what}; {fix}"
            )


def _walk(root: Path) -> Iterator[tuple[Path, bool]]:
    """Every entry under ``root`` (links not followed), with whether it is a FIFO/socket/device.

    Uses the directory listing's file types, so it costs no ``stat`` per file.
    """
    folders = [root]
    while folders:
        with os.scandir(folders.pop()) as listing:
            for e in listing:
                if e.is_dir(follow_symlinks=False):
                    folders.append(Path(e.path))
                    yield Path(e.path), False
                else:
                    yield Path(e.path), not e.is_symlink() and not e.is_file(follow_symlinks=False)


def _special(path: Path) -> bool:
    """Return True for an existing path (links followed) that is neither a file nor a folder."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _object_key(obj: Any) -> Any:
    import h5py

    return h5py.h5o.get_info(obj.id).addr


def check_hdf5_confined(f: Any, *, func: str, source: str, trusted: bool = False) -> None:
    """Refuse HDF5 content that reads other files, and hard-link cycles.

    Walks every link of the open file ``f`` without following any: external links, datasets
    with external raw storage (``dset.external``) and virtual datasets are refused unless
    ``trusted``; a group hard-linked below itself (a cycle) is always refused.

    Raises
    ------
    UnsafeFileError
        For an external link, external storage or a virtual dataset (``trusted=False``).
    RecordingFormatError
        For a link cycle.
    """
    import h5py

    fix = (
        "netphys refuses to read files other than the one given. If you trust the file and "
        "every file it points to, pass `trusted=True`."
    )
    group_keys: dict[str, Any] = {"": _object_key(f)}
    problems: list[str] = []
    cycles: list[str] = []
    damaged: list[str] = []

    def visit(name: str) -> bool | None:
        # never raise in here: h5py's iteration does not survive a Python exception
        link = f.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            problems.append(f"{name} is an external link to {link.filename}:{link.path}")
            return None
        if not isinstance(link, h5py.HardLink):
            return None  # soft links point inside this file and are seen as their targets
        try:
            obj = f[name]
        except Exception as exc:  # a damaged object header, reported below
            damaged.append(f"/{name} cannot be opened ({type(exc).__name__}: {exc})")
            return True  # stop visiting
        if isinstance(obj, h5py.Group):
            key = _object_key(obj)
            parts = name.split("/")
            ancestors = ["/".join(parts[:i]) for i in range(len(parts))]
            if any(group_keys.get(a) == key for a in ancestors):
                cycles.append(name)
                return True  # stop visiting
            group_keys[name] = key
        elif isinstance(obj, h5py.Dataset):
            if obj.external:
                problems.append(f"dataset /{name} keeps its data in external files {obj.external}")
            elif obj.is_virtual:
                sources = sorted({s.file_name for s in obj.virtual_sources()})
                problems.append(f"dataset /{name} is virtual (reads from {sources})")
        return None

    f.visit_links(visit)
    if damaged:
        raise RecordingFormatError(
            f"{func}(): {source}: {damaged[0]}. The file is truncated or corrupted; copy it "
            "again from its source."
        )
    if cycles:
        raise RecordingFormatError(
            f"{func}(): {source}: the group /{cycles[0]} is a hard link to one of its own "
            "ancestors (a link cycle). The file is damaged or forged."
        )
    if problems and not trusted:
        raise UnsafeFileError(f"{func}(): {source}: {problems[0]}. {fix}")


def check_hdf5_dataset(dset: Any, budget: ByteBudget, what: str) -> None:
    """Take ``dset``'s declared size from ``budget`` and refuse large never-written datasets.

    A dataset can declare a huge shape while storing nothing (chunks never written, or
    contiguous storage never allocated); reading it returns fill values. Such a dataset is
    refused when more than 16 MiB of it was never written. Compressed datasets are judged by
    their declared size (a gzip bomb declares what it expands to).
    """
    nbytes = declared_nbytes(dset.shape, dset.dtype.itemsize)
    budget.take(nbytes, f"{what} ({dset.name}, shape {dset.shape}, {dset.dtype})")
    check_hdf5_written(dset, budget)


def check_hdf5_written(dset: Any, budget: ByteBudget) -> None:
    """Refuse a dataset of which more than 16 MiB was declared but never written.

    The part of :func:`check_hdf5_dataset` that a lazy reader (which takes nothing from the
    budget at open) also needs.
    """
    nbytes = declared_nbytes(dset.shape, dset.dtype.itemsize)
    if nbytes <= _UNWRITTEN_SLACK:
        return
    if dset.chunks is None:
        written = int(dset.id.get_storage_size())
    else:
        chunk_bytes = declared_nbytes(dset.chunks, dset.dtype.itemsize)
        written = int(dset.id.get_num_chunks()) * chunk_bytes
    if nbytes - written > _UNWRITTEN_SLACK:
        raise RecordingFormatError(
            f"{budget.func}(): {budget.source}: dataset {dset.name} declares shape {dset.shape} "
            f"({_human(nbytes)}) but only {_human(written)} of it was ever written; reading it "
            "would return fill values. The file is incomplete or forged; write it again."
        )


_UNWRITTEN_SLACK = 16 * 2**20


def check_read_chunks(value: Any, *, func: str, name: str = "chunks") -> str | int | None:
    """Check a reader's ``chunks=``: 'auto', a positive int number of frames, or None.

    Like :func:`check_max_bytes`, an option of the suite2p, NWB and .mat readers.

    Examples
    --------
    >>> check_read_chunks(500, func="read_nwb")
    500
    """
    if value is None:
        return None
    if isinstance(value, str) and value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) <= 0:
        raise ValueError(
            f"{func}(): `{name}` must be 'auto' (dask arrays, chunk size chosen for you), a "
            f"positive int (frames per dask chunk) or None (read into memory now); got "
            f"{value!r}."
        )
    return int(value)
