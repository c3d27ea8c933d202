"""Write whole Zarr v3 chunks directly: encode with Blosc in a thread pool, one wait per block.

zarr-python's ``arr[a:b] = values`` path costs about twice the codec's own CPU time on large
blocks (chunk assembly copies, per-chunk coroutines, an event-loop round trip per array). For
the recorder's appends, every write starts on a time-chunk boundary of a plain array (bytes
codec, optional Blosc, no sharding, no filters), so the chunk bytes can be produced exactly as
zarr would produce them: the chunk's values in C order, little endian, padded with the fill
value at the array's edge, then Blosc-compressed (self-describing frames). Files are written
atomically (temporary file, then rename), like zarr's ``LocalStore``. All chunks of all arrays
of one block are encoded and written by a small thread pool (Blosc releases the GIL), so the
recording thread waits once per block. Anything else falls back to zarr's own write path.

The result is a standard Zarr v3 store: :func:`netphys.open_recording`, ``zarr`` and plain
``xarray`` read it (tested chunk for chunk against zarr's own encoding).
"""

from __future__ import annotations

import contextlib
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

__all__ = ["ChunkWriter", "direct_spec", "write_file"]

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


def write_file(path: Path, data: Any, *, root: Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, then rename).

    Missing folders are created strictly below ``root`` (none without ``root``), never
    ``root`` itself: a store deleted under a writer raises ``FileNotFoundError`` instead of
    being recreated half.
    """
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.partial")  # `recover` removes strays
    try:
        with open(tmp, "wb") as f:
            f.write(data)
    except FileNotFoundError:
        if root is None:
            raise
        folder = root
        for part in path.parent.relative_to(root).parts:
            folder = folder / part
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder)  # raises FileNotFoundError if `root` is gone
        with open(tmp, "wb") as f:
            f.write(data)
    os.replace(tmp, path)


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
    """

    def __init__(self, root: Path, *, threads: int = 2) -> None:
        self.root = Path(root)
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, threads), thread_name_prefix="netphys-enc"
        )
        self._specs: dict[str, _Spec | None] = {}
        self._lock = threading.Lock()
        self.bytes_written = 0

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
            futures += [
                self._pool.submit(self._one, spec, values, t, i, self.root)
                for i in np.ndindex(*grid)
            ]
        self.bytes_written += sum(_wait_all(futures))

    def write_files(self, items: Sequence[tuple[Path, bytes]]) -> None:
        """Write each ``(path, data)`` atomically in the thread pool; wait for all."""
        futures = [
            self._pool.submit(write_file, path, data, root=self.root) for path, data in items
        ]
        _wait_all(futures)

    @staticmethod
    def _one(spec: _Spec, values: np.ndarray, t: int, idx: tuple[int, ...], root: Path) -> int:
        sel = tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, spec.chunks[1:], strict=True))
        part = values[(slice(None), *sel)]
        if part.shape != spec.chunks:
            # edge chunk: pad with the fill value (zarr stores full-size chunks)
            full = np.empty(spec.chunks, spec.dtype)
            full[...] = spec.fill
            full[tuple(slice(0, s) for s in part.shape)] = part
            part = full
        else:
            part = np.ascontiguousarray(part, dtype=spec.dtype)
        raw: Any = part
        data = memoryview(raw).cast("B") if spec.codec is None else spec.codec.encode(part)
        path = spec.folder / spec.encode_key((t, *idx))
        write_file(path, data, root=root)
        return len(data)

    def close(self) -> None:
        """Stop the encoder threads."""
        self._pool.shutdown(wait=True)


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
