"""The writers' lease on a recording path: who writes it, and a lock a crash cannot leave held.

Two mechanisms, both always used (``docs/format.md``, "One writer per path"):

- ``flock`` on a small lock file beside the store (``.NAME.zarr.netphys-lock``; inside the
  store when the folder is read-only). The kernel drops it when the process ends, however it
  ends (SIGKILL included). A single writer and ``recover`` lock it exclusively; the rank
  writers of a :class:`~netphys.recorder.DistributedRecorder` share it.
- A *heartbeat*: every holder keeps a file ``<host>-<pid>-<id>.json`` in the folder
  ``.NAME.zarr.netphys-lock.d`` with its pid, host, mode and a wall-clock timestamp that a
  daemon thread refreshes every :data:`HEARTBEAT_S` seconds. Where ``flock`` is unavailable
  (some network filesystems refuse it; some only lock on the local host) a holder is *live*
  when its heartbeat is younger than :data:`STALE_S`; on the checker's own host it must also
  be a running pid, so a crashed holder stops counting at once there and within
  :data:`STALE_S` elsewhere. A lease file left by a crash therefore never blocks forever;
  ``netphys.recover(path, force=True)`` still overrides a live-looking holder.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from netphys.errors import RecordingError

__all__ = ["HEARTBEAT_S", "STALE_S", "Lease", "lock_path"]

#: Seconds between two heartbeats of a live holder.
HEARTBEAT_S = 5.0
#: A heartbeat older than this (seconds) is a crashed holder (hosts' clocks must agree to it).
STALE_S = 60.0


def lock_path(store: Path) -> Path:
    """Path of the lock file of the recording ``store``."""
    return store.parent / f".{store.name}.netphys-lock"


def _beats(lock: Path) -> Path:
    return lock.with_name(lock.name + ".d")


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def _live(entry: dict[str, Any], now: float) -> bool:
    """Return True for a live holder: a fresh heartbeat and, on this host, a running pid."""
    try:
        fresh = now - float(entry["heartbeat"]) < STALE_S
        if entry.get("host") == socket.gethostname():
            return fresh and _pid_running(int(entry["pid"]))
    except (KeyError, TypeError, ValueError):
        return False
    return fresh


def _entries(lock: Path, *, skip: Path | None = None) -> list[dict[str, Any]]:
    """Live heartbeat entries of ``lock`` (stale ones are removed on the way)."""
    out, now = [], time.time()
    folder = _beats(lock)
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        if f == skip:
            continue
        try:
            entry = json.loads(f.read_text())
        except (OSError, ValueError):
            continue  # being rewritten (atomic rename) or gone
        if _live(entry, now):
            out.append(entry)
        else:
            with contextlib.suppress(OSError):
                f.unlink()
    return out


def _describe(entries: list[dict[str, Any]], lock: Path) -> str:
    if not entries:
        try:
            entries = [json.loads(lock.read_text())]
        except (OSError, ValueError):
            return "another process"
    e = entries[0]
    more = f" and {len(entries) - 1} other process(es)" if len(entries) > 1 else ""
    return f"process {e.get('pid')} on host {e.get('host')!r} (since {e.get('started')}){more}"


def _flock(fd: int, shared: bool) -> bool | None:
    """Lock ``fd``: True (locked), False (held by another), None (flock not supported here)."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise
    return True


class Lease:
    """A crash-released lock on one recording path: exclusive, or shared among rank writers.

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

    def __init__(self, path: Path, fd: int, entry: Path, shared: bool) -> None:
        self.path = path
        self.shared = shared
        self._fd: int | None = fd
        self._entry = entry
        self._info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "mode": "shared" if shared else "exclusive",
        }
        self._stop = threading.Event()
        self._beat_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._store: tuple[Path, int] = (path, -1)

    @classmethod
    def acquire(
        cls,
        store: Path,
        *,
        func: str,
        what: str = "write",
        shared: bool = False,
        wait: float = 0.0,
    ) -> Lease:
        """Take the lease on ``store`` or raise :class:`RecordingError` naming the holder.

        ``shared=True`` (rank writers) coexists with other shared holders but not with an
        exclusive one; ``wait`` seconds are spent retrying before giving up.
        """
        deadline = time.monotonic() + wait
        while True:
            lease, holders = cls._try(store, shared)
            if lease is not None:
                return lease
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        lock = cls._existing_lock(store)
        raise RecordingError(
            f"{func}(): {str(store)!r} is being written by {_describe(holders, lock)}; "
            f"refusing to {what} it while that writer is alive (two writers would corrupt "
            "it). Wait until it finishes, choose another `path`, or stop that process. "
            "(A crashed writer releases its lease by itself: at once on its own host, within "
            f"{STALE_S:.0f} s elsewhere; `netphys recover --force` overrides a lease you know "
            "is dead.)"
        )

    @staticmethod
    def _existing_lock(store: Path) -> Path:
        inside = store / ".netphys-lock"
        return inside if inside.exists() and not lock_path(store).exists() else lock_path(store)

    @classmethod
    def _try(cls, store: Path, shared: bool) -> tuple[Lease | None, list[dict[str, Any]]]:
        for lock in (lock_path(store), store / ".netphys-lock"):
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                continue  # read-only folder: fall back to a lock inside the store
            locked = _flock(fd, shared)
            if locked is False:
                os.close(fd)
                return None, _entries(lock)
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder unlinked the file between our open and lock: retry
                os.close(fd)
                return cls._try(store, shared)
            lease = cls(lock, fd, _beats(lock) / f"{socket.gethostname()}-{os.getpid()}-"
                        f"{uuid.uuid4().hex[:8]}.json", shared)  # fmt: skip
            lease._beat()  # write our entry first, then look: two racing takers both back off
            others = _entries(lock, skip=lease._entry)
            conflicts = others if not shared else [e for e in others if e.get("mode") != "shared"]
            if conflicts:
                lease.release(unlink=False)
                return None, conflicts
            if not shared:
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(lease._info).encode())
            lease._start()
            return lease, []
        raise PermissionError(
            f"netphys: cannot write the lock file of {str(store)!r} (no write permission "
            "beside or inside it); choose a writable `path`."
        )

    @classmethod
    def held_by_other(cls, store: Path) -> bool:
        """Return True if a live process (or another lease of this one) holds ``store``."""
        for lock in (lock_path(store), store / ".netphys-lock"):
            try:
                fd = os.open(lock, os.O_RDONLY)
            except OSError:
                continue
            try:
                if _flock(fd, True) is False or _entries(lock):
                    return True
            finally:
                os.close(fd)
        return False

    @staticmethod
    def holder(store: Path) -> str:
        """Describe the process that holds the lease (for messages)."""
        lock = Lease._existing_lock(store)
        return _describe(_entries(lock), lock)

    # -- heartbeat -----------------------------------------------------------------------
    def _beat(self) -> None:
        with self._beat_lock:  # the thread, downgrade() and release() share the entry
            if self._stop.is_set():
                return  # being released: never recreate the entry
            entry = {**self._info, "heartbeat": time.time()}
            tmp = self._entry.with_suffix(".tmp")
            try:
                self._entry.parent.mkdir(exist_ok=True)
                tmp.write_text(json.dumps(entry))
                os.replace(tmp, self._entry)
            except OSError:
                pass  # folder gone or read-only: flock (where it works) still protects

    def _start(self) -> None:
        def run() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                self._beat()

        self._thread = threading.Thread(target=run, name="netphys-lease", daemon=True)
        self._thread.start()

    def watch(self, store: Path) -> None:
        """Remember which directory ``store`` is now, for :meth:`check_store`."""
        self._store = (store, os.stat(store).st_ino)

    def check_store(self, *, func: str, lost: str) -> None:
        """Raise :class:`RecordingError` if the watched store was deleted or replaced.

        Writing on would recreate a half store (chunk files without metadata) silently.
        """
        store, ino = self._store
        try:
            ok = os.stat(store).st_ino == ino and (store / "zarr.json").exists()
        except OSError:
            ok = False
        if not ok:
            raise RecordingError(
                f"{func}: the recording at {str(store)!r} was deleted or replaced while it was "
                f"being written (by another process or by hand); {lost} Record again to a "
                "`path` nobody else modifies."
            )

    def downgrade(self) -> None:
        """Turn an exclusive lease into a shared one (rank 0, once it has created the store)."""
        if self._fd is None or self.shared:
            return
        if _flock(self._fd, True) is False:  # flock converts by unlocking first: a taker won
            raise RecordingError(
                f"netphys: another process took the lease of {str(self.path)!r} while this "
                "one was converting it to shared; stop that process and start again."
            )
        self.shared = True
        self._info["mode"] = "shared"
        self._beat()

    def release(self, *, unlink: bool = True) -> None:
        """Stop the heartbeat, remove our entry, drop the lock (idempotent).

        The lock file is removed by the last holder (one that can lock it exclusively).
        """
        if self._fd is None:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        with self._beat_lock, contextlib.suppress(OSError):
            self._entry.unlink()
        if unlink and (not self.shared or _flock(self._fd, False)):
            with contextlib.suppress(OSError):
                self.path.unlink()
            with contextlib.suppress(OSError):
                _beats(self.path).rmdir()  # only when empty
        os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:  # pragma: no cover - safety net
        with contextlib.suppress(Exception):
            self.release()

    def info(self) -> dict[str, Any]:
        """Pid, host, mode and start time of this holder."""
        return dict(self._info)
