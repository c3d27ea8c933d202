"""Write whole Zarr v3 chunks directly: encode with Blosc in a thread pool, one wait per block.

zarr-python's ``arr[a:b] = values`` path costs about twice the codec's own CPU time on large
blocks (chunk assembly copies, per-chunk coroutines, an event-loop round trip per array). For
the recorder's appends, every write starts on a time-chunk boundary of a plain array (bytes
codec, optional Blosc, no sharding, no filters), so the chunk bytes can be produced exactly as
zarr would produce them: the chunk's values in C order, little endian, padded with the fill
value at the array's edge, then Blosc-compressed (self-describing frames). A small chunk that
holds only the fill value is not written (zarr's default; it reads back as the fill value).
Files are written atomically (temporary file, then rename), like zarr's ``LocalStore``. All
chunks of all arrays of one block are encoded and written by a small thread pool (Blosc
releases the GIL), so the recording thread waits once per block. Anything else falls back to
zarr's own write path.

Chunk files of at least :data:`DIRECT_MIN` bytes are written with ``O_DIRECT`` where the OS and
file system allow it (Linux; ext4, xfs, btrfs, ...): the disk reads them straight from a reused,
page-aligned buffer, so the kernel neither copies them into its page cache nor allocates fresh
pages for it. On the project's 2-core VM this cut a recording's CPU time by 10-17%
(``benchmarks/record_overhead.py``, its "page cache" row). The file is written padded to the
alignment and truncated to its exact size; where ``O_DIRECT`` is refused the writer falls back
to ordinary writes.

The result is a standard Zarr v3 store: :func:`netphys.open_recording`, ``zarr`` and plain
``xarray`` read it (tested chunk for chunk against zarr's own encoding).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numcodecs import Blosc
from zarr.codecs import BloscCodec, BytesCodec

__all__ = ["DIRECT_MIN", "O_DIRECT_AVAILABLE", "ChunkWriter", "direct_spec", "write_file"]

#: Smallest chunk file (bytes) written with ``O_DIRECT``; smaller files go through the page cache.
DIRECT_MIN = 1 << 20
#: Alignment of ``O_DIRECT`` buffers, lengths and offsets (covers 512-byte and 4 KiB sectors).
_ALIGN = 4096
_O_DIRECT = getattr(os, "O_DIRECT", 0)
#: Whether this OS has ``O_DIRECT`` at all (a file system may still refuse it).
O_DIRECT_AVAILABLE = bool(_O_DIRECT)

_SHUFFLE = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}


@dataclass(frozen=True)
class _Spec:
    """What is needed to write one array's chunks without zarr."""

    folder: Path
    chunks: tuple[int, ...]
    shape_tail: tuple[int, ...]
    dtype: np.dtype
    fill: Any
    codec: Blosc | None
    encode_key: Any


def direct_spec(folder: Path, arr: Any) -> _Spec | None:
    """Return the direct-write spec of a zarr array, or None if zarr must write it.

    Only local, unsharded, filter-free arrays whose codecs are ``bytes`` (little endian)
    optionally followed by ``blosc`` qualify; everything else keeps zarr's write path.
    """
    meta = arr.metadata
    codecs = list(getattr(meta, "codecs", ()))
    if getattr(meta, "zarr_format", 3) != 3 or not codecs or not isinstance(codecs[0], BytesCodec):
        return None
    endian = getattr(codecs[0].endian, "value", codecs[0].endian)
    if endian not in (None, "little"):
        return None
    codec = None
    if len(codecs) == 2 and isinstance(codecs[1], BloscCodec):
        b = codecs[1]
        codec = Blosc(
            cname=str(getattr(b.cname, "value", b.cname)),
            clevel=int(b.clevel),
            shuffle=_SHUFFLE[str(getattr(b.shuffle, "value", b.shuffle))],
            blocksize=int(b.blocksize),
        )
    elif len(codecs) != 1:
        return None
    dtype = np.dtype(arr.dtype).newbyteorder("<")
    fill = meta.fill_value
    return _Spec(
        folder=Path(folder),
        chunks=tuple(int(c) for c in arr.chunks),
        shape_tail=tuple(int(s) for s in arr.shape[1:]),
        dtype=dtype,
        fill=np.asarray(fill, dtype=dtype) if fill is not None else np.zeros((), dtype),
        codec=codec,
        encode_key=meta.encode_chunk_key,
    )


def _all_fill(chunk: np.ndarray, fill: np.ndarray) -> bool:
    """Whether every value of ``chunk`` has the bits of ``fill`` (NaN, -0.0 compare by bits)."""
    if chunk.dtype.kind not in "fiub" or chunk.dtype.itemsize not in (1, 2, 4, 8):
        return False  # (not among the recorder's dtypes) written as it is
    bits = np.dtype(f"u{chunk.dtype.itemsize}")
    return bool(np.all(chunk.view(bits) == fill.view(bits)))


def _partial(path: Path) -> Path:
    return path.with_suffix(f".{uuid.uuid4().hex}.partial")  # `recover` removes strays


def _make_folders(path: Path, root: Path | None) -> None:
    """Create the missing folders of ``path`` strictly below ``root`` (never ``root``)."""
    if root is None:
        raise FileNotFoundError(errno.ENOENT, "missing folder", str(path.parent))
    folder = root
    for part in path.parent.relative_to(root).parts:
        folder = folder / part
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder)  # raises FileNotFoundError if `root` is gone


def write_file(path: Path, data: Any, *, root: Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, then rename).

    Missing folders are created strictly below ``root`` (none without ``root``), never
    ``root`` itself: a store deleted under a writer raises ``FileNotFoundError`` instead of
    being recreated half.
    """
    tmp = _partial(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
    except FileNotFoundError:
        _make_folders(path, root)
        with open(tmp, "wb") as f:
            f.write(data)
    os.replace(tmp, path)


#: Suffix of the spare file kept beside a document that :func:`exchange_file` rewrites.
SPARE_SUFFIX = ".netphys-spare"
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _find_renameat2() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):  # not glibc >= 2.28 / not Linux
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _find_renameat2()


def spare_of(path: Path) -> Path:
    """Return the spare file of ``path`` (hidden, beside it)."""
    return path.with_name(f".{path.name}{SPARE_SUFFIX}")


def _write_all(fd: int, view: memoryview) -> None:
    """Write every byte of ``view`` to ``fd`` (``os.write`` may write fewer at a time)."""
    done = 0
    while done < len(view):
        done += os.write(fd, view[done:])


def exchange_file(path: Path, data: bytes) -> bool:
    """Replace the content of the existing file ``path`` atomically, without a new inode.

    ``data`` goes into the spare file beside ``path`` (created once, then reused), which is
    swapped with ``path`` in one ``renameat2(RENAME_EXCHANGE)``: a reader sees the old or the
    new document, never a mix, and no file is created or deleted (on ext4 each new inode
    cost 0.5-0.8 ms of CPU on the project's VM, more right after many deletions). After the
    swap the spare holds the previous document; :func:`remove_spares` deletes spares when the
    writer is done, and ``recover`` deletes those a crash left. Returns False, having changed
    nothing, where the exchange is not available (not Linux, old glibc, a file system
    without it); the caller then writes ``path`` another way.
    """
    if _renameat2 is None:
        return False
    spare = spare_of(path)
    # never through a symbolic link planted as the spare (it would truncate its target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(spare, flags, 0o644)
    try:
        _write_all(fd, memoryview(data))
    finally:
        os.close(fd)
    if _renameat2(_AT_FDCWD, os.fsencode(spare), _AT_FDCWD, os.fsencode(path), _RENAME_EXCHANGE):
        err = ctypes.get_errno()
        os.unlink(spare)
        if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOENT):
            return False
        raise OSError(err, os.strerror(err), str(path))
    return True


def remove_spares(paths: Sequence[Path]) -> None:
    """Delete the spare files of ``paths`` (those that exist)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spare_of(path))


def aligned_buffer(local: threading.local, nbytes: int) -> np.ndarray:
    """Return a reused, page-aligned uint8 buffer: ``nbytes`` rounded up to the alignment.

    One per thread (``local``): the encoder threads write distinct chunks at once.
    """
    size = -(-nbytes // _ALIGN) * _ALIGN
    buf: np.ndarray | None = getattr(local, "buf", None)
    if buf is None or buf.size < size:
        raw = np.empty(size + _ALIGN, np.uint8)
        start = -raw.ctypes.data % _ALIGN
        buf = raw[start : start + size]
        local.buf = buf
    return buf[:size]


def write_direct(path: Path, buf: np.ndarray, nbytes: int, *, root: Path | None = None) -> bool:
    """Write the first ``nbytes`` of the aligned ``buf`` to ``path`` with ``O_DIRECT``.

    ``buf`` comes from :func:`aligned_buffer` (its length a multiple of the alignment; the
    bytes after ``nbytes`` are zeroed here and cut off by truncating the file). Atomic like
    :func:`write_file`. Returns False, having written nothing, where ``O_DIRECT`` is refused
    (no such flag, or ``EINVAL`` from a file system without it).
    """
    if not _O_DIRECT:
        return False
    buf[nbytes:] = 0
    tmp = _partial(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_DIRECT
    try:
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:
            _make_folders(path, root)
            fd = os.open(tmp, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    try:
        _write_all(fd, buf.data)
        if len(buf) != nbytes:
            os.ftruncate(fd, nbytes)
    except OSError as exc:
        os.close(fd)
        os.unlink(tmp)
        if exc.errno == errno.EINVAL:
            return False
        raise
    os.close(fd)
    os.replace(tmp, path)
    return True


def _wait_all(futures: Sequence[Future[Any]]) -> list[Any]:
    """Return every result; wait for all, so no write is left running behind an error."""
    results, err = [], None
    for f in futures:
        try:
            results.append(f.result())
        except BaseException as exc:  # pragma: no cover - re-raised below
            err = err or exc
    if err is not None:
        raise err
    return results


class ChunkWriter:
    """Encode and write whole chunks of several arrays in a shared thread pool.

    Parameters
    ----------
    root : Path
        Directory of the Zarr store.
    threads : int, default=2
        Encoder threads. Blosc itself runs single-threaded in each (no oversubscription).
    direct_io : bool, default=True
        Write chunk files of at least :data:`DIRECT_MIN` bytes with ``O_DIRECT`` where it is
        allowed (see the module docstring); False writes every file through the page cache.
    """

    def __init__(self, root: Path, *, threads: int = 2, direct_io: bool = True) -> None:
        self.root = Path(root)
        self.direct_io = bool(direct_io and _O_DIRECT)
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, threads), thread_name_prefix="netphys-enc"
        )
        self._specs: dict[str, _Spec | None] = {}
        self._lock = threading.Lock()
        self.bytes_written = 0
        self.exchange = _renameat2 is not None
        self._spares: set[Path] = set()

    def spec(self, arr: Any, key: str | None = None) -> _Spec | None:
        """Return the cached :func:`direct_spec` of ``arr`` stored at ``key`` (default: its path)."""
        key = arr.path if key is None else key
        if key not in self._specs:
            self._specs[key] = direct_spec(self.root / key, arr)
        return self._specs[key]

    def write(self, items: Sequence[tuple[_Spec, np.ndarray, int]]) -> None:
        """Write ``values`` at time-chunk index ``t`` for each ``(spec, values, t)``; wait.

        ``values`` has at most one time chunk of rows (fewer rows are padded with the fill
        value, like zarr does at an array's edge) and the array's full trailing shape.
        """
        futures: list[Future[int]] = []
        for spec, values, t in items:
            if values.shape[0] > spec.chunks[0] or tuple(values.shape[1:]) != spec.shape_tail:
                raise ValueError(
                    f"internal: block of shape {values.shape} does not fit chunk {spec.chunks} "
                    f"of an array with trailing shape {spec.shape_tail}"
                )
            grid = [-(-s // c) for s, c in zip(spec.shape_tail, spec.chunks[1:], strict=True)]
            futures += [self._pool.submit(self._one, spec, values, t, i) for i in np.ndindex(*grid)]
        self.bytes_written += sum(_wait_all(futures))

    def replace_files(self, items: Sequence[tuple[Path, bytes]]) -> None:
        """Replace existing small documents atomically (:func:`exchange_file`); in this thread.

        Falls back to :func:`write_file` (a new inode per call) where the exchange is refused.
        The spares made are deleted by :meth:`close`.
        """
        for path, data in items:
            if self.exchange and exchange_file(path, data):
                self._spares.add(path)
                continue
            self.exchange = False
            write_file(path, data, root=self.root)

    def _one(self, spec: _Spec, values: np.ndarray, t: int, idx: tuple[int, ...]) -> int:
        sel = tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, spec.chunks[1:], strict=True))
        part = values[(slice(None), *sel)]
        path = spec.folder / spec.encode_key((t, *idx))
        nbytes = int(np.prod(spec.chunks)) * spec.dtype.itemsize
        direct = self.direct_io and nbytes >= DIRECT_MIN
        buf = aligned_buffer(self._local, nbytes) if direct and spec.codec is None else None
        copy = buf is not None or part.shape != spec.chunks
        if buf is not None:  # the chunk goes straight into the aligned buffer: one copy
            chunk = buf[:nbytes].view(spec.dtype).reshape(spec.chunks)
        elif copy:
            chunk = np.empty(spec.chunks, spec.dtype)
        else:
            chunk = np.ascontiguousarray(part, dtype=spec.dtype)
        if copy:
            if part.shape != spec.chunks:  # edge chunk: padded with the fill value, like zarr
                chunk[...] = spec.fill
            chunk[tuple(slice(0, s) for s in part.shape)] = part
        if nbytes < DIRECT_MIN and _all_fill(chunk, spec.fill):
            # like zarr's default (`write_empty_chunks=False`): no object for a chunk that
            # holds only the fill value (it reads back as the fill value). The demo CNN's
            # frame table has 5 such columns per flush (epoch, step, label, repeat, loss
            # without labels), each a file to create otherwise. A stale object at this key
            # (a chunk written before a crash and not committed) is deleted.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return 0
        raw: Any = chunk
        data = memoryview(raw).cast("B") if spec.codec is None else spec.codec.encode(chunk)
        if direct and buf is None and len(data) >= DIRECT_MIN:
            buf = aligned_buffer(self._local, len(data))
            buf[: len(data)] = np.frombuffer(data, np.uint8)
        if buf is not None and self.direct_io:
            if write_direct(path, buf, len(data), root=self.root):
                return len(data)
            self.direct_io = False  # refused here: the page cache from now on
        write_file(path, data, root=self.root)
        return len(data)

    def close(self) -> None:
        """Stop the encoder threads; delete the spare files of :meth:`replace_files`."""
        self._pool.shutdown(wait=True)
        remove_spares(sorted(self._spares))
        self._spares.clear()


#: Direct chunk writes on (benchmarks switch it off to compare with zarr's own write path).
ENABLED = True


def write_arrays(
    writer: ChunkWriter | None, arrays: Sequence[tuple[Any, np.ndarray]], start: int
) -> None:
    """Write each ``(zarr array, values)`` at rows ``start:start + len(values)``.

    Arrays whose block starts on a time-chunk boundary are written directly by ``writer``
    (all of them in one wait); the others through zarr.
    """
    direct: list[tuple[_Spec, np.ndarray, int]] = []
    for arr, values in arrays:
        c = int(arr.chunks[0])
        spec = writer.spec(arr) if writer is not None and ENABLED else None
        if spec is None or start % c:
            arr[start : start + len(values)] = values
            continue
        direct += [(spec, values[k : k + c], (start + k) // c) for k in range(0, len(values), c)]
    if direct:
        assert writer is not None
        writer.write(direct)
