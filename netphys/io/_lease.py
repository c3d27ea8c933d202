"""The writer's lease on a recording path: who writes it, and a lock a crash cannot leave held.

A writer holds an exclusive ``flock`` on a small lock file beside the store
(``.NAME.zarr.netphys-lock``; inside the store when the folder is read-only). The kernel drops
the lock when the process ends, however it ends (SIGKILL included), so a crashed writer never
blocks anyone. The file holds the writer's pid, host and start time, for error messages only.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

from netphys.errors import RecordingError

__all__ = ["Lease", "lock_path"]


def lock_path(store: Path) -> Path:
    """Path of the lock file of the recording ``store``."""
    return store.parent / f".{store.name}.netphys-lock"


def _holder_text(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text())
        return (
            f"process {info.get('pid')} on host {info.get('host')!r} (since {info.get('started')})"
        )
    except (OSError, ValueError):
        return "another process"


class Lease:
    """An exclusive, crash-released lock on one recording path.

    Examples
    --------
    >>> import tempfile
    >>> store = Path(tempfile.mkdtemp()) / "r.zarr"
    >>> lease = Lease.acquire(store, func="example")
    >>> Lease.held_by_other(store)  # a live process (this one) holds it
    True
    >>> lease.release()
    >>> Lease.held_by_other(store)
    False
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, store: Path, *, func: str, what: str = "write") -> Lease:
        """Take the lease on ``store`` or raise :class:`RecordingError` naming the holder."""
        lease = cls._try(store)
        if lease is None:
            lock = cls._existing_lock(store)
            raise RecordingError(
                f"{func}(): {str(store)!r} is being written by {_holder_text(lock)}; "
                f"refusing to {what} it while that writer is alive (two writers would corrupt "
                "it). Wait until it finishes, choose another `path`, or stop that process. "
                "(A crashed writer releases its lock by itself.)"
            )
        return lease

    @staticmethod
    def _existing_lock(store: Path) -> Path:
        inside = store / ".netphys-lock"
        return inside if inside.exists() and not lock_path(store).exists() else lock_path(store)

    @classmethod
    def _try(cls, store: Path) -> Lease | None:
        for lock in (lock_path(store), store / ".netphys-lock"):
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                continue  # read-only folder: fall back to a lock inside the store
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder unlinked the file between our open and lock: retry
                os.close(fd)
                return cls._try(store)
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            }
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode())
            return cls(lock, fd)
        raise PermissionError(
            f"netphys: cannot write the lock file of {str(store)!r} (no write permission "
            "beside or inside it); choose a writable `path`."
        )

    @classmethod
    def held_by_other(cls, store: Path) -> bool:
        """Return True if a live process holds the lease on ``store``."""
        for lock in (lock_path(store), store / ".netphys-lock"):
            try:
                fd = os.open(lock, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            finally:
                os.close(fd)
        return False

    @staticmethod
    def holder(store: Path) -> str:
        """Describe the process that holds the lease (for messages)."""
        return _holder_text(Lease._existing_lock(store))

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:  # pragma: no cover - safety net
        with contextlib.suppress(Exception):
            self.release()

    def info(self) -> dict[str, Any]:
        """Pid, host and start time written in the lock file."""
        return dict(json.loads(self.path.read_text()))
