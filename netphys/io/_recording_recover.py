"""Crash repair: :func:`recover` makes an interrupted recording consistent on disk."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import zarr

from netphys._validation import check_bool
from netphys.errors import RecordingFormatError
from netphys.io._chunks import SPARE_SUFFIX
from netphys.io._lease import Lease
from netphys.io._ranks import finalize
from netphys.io._recording_layout import RANKS_FORMAT_VERSION
from netphys.io._recording_reader import open_root

__all__ = ["recover"]


def recover(path: str | os.PathLike[str], *, force: bool = False) -> dict[str, Any]:
    """Make an interrupted recording consistent and mark it ``recovered``.

    Every array along ``time`` is clipped to ``frames_committed`` (frames written after the
    last commit are dropped), stray ``*.partial`` files from interrupted atomic writes and the
    spare metadata documents of the interrupted writer are removed, and metadata is
    consolidated so that plain ``xarray.open_datatree`` opens it.

    Parameters
    ----------
    path : str or Path
        The recording directory.
    force : bool, default=False
        Recover even if a live process holds the recording's writer lease. Only for a writer
        you know is gone but whose lock outlived it (e.g. a writer on another machine of a
        network filesystem without lock support): recovering under a live writer corrupts
        the recording.

    Returns
    -------
    dict
        ``frames_committed``, ``status_before`` (status before recovery), ``clipped`` (arrays
        that were longer than the committed length) and ``partial_files_removed``.

    Raises
    ------
    RecordingError
        If another process is writing the recording (and ``force`` is False).
    RecordingFormatError, UnsafeFileError
        As :func:`open_recording`: not a recording, a forged frame count, symbolic links.

    Examples
    --------
    >>> netphys.recover("interrupted.zarr")  # doctest: +SKIP
    {'frames_committed': 2048, 'status_before': 'recording', ...}
    """
    check_bool(force, func="recover", name="force")
    p = Path(path)
    root, _ = open_root(p, "recover")  # existence, no symlinks, a recording, a sane frame count
    lease = None
    if not force:
        lease = Lease.acquire(p, func="recover", what="recover")
    try:
        version: Any = dict(root.attrs).get("format_version", 1)
        if int(version) == RANKS_FORMAT_VERSION:
            return finalize(p, status="recovered")  # many ranks: netphys.io._ranks
        return _recover(p)
    finally:
        if lease is not None:
            lease.release()


def _recover(p: Path) -> dict[str, Any]:
    root = zarr.open_group(p, mode="r+", zarr_format=3, use_consolidated=False)
    attrs: dict[str, Any] = dict(root.attrs)
    n = int(attrs.get("frames_committed", 0))
    removed = 0
    for f in [*p.rglob("*.partial"), *p.rglob(f".*{SPARE_SUFFIX}")]:
        f.unlink()
        removed += 1
    clipped = []
    for key, arr in _walk_arrays(root):
        dims = getattr(arr.metadata, "dimension_names", None) or ()
        if dims and dims[0] == "time" and arr.shape[0] != n:
            if arr.shape[0] < n:
                # the shape grows before the commit, so this never happens after a crash
                raise RecordingFormatError(
                    f"recover(): array {key!r} has {arr.shape[0]} frames, fewer than the "
                    f"{n} committed; the store is damaged beyond the crash protocol."
                )
            arr.resize((n, *arr.shape[1:]))
            clipped.append(key)
    root.update_attributes({"status": "recovered", "frames_committed": n})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(p)
    return {
        "frames_committed": n,
        "status_before": attrs.get("status"),
        "clipped": clipped,
        "partial_files_removed": removed,
    }


def _walk_arrays(group: zarr.Group, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for name, arr in group.arrays():
        out.append((f"{prefix}{name}", arr))
    for name, sub in group.groups():
        out += _walk_arrays(sub, f"{prefix}{name}/")
    return out
