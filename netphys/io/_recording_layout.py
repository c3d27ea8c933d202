"""Names, dtypes and codecs of the recording format (version 2), shared by writer and reader."""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr
from numcodecs import Blosc
from zarr.codecs import BloscCodec

from netphys.errors import RecordingFormatError

__all__ = [
    "AUTO_MIN_RATIO",
    "COMPRESSIONS",
    "FORMAT_VERSION",
    "FRAME_FIELDS",
    "check_version",
    "choose_compression",
    "committed_frames",
]

#: Version of the on-disk format written by this module (1: ``condition`` as int16 codes with
#: CF ``flag_meanings``; 2: ``condition`` as strings and the frame table declared as root
#: coordinates). Both are read.
FORMAT_VERSION = 2

#: Format version of rank-interleaved (multi-process) recordings, written by
#: :mod:`netphys.io._ranks` (``DistributedRecorder``) and read here too.
RANKS_FORMAT_VERSION = 3

#: Time chunk of the small per-frame arrays (frame table, prediction, loss, ...).
TABLE_CHUNK = 16384

#: Root coordinates along ``time`` and their dtype and fill value in the writer's frame table
#: (``condition`` as int16 codes from :meth:`RecordingWriter.condition_code`; stored as strings,
#: see :data:`STORED_FIELDS`).
FRAME_FIELDS: dict[str, tuple[str, Any]] = {
    "frame_time": ("float64", float("nan")),
    "session": ("int64", -1),
    "stimulus": ("int64", -1),
    "label": ("int64", -1),
    "condition": ("int16", -1),
    "repeat": ("int64", -1),
    "epoch": ("int64", -1),
    "step": ("int64", -1),
    "training": ("int8", -1),
}

#: On-disk dtype and fill value where they differ from the in-memory table (format version 2).
STORED_FIELDS: dict[str, tuple[str, Any]] = {"condition": ("str", "")}

FIELD_ATTRS: dict[str, Any] = {
    "frame_time": {"units": "s", "long_name": "frame time at the nominal frame rate"},
    "session": {"long_name": "session (checkpoint) index"},
    "stimulus": {"long_name": "index of the presented sample in its dataset (-1: none)"},
    "label": {"long_name": "category label of the presented sample (-1: none)"},
    "condition": {"long_name": "presentation condition (stimulus, spontaneous, ...)"},
    "repeat": {"long_name": "repeat index of the presentation"},
    "epoch": {"long_name": "training epoch (-1: not recorded)"},
    "step": {"long_name": "training step (-1: not recorded)"},
    "training": {
        "long_name": "model.training during the frame (1: train mode, 0: eval, -1: unknown)",
        "flag_values": [0, 1],
        "flag_meanings": "eval train",
    },
}

UNIT_COORDS = ("unit_id", "channel", "y", "x", "pos_x", "pos_y", "pos_z")
LAYERS = "layers"
BEHAVIOUR = "behaviour"
BEHAVIOUR_KEYS = ("logits", "prediction", "confidence", "loss")
GRAPH = "graph"
STIMULI = "stimuli"

#: Writes through zarr (unaligned starts, strings): skip zarr's per-chunk "is it all fill
#: value?" scan (4x faster writes with a NaN fill value). The direct chunk writer
#: (:mod:`netphys.io._chunks`) leaves out small all-fill chunks itself, by a cheaper bit compare.
ARRAY_CONFIG: Any = {"write_empty_chunks": True}

#: Chunk keys of the 2-D arrays along ``time`` (activity, nodes, logits): ``c.<t>.<u>``, files
#: directly in the array's folder. zarr's default ``c/<t>/<u>`` makes a new folder at every
#: time chunk of every such array (7 per flush of the demo CNN), and on ext4 each new folder
#: or file is an inode that costs ~0.5 ms of CPU. Both are standard Zarr v3 encodings; stores
#: written with ``/`` keep opening and appending (the key encoding is read from each array).
FLAT_CHUNK_KEYS: Any = {"name": "default", "configuration": {"separator": "."}}

#: Compression choices for unit activity (None: store raw bytes).
COMPRESSIONS = ("auto", "lz4", "zstd", "none")

#: ``compression="auto"`` stores a layer's activity with lz4 when a sample of its first batch
#: packs at least this much smaller (a third of the bytes saved), uncompressed otherwise: on
#: dense float16 activations lz4 saves 5-25% of the bytes for ~1 CPU-second per GB, the
#: largest single cost of recording a small CNN on CPU (``benchmarks/record_overhead.py``).
AUTO_MIN_RATIO = 1.5


def array_at(group: zarr.Group, key: str) -> zarr.Array:
    """Return the array at ``key`` below ``group`` (a clear error if it is a group)."""
    node = group[key]
    if not isinstance(node, zarr.Array):
        raise RecordingFormatError(f"netphys: {key!r} in the recording is not an array.")
    return node


def group_at(group: zarr.Group, key: str) -> zarr.Group:
    """Return the group at ``key`` below ``group`` (a clear error if it is an array)."""
    node = group[key]
    if not isinstance(node, zarr.Group):
        raise RecordingFormatError(f"netphys: {key!r} in the recording is not a group.")
    return node


def compressor(name: str = "lz4", *, activity: bool = False) -> BloscCodec | None:
    """Return the Blosc codec called ``name`` (None for ``"none"``).

    lz4 is the fastest useful codec (~0.6-1.7 GB/s per core on activations, 1.0-1.6x
    smaller); zstd packs tighter at 1/3 the speed; "none" is the cheapest on CPU. Unit
    activity (``activity=True``) with lz4 skips the byte shuffle: on ReLU outputs the
    unshuffled bytes keep the zeros in runs, which lz4 packs smaller (31 of the 32 layer and
    dtype cases of ``benchmarks/record_overhead.py --codecs``) and mostly faster (29 of 32,
    up to 1.6x); the frame table and nodes keep the shuffle.
    """
    if name == "none":
        return None
    name = "lz4" if name == "auto" else name  # no sample to decide from: the fast codec
    shuffle = "noshuffle" if activity and name == "lz4" else "shuffle"
    return BloscCodec(cname=name, clevel=1, shuffle=shuffle)  # type: ignore[arg-type]


def choose_compression(sample: np.ndarray) -> tuple[str, float]:
    """Return ``("lz4" or "none", ratio)`` for activity like ``sample`` (``compression="auto"``).

    ``ratio`` is how much smaller lz4 (as :func:`compressor` stores activity) makes the
    sample; lz4 is chosen when it is at least :data:`AUTO_MIN_RATIO`.

    Examples
    --------
    >>> choose_compression(np.zeros((64, 100), "float16"))[0]
    'lz4'
    >>> choose_compression(np.random.default_rng(0).random((64, 100)).astype("float16"))[0]
    'none'
    """
    data = np.ascontiguousarray(sample)
    if data.nbytes == 0:
        return "lz4", float("nan")
    codec = Blosc(cname="lz4", clevel=1, shuffle=Blosc.NOSHUFFLE)
    ratio = data.nbytes / len(codec.encode(data))
    return ("lz4" if ratio >= AUTO_MIN_RATIO else "none"), float(ratio)


def json_safe(value: Any) -> Any:
    """Return a JSON-serialisable version of ``value`` (for attrs).

    Examples
    --------
    >>> json_safe({"a": np.int64(3), "b": (1, 2)})
    {'a': 3, 'b': [1, 2]}
    """
    try:
        json.dumps(value)
    except TypeError:
        if isinstance(value, Mapping):
            return {str(k): json_safe(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [json_safe(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        return repr(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def unit_chunk(n_units: int, chunk_frames: int, itemsize: int, target_bytes: int = 4 << 20) -> int:
    """Units per chunk so that one chunk holds about 4 MiB (whole layer if narrower).

    Fewer, larger chunks write faster (zarr's per-chunk cost dominates below ~1 MiB) and
    still read in dask-sized pieces.
    """
    target = max(1, target_bytes // max(1, chunk_frames * itemsize))
    return int(min(n_units, max(target, 64)))


def check_version(attrs: Mapping[str, Any], path: Any, func: str = "open_recording") -> None:
    """Refuse a group that is not a netphys recording, or one newer than this netphys reads."""
    version = attrs.get("format_version")
    if version is None:
        raise RecordingFormatError(
            f"{func}(): {str(path)!r} is a Zarr group but not a netphys recording "
            "(no `format_version` attribute). Real data is read with `netphys.io.open_dataset`."
        )
    if isinstance(version, bool) or not isinstance(version, numbers.Integral):
        raise RecordingFormatError(
            f"{func}(): {str(path)!r} has format_version {version!r}; expected an int."
        )
    newest = max(FORMAT_VERSION, RANKS_FORMAT_VERSION)  # 3: multi-process
    if int(version) > newest:
        raise RecordingFormatError(
            f"{func}(): {str(path)!r} has format_version {version}, newer than this "
            f"netphys reads ({newest}). Upgrade with `pip install -U netphys`."
        )


def committed_frames(attrs: Mapping[str, Any], path: Any, func: str) -> int:
    """Return ``frames_committed`` after checking it is a non-negative int."""
    n = attrs.get("frames_committed", 0)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or int(n) < 0:
        raise RecordingFormatError(
            f"{func}(): {str(path)!r} has frames_committed={n!r}; expected an int >= 0. "
            "The store is damaged: its root zarr.json was edited or corrupted."
        )
    return int(n)
