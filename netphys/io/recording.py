"""The netphys recording format (version 2): a Zarr v3 store that opens as an xarray DataTree.

Layout (see ``docs/format.md``)::

    NAME.zarr/                 root: per-frame table along ``time`` + provenance attrs
      behaviour/               logits (time, output), prediction, confidence, loss
      layers/<module.path>/    activity (time, unit), nodes (time, node), unit coordinates
      graph/<pre>--<post>/     weight (checkpoint, post_node, pre_node)

This module never imports torch. Writing is done by :class:`RecordingWriter` (used by
:class:`netphys.Recorder`); reading by :func:`open_recording`, :func:`layer_activity` and
:func:`node_activity`; crash repair by :func:`recover`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from netphys.errors import RecordingError, RecordingFormatError
from netphys.io._chunks import ChunkWriter, write_arrays
from netphys.io._ranks import RANKS_FORMAT_VERSION, drop_padding, finalize

__all__ = [
    "FORMAT_VERSION",
    "RecordingWriter",
    "layer_activity",
    "node_activity",
    "open_recording",
    "recover",
]

#: Version of the on-disk format written by this module (1: ``condition`` as int16 codes with
#: CF ``flag_meanings``; 2: ``condition`` as strings and the frame table declared as root
#: coordinates). Both are read.
FORMAT_VERSION = 2

#: Time chunk of the small per-frame arrays (frame table, prediction, loss, ...).
_TABLE_CHUNK = 16384

#: Root coordinates along ``time`` and their dtype and fill value in the writer's frame table
#: (``condition`` as int16 codes from :meth:`RecordingWriter.condition_code`; stored as strings,
#: see :data:`_STORED_FIELDS`).
FRAME_FIELDS: dict[str, tuple[str, Any]] = {
    "frame_time": ("float64", float("nan")),
    "session": ("int64", -1),
    "stimulus": ("int64", -1),
    "label": ("int64", -1),
    "condition": ("int16", -1),
    "repeat": ("int64", -1),
    "epoch": ("int64", -1),
    "step": ("int64", -1),
}

#: On-disk dtype and fill value where they differ from the in-memory table (format version 2).
_STORED_FIELDS: dict[str, tuple[str, Any]] = {"condition": ("str", "")}

_FIELD_ATTRS: dict[str, dict[str, Any]] = {
    "frame_time": {"units": "s", "long_name": "frame time at the nominal frame rate"},
    "session": {"long_name": "session (checkpoint) index"},
    "stimulus": {"long_name": "index of the presented sample in its dataset (-1: none)"},
    "label": {"long_name": "category label of the presented sample (-1: none)"},
    "condition": {"long_name": "presentation condition (stimulus, spontaneous, ...)"},
    "repeat": {"long_name": "repeat index of the presentation"},
    "epoch": {"long_name": "training epoch (-1: not recorded)"},
    "step": {"long_name": "training step (-1: not recorded)"},
}

_UNIT_COORDS = ("unit_id", "channel", "y", "x", "pos_x", "pos_y", "pos_z")
_LAYERS = "layers"
_BEHAVIOUR = "behaviour"
_GRAPH = "graph"
_STIMULI = "stimuli"


#: Writing whole chunks: skip zarr's per-chunk "is it all fill value?" scan (4x faster writes
#: with a NaN fill value); every chunk we write holds data.
_ARRAY_CONFIG: dict[str, Any] = {"write_empty_chunks": True}


#: Compression choices for unit activity: name -> codec factory (None: store raw bytes).
COMPRESSIONS = ("lz4", "zstd", "none")


def _compressor(name: str = "lz4") -> BloscCodec | None:
    # lz4 + byte shuffle is the fastest useful codec (~0.5 GB/s per core on activations,
    # 1.2-1.8x smaller); zstd packs tighter at 1/3 the speed; "none" is ~3x cheaper on CPU.
    if name == "none":
        return None
    return BloscCodec(cname=name, clevel=1, shuffle="shuffle")


def _json_safe(value: Any) -> Any:
    """Return a JSON-serialisable version of ``value`` (for attrs)."""
    try:
        json.dumps(value)
    except TypeError:
        if isinstance(value, Mapping):
            return {str(k): _json_safe(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_json_safe(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        return repr(value)
    return value


def _unit_chunk(n_units: int, chunk_frames: int, itemsize: int, target_bytes: int = 4 << 20) -> int:
    """Units per chunk so that one chunk holds about 4 MiB (whole layer if narrower).

    Fewer, larger chunks write faster (zarr's per-chunk cost dominates below ~1 MiB) and
    still read in dask-sized pieces.
    """
    target = max(1, target_bytes // max(1, chunk_frames * itemsize))
    return int(min(n_units, max(target, 64)))


def _fit_table_chunks(writer: RecordingWriter) -> None:
    """On a new, empty store, re-create the frame-table arrays with one block per time chunk.

    The Recorder fixes ``chunk_frames`` (the block size) only at its first forward call, after
    the root was created; table chunks equal to the block let every block be written as whole
    chunks by :mod:`netphys.io._chunks` instead of zarr's read-modify-write of a shared chunk.
    """
    root, c = writer.root, int(writer.chunk_frames)
    if writer.frames or writer._layer_specs or root["session"].chunks[0] == c:
        return
    for name, spec in FRAME_FIELDS.items():
        dtype, fill = _STORED_FIELDS.get(name, spec)
        attrs = dict(root[name].attrs)
        del root[name]
        root.create_array(
            name,
            shape=(0,),
            dtype=dtype,
            chunks=(c,),
            fill_value=fill,
            dimension_names=("time",),
            compressors=_compressor(),
            config=_ARRAY_CONFIG,
            attributes=attrs,
        )
    writer._array_cache = {}


class RecordingWriter:
    """Write frames into a recording store, whole time chunks at a time.

    Parameters
    ----------
    path : str or Path
        Directory of the store (``*.zarr``).
    mode : {"w-", "w", "a"}, default="w-"
        ``"w-"`` refuses an existing path, ``"w"`` overwrites it, ``"a"`` appends to an
        existing recording of the same layers.
    chunk_frames : int, default=1024
        Frames per time chunk; every write except the last covers whole chunks.
    attrs : mapping, optional
        Extra root attributes (provenance); must be JSON-serialisable.
    compression : {"lz4", "zstd", "none"} or None, default="lz4"
        Codec of unit activity (Blosc with byte shuffle); other arrays always use lz4.

    Notes
    -----
    Crash protocol: arrays are resized, the block is written, then the root attribute
    ``frames_committed`` is updated. Readers clip to ``frames_committed``;
    :func:`recover` makes an interrupted store consistent.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: str = "w-",
        chunk_frames: int = 1024,
        attrs: Mapping[str, Any] | None = None,
        compression: str | None = "lz4",
    ) -> None:
        self.path = Path(path)
        compression = "none" if compression is None else compression
        if compression not in COMPRESSIONS:
            raise ValueError(
                f"Recorder: `compression` must be one of {COMPRESSIONS} or None; got {compression!r}."
            )
        self.compression = compression
        if mode not in ("w-", "w", "a"):
            raise ValueError(
                f"Recorder: `mode` must be 'w-' (new), 'w' (overwrite) or 'a' (append); got {mode!r}."
            )
        exists = self.path.exists()
        if exists and mode == "w-":
            raise FileExistsError(
                f"Recorder: `path` {str(self.path)!r} already exists. Pass `mode='w'` to "
                "overwrite it, `mode='a'` to append new sessions, or choose another path."
            )
        if mode == "a" and not exists:
            mode = "w-"
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if mode != "a":
            if not parent.exists():
                raise FileNotFoundError(
                    f"Recorder: the folder of `path` {str(parent)!r} does not exist; create it first."
                )
            if not os.access(parent, os.W_OK):
                raise PermissionError(
                    f"Recorder: cannot write to {str(parent)!r} (permission denied); "
                    "choose a writable `path`."
                )
        self.chunk_frames = int(chunk_frames)
        self._conditions: list[str] = []
        self._conditions_written = 0
        self._array_cache: dict[str, Any] = {}
        self._layer_specs: dict[str, dict[str, Any]] = {}
        self._behaviour_width: int | None = None
        try:
            if mode == "w" and exists:
                shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
            if mode == "a":
                self.root = zarr.open_group(
                    self.path, mode="r+", zarr_format=3, use_consolidated=False
                )
                self._load_existing()
            else:
                self.root = zarr.open_group(self.path, mode="w-", zarr_format=3)
                self._create_root(attrs or {})
        except PermissionError as exc:
            raise PermissionError(
                f"Recorder: cannot write the recording at {str(self.path)!r}: {exc}. "
                "Choose a writable `path`."
            ) from exc

    # -- creation -------------------------------------------------------------------------
    def _create_root(self, attrs: Mapping[str, Any]) -> None:
        root_attrs = {
            "format_version": FORMAT_VERSION,
            "format": "netphys-recording",
            "status": "recording",
            "frames_committed": 0,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "layers": [],
            # CF: the frame table is the root's coordinates (plain xarray reads them as such)
            "coordinates": " ".join(FRAME_FIELDS),
        }
        root_attrs.update({k: _json_safe(v) for k, v in attrs.items()})
        self.root.attrs.update(root_attrs)
        for name, spec in FRAME_FIELDS.items():
            dtype, fill = _STORED_FIELDS.get(name, spec)
            a = self.root.create_array(
                name,
                shape=(0,),
                dtype=dtype,
                chunks=(_TABLE_CHUNK,),
                fill_value=fill,
                dimension_names=("time",),
                compressors=_compressor(),
                config=_ARRAY_CONFIG,
                attributes=dict(_FIELD_ATTRS[name]),
            )
            del a
        self.root.create_group(_LAYERS)
        self.root.create_group(_GRAPH)
        self.frames = 0
        self._capacity = 0

    def _load_existing(self) -> None:
        attrs = dict(self.root.attrs)
        _check_version(attrs, self.path)
        if attrs.get("status") == "recording":
            raise RecordingError(
                f"Recorder: {str(self.path)!r} is marked as still recording (it was interrupted "
                "or is open elsewhere). Run `netphys.recover(path)` first, then append."
            )
        self.frames = int(attrs.get("frames_committed", 0))
        self._capacity = self.frames
        self._conditions = list(self.root["condition"].attrs.get("flag_meanings", "").split())
        self._conditions_written = len(self._conditions)
        time_chunks = self.root["session"].chunks[0]
        for name in attrs.get("layers", []):
            g = self.root[f"{_LAYERS}/{name}"]
            time_chunks = g["activity"].chunks[0]
            self._layer_specs[name] = {
                "n_units": g["activity"].shape[1],
                "n_nodes": g["nodes"].shape[1],
                "dtype": str(g["activity"].dtype),
            }
        if _BEHAVIOUR in self.root:
            self._behaviour_width = self.root[f"{_BEHAVIOUR}/logits"].shape[1]
        self.chunk_frames = int(time_chunks)  # append in the chunks the store already has
        self.root.attrs.update({"status": "recording"})

    @property
    def layers(self) -> list[str]:
        """Names of the layers in the store, in forward order."""
        return list(self._layer_specs)

    def add_layer(
        self,
        name: str,
        *,
        unit_coords: Mapping[str, np.ndarray],
        n_nodes: int,
        dtype: str,
        attrs: Mapping[str, Any],
    ) -> None:
        """Create the group of one recorded layer (or check it matches on append)."""
        _fit_table_chunks(self)
        n_units = len(unit_coords["unit_id"])
        if name in self._layer_specs:
            spec = self._layer_specs[name]
            if spec["n_units"] != n_units or spec["n_nodes"] != n_nodes:
                raise RecordingError(
                    f"Recorder: layer {name!r} has {n_units} units / {n_nodes} nodes now but "
                    f"{spec['n_units']} / {spec['n_nodes']} in the existing recording; append "
                    "needs the same layers and unit selection (same `max_units` and `seed`)."
                )
            return
        g = self.root.create_group(f"{_LAYERS}/{name}", attributes=_json_safe(dict(attrs)))
        itemsize = np.dtype(dtype).itemsize
        g.create_array(
            "activity",
            shape=(self._capacity, n_units),
            dtype=dtype,
            chunks=(self.chunk_frames, _unit_chunk(n_units, self.chunk_frames, itemsize)),
            fill_value=float("nan"),
            dimension_names=("time", "unit"),
            compressors=_compressor(self.compression),
            config=_ARRAY_CONFIG,
            attributes={
                "long_name": "unit activity (module output)",
                "units": "a.u.",
                "coordinates": " ".join(_UNIT_COORDS),
            },
        )
        g.create_array(
            "nodes",
            shape=(self._capacity, n_nodes),
            dtype="float32",
            chunks=(self.chunk_frames, _unit_chunk(n_nodes, self.chunk_frames, 4)),
            fill_value=float("nan"),
            dimension_names=("time", "node"),
            compressors=_compressor(),
            config=_ARRAY_CONFIG,
            attributes={
                "long_name": "node activity (channel spatial mean of the module output)",
                "units": "a.u.",
                "cell_methods": "space: mean",
            },
        )
        g.create_array("node", data=np.arange(n_nodes, dtype="int64"), dimension_names=("node",))
        for key in _UNIT_COORDS:
            values = np.asarray(unit_coords[key])
            attrs_c = {"units": "um"} if key.startswith("pos_") else {}
            g.create_array(key, data=values, dimension_names=("unit",), attributes=attrs_c)
        self._layer_specs[name] = {"n_units": n_units, "n_nodes": n_nodes, "dtype": dtype}
        self.root.attrs["layers"] = self.layers

    def add_behaviour(self, width: int) -> None:
        """Create the behaviour group for model outputs of ``width`` values per frame."""
        if self._behaviour_width is not None:
            if self._behaviour_width != width:
                raise RecordingError(
                    f"Recorder: the model output has {width} values per frame now but "
                    f"{self._behaviour_width} in the existing recording."
                )
            return
        g = self.root.create_group(_BEHAVIOUR)
        opts = {"compressors": _compressor(), "config": _ARRAY_CONFIG}
        g.create_array(
            "logits",
            shape=(self._capacity, width),
            dtype="float32",
            chunks=(self.chunk_frames, min(width, 4096)),
            fill_value=float("nan"),
            dimension_names=("time", "output"),
            attributes={"long_name": "model output (logits)"},
            **opts,
        )
        for name, dtype, fill, long_name in (
            ("prediction", "int64", -1, "argmax of the output"),
            ("confidence", "float32", float("nan"), "max softmax probability"),
            ("loss", "float32", float("nan"), "cross-entropy to the label (NaN: no label)"),
        ):
            g.create_array(
                name,
                shape=(self._capacity,),
                dtype=dtype,
                chunks=(self.chunk_frames,),  # one block per chunk: written directly
                fill_value=fill,
                dimension_names=("time",),
                attributes={"long_name": long_name},
                **opts,
            )
        self._behaviour_width = width

    # -- writing ------------------------------------------------------------------------
    def condition_code(self, condition: str) -> int:
        """Return the integer code of a condition string, registering it if new."""
        if condition not in self._conditions:
            if any(c.isspace() for c in condition) or not condition:
                raise ValueError(
                    f"Recorder: `condition` must be a non-empty word without spaces; got {condition!r}."
                )
            self._conditions.append(condition)
        return self._conditions.index(condition)

    def _condition_values(self, codes: np.ndarray, dtype: Any) -> np.ndarray:
        """Condition codes -> what the store holds: strings (v2) or the codes (v1 stores)."""
        codes = np.asarray(codes)
        if np.dtype(dtype).kind in "iu":
            return codes
        names = np.array([*self._conditions, ""], dtype=object)
        return names[np.where(codes >= 0, codes, len(self._conditions))]

    def _write_conditions(self) -> None:
        # called by the writing thread only, so array metadata has a single writer;
        # only version-1 stores keep condition codes (with CF flag_values/flag_meanings)
        conditions = list(self._conditions)
        if np.dtype(self._handles()["condition"].dtype).kind not in "iu":
            return
        if len(conditions) != self._conditions_written:
            self._handles()["condition"].attrs.update(
                {
                    "flag_values": list(range(len(conditions))),
                    "flag_meanings": " ".join(conditions),
                }
            )
            self._conditions_written = len(conditions)

    def write(
        self,
        start: int,
        table: Mapping[str, np.ndarray],
        layers: Mapping[str, tuple[np.ndarray, np.ndarray]],
        behaviour: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Write frames ``start .. start + n`` and commit them.

        ``table`` maps each name of :data:`FRAME_FIELDS` to an (n,) array; ``layers`` maps a
        layer name to ``(activity (n, units), nodes (n, nodes))``.
        """
        n = len(table["session"])
        if start != self.frames:
            raise RecordingError(f"internal: write at {start} but {self.frames} committed")
        stop = start + n
        handles = self._handles()
        arrays: list[tuple[Any, np.ndarray]] = [(handles[k], table[k]) for k in FRAME_FIELDS]
        for name, (act, nodes) in layers.items():
            arrays += [
                (handles[f"{_LAYERS}/{name}/activity"], act),
                (handles[f"{_LAYERS}/{name}/nodes"], nodes),
            ]
        if behaviour is not None and self._behaviour_width is not None:
            arrays += [
                (handles[f"{_BEHAVIOUR}/{k}"], behaviour[k])
                for k in ("logits", "prediction", "confidence", "loss")
            ]
        if stop > self._capacity:
            # grow in big steps (metadata rewrites are rare); readers clip to frames_committed
            grow = min(self._capacity, 64 * self.chunk_frames)
            step = self.chunk_frames
            self._capacity = -(-max(stop, self._capacity + grow) // step) * step
            for arr, _ in arrays:
                arr.resize((self._capacity, *arr.shape[1:]))
        arrays = [
            (arr, self._condition_values(v, arr.dtype) if arr is handles["condition"] else v)
            for arr, v in arrays
        ]
        # whole chunks are encoded and written directly, in one wait (netphys.io._chunks);
        # string (vlen) arrays and unaligned starts go through zarr
        if getattr(self, "_chunk_writer", None) is None:
            self._chunk_writer = ChunkWriter(self.path)
        write_arrays(self._chunk_writer, arrays, start)
        self._write_conditions()
        self.frames = stop
        self.root.attrs["frames_committed"] = stop

    def _handles(self) -> dict[str, Any]:
        """Open array handles along ``time``, cached (each lookup reads metadata)."""
        keys = [*FRAME_FIELDS]
        for name in self._layer_specs:
            keys += [f"{_LAYERS}/{name}/activity", f"{_LAYERS}/{name}/nodes"]
        if self._behaviour_width is not None:
            keys += [f"{_BEHAVIOUR}/{k}" for k in ("logits", "prediction", "confidence", "loss")]
        if set(keys) != set(self._array_cache):
            # runtime config is not stored with the array: set it on every handle
            self._array_cache = {
                k: self._array_cache.get(k) or self.root[k].with_config(_ARRAY_CONFIG) for k in keys
            }
        return self._array_cache

    def _trim(self) -> None:
        """Resize every array along ``time`` to the committed length (at close)."""
        for arr in self._handles().values():
            if arr.shape[0] != self.frames:
                arr.resize((self.frames, *arr.shape[1:]))
        self._capacity = self.frames

    def write_graph(self, session: int, weights: Mapping[tuple[str, str], np.ndarray]) -> None:
        """Store the node-to-node weights of one session (checkpoint)."""
        for (pre, post), w in weights.items():
            w = np.asarray(w, dtype="float32")
            key = f"{_GRAPH}/{pre}--{post}"
            if key not in self.root:
                g = self.root.create_group(key, attributes={"pre_layer": pre, "post_layer": post})
                g.create_array(
                    "weight",
                    shape=(0, *w.shape),
                    dtype="float32",
                    chunks=(1, *w.shape),
                    fill_value=float("nan"),
                    dimension_names=("checkpoint", "post_node", "pre_node"),
                    attributes={"long_name": "static node-to-node weight (BatchNorm folded)"},
                )
                g.create_array(
                    "checkpoint",
                    shape=(0,),
                    dtype="int64",
                    chunks=(1024,),
                    fill_value=-1,
                    dimension_names=("checkpoint",),
                )
            g = self.root[key]
            if g["weight"].shape[1:] != w.shape:
                raise RecordingError(
                    f"Recorder: weights {pre}->{post} have shape {w.shape}, expected "
                    f"{g['weight'].shape[1:]}."
                )
            ckpt = g["checkpoint"]
            existing = ckpt[:] if ckpt.shape[0] else np.zeros(0, "int64")
            if session in existing:
                continue
            k = ckpt.shape[0]
            ckpt.resize((k + 1,))
            g["weight"].resize((k + 1, *w.shape))
            g["weight"][k] = w
            ckpt[k] = session

    def close(self, *, status: str = "complete") -> None:
        """Trim arrays to the committed length, mark ``status``, consolidate metadata."""
        if getattr(self, "_chunk_writer", None) is not None:
            self._chunk_writer.close()
            self._chunk_writer = None
        self._trim()
        self.root.attrs.update({"status": status, "frames_committed": self.frames})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr warns that consolidation is outside the spec
            zarr.consolidate_metadata(self.path)


# -- reading ---------------------------------------------------------------------------------
def _check_version(attrs: Mapping[str, Any], path: Any) -> None:
    version = attrs.get("format_version")
    if version is None:
        raise RecordingFormatError(
            f"open_recording(): {str(path)!r} is a Zarr group but not a netphys recording "
            "(no `format_version` attribute). Real data is read with `netphys.io.open_dataset`."
        )
    if int(version) > max(FORMAT_VERSION, RANKS_FORMAT_VERSION):  # 3: multi-process
        raise RecordingFormatError(
            f"open_recording(): {str(path)!r} has format_version {version}, newer than this "
            f"netphys reads ({FORMAT_VERSION}). Upgrade with `pip install -U netphys`."
        )


def _open_root(path: str | os.PathLike[str], func: str) -> zarr.Group:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{func}(): no recording at {str(p)!r}.")
    try:
        root = zarr.open_group(p, mode="r", zarr_format=3, use_consolidated=False)
    except Exception as exc:
        raise RecordingFormatError(
            f"{func}(): {str(p)!r} is not a Zarr v3 group ({type(exc).__name__}: {exc})."
        ) from exc
    _check_version(dict(root.attrs), p)
    return root


def _open_group(path: Path, group: str | None, n: int, chunks: Any) -> xr.Dataset:
    """Open one group lazily, clipped to ``n`` frames (the committed length)."""
    zgroup = zarr.open_group(
        path, path=group or "", mode="r", zarr_format=3, use_consolidated=False
    )
    lengths = {
        arr.shape[0]
        for _, arr in zgroup.arrays()
        if (arr.metadata.dimension_names or ())[:1] == ("time",)
    }
    if len(lengths) > 1:
        # interrupted mid-flush: arrays of one group have different lengths, which xarray
        # refuses; build the Dataset from the arrays themselves, each clipped to `n`
        return _open_group_clipped(zgroup, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ds = xr.open_zarr(
            path,
            group=group,
            chunks=chunks,
            consolidated=False,
            zarr_format=3,
            mask_and_scale=False,
            decode_times=False,
        )
    if "time" in ds.dims and ds.sizes["time"] != n:
        ds = ds.isel(time=slice(0, n))
    return ds


def _open_group_clipped(zgroup: zarr.Group, n: int) -> xr.Dataset:
    import dask.array as dsa

    variables = {}
    for name, arr in zgroup.arrays():
        dims = tuple(arr.metadata.dimension_names or ())
        data = dsa.from_zarr(arr, chunks=arr.chunks)
        if dims[:1] == ("time",):
            data = data[:n]
        attrs = {k: v for k, v in arr.attrs.items() if k != "coordinates"}
        variables[name] = xr.Variable(dims, data, attrs)
    return xr.Dataset(variables, attrs=dict(zgroup.attrs))


def _load_coords(ds: xr.Dataset, names: Sequence[str]) -> xr.Dataset:
    # coordinates are small: keep them in memory so that selections need no compute; they
    # come in the order of `names` (the store lists arrays in no fixed order)
    names = [k for k in names if k in ds.variables]
    others = {k: v.variable for k, v in ds.coords.items() if k not in names}
    coords: dict[Any, xr.Variable] = {**others, **{k: ds[k].load().variable for k in names}}
    data = {k: v.variable for k, v in ds.data_vars.items() if k not in names}
    return xr.Dataset(data, coords=coords, attrs=ds.attrs)


def _decode_condition(var: xr.DataArray) -> xr.Variable:
    """``condition`` as a string Variable: v2 stores hold strings, v1 stores int16 codes."""
    values = np.asarray(var.values)
    attrs = {"long_name": _FIELD_ATTRS["condition"]["long_name"]}
    if values.dtype.kind in "iu":  # version 1: CF flag_values / flag_meanings
        meanings = str(var.attrs.get("flag_meanings", "")).split()
        names = np.array([*meanings, ""], dtype=object)
        ok = (values >= 0) & (values < len(meanings))
        values = names[np.where(ok, values, len(meanings))]
    # numpy 2 reads Zarr strings as StringDType; a fixed-width '<U' array is the familiar form
    return xr.Variable(var.dims, np.array(values.tolist(), dtype=str), attrs)


def _frame_table(base: xr.Dataset) -> xr.Dataset:
    """Root of a recording: the frame table as indexed coordinates, in :data:`FRAME_FIELDS` order.

    Each field gets its own (non-unique) pandas index along ``time``: DataTree children
    inherit only indexed coordinates, so every layer group sees ``session``, ``label``, ...,
    and ``.sel(session=2)`` or ``.sel(condition="spontaneous")`` work on any group.
    """
    names = [k for k in FRAME_FIELDS if k in base.variables]
    variables = {k: base[k].load().variable for k in names}
    if "condition" in variables:
        variables["condition"] = _decode_condition(base["condition"])
    out = xr.Dataset(coords=variables, attrs=base.attrs)
    for name in names:
        out = out.set_xindex(name)
    return out


def open_recording(
    path: str | os.PathLike[str],
    *,
    chunks: Any = None,
) -> xr.DataTree:
    """Open a recording lazily as an :class:`xarray.DataTree` (dask-backed).

    Parameters
    ----------
    path : str or Path
        The ``*.zarr`` directory written by :class:`netphys.Recorder` or :func:`netphys.record`.
    chunks : dict, optional
        Dask chunks; default: the store's own chunks (e.g. 1024 frames).

    Returns
    -------
    xarray.DataTree
        Root with the per-frame table along ``time`` (``condition`` decoded to strings),
        ``behaviour``, ``layers/<module>`` (``activity``, ``nodes``) and ``graph`` nodes.
        Frames beyond ``frames_committed`` (an interrupted write) are left out.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    RecordingFormatError
        If ``path`` is not a netphys recording or has a newer format version.

    See Also
    --------
    layer_activity : one (time, unit) DataArray of one or all layers.
    recover : make an interrupted recording consistent on disk.

    Examples
    --------
    >>> import netphys
    >>> rec = netphys.open_recording("rec.zarr")  # doctest: +SKIP
    >>> rec["layers/conv1"]["activity"]  # doctest: +SKIP
    """
    root = _open_root(path, "open_recording")
    p = Path(path)
    attrs = dict(root.attrs)
    n = int(attrs.get("frames_committed", 0))
    chunks = {} if chunks is None else chunks
    tree: dict[str, xr.Dataset] = {}
    base = _frame_table(_open_group(p, None, n, chunks))
    base.attrs = {k: v for k, v in attrs.items() if k != "coordinates"}
    tree["/"] = base
    if _BEHAVIOUR in root:
        tree[f"/{_BEHAVIOUR}"] = _open_group(p, _BEHAVIOUR, n, chunks)
    for name in attrs.get("layers", []):
        ds = _open_group(p, f"{_LAYERS}/{name}", n, chunks)
        ds = _load_coords(ds, _UNIT_COORDS)
        tree[f"/{_LAYERS}/{name}"] = ds
    if _STIMULI in root:
        tree[f"/{_STIMULI}"] = _open_group(p, _STIMULI, n, chunks)
    if _GRAPH in root:
        for key in root[_GRAPH].group_keys():
            tree[f"/{_GRAPH}/{key}"] = _open_group(p, f"{_GRAPH}/{key}", n, chunks)
    out = xr.DataTree.from_dict(tree)
    # format 3 (many ranks, netphys.io._ranks): leave out the padding rows (rank == -1)
    if int(attrs.get("format_version", 1)) == RANKS_FORMAT_VERSION:
        out = drop_padding(out, np.asarray(zarr.open_array(p / "rank", mode="r")[:n]))
    return out


def _as_tree(rec: Any, func: str) -> xr.DataTree:
    if isinstance(rec, xr.DataTree):
        return rec
    if isinstance(rec, (str, os.PathLike)):
        return open_recording(rec)
    raise TypeError(
        f"{func}(): `recording` must be a DataTree from `netphys.open_recording` or a path; "
        f"got {type(rec).__name__}."
    )


def _pick_layers(tree: xr.DataTree, layers: str | Sequence[str] | None, func: str) -> list[str]:
    available = list(tree.attrs.get("layers", []))
    if not available and _LAYERS in tree.children:
        available = list(tree[_LAYERS].children)
    if layers is None:
        return available
    wanted = [layers] if isinstance(layers, str) else list(layers)
    bad = [w for w in wanted if w not in available]
    if bad:
        raise ValueError(
            f"{func}(): `layers` {bad} not in the recording; recorded layers are {available}."
        )
    return wanted


def _time_coords(tree: xr.DataTree) -> dict[str, Any]:
    return {k: v.variable for k, v in tree.to_dataset().coords.items() if v.dims == ("time",)}


def layer_activity(
    recording: Any,
    layers: str | Sequence[str] | None = None,
) -> xr.DataArray:
    """Return unit activity of one layer, or several stacked, as a (time, unit) DataArray.

    Parameters
    ----------
    recording : xarray.DataTree or str
        A tree from :func:`open_recording`, or the path of a recording.
    layers : str or list of str, optional
        Layer name(s); default: all recorded layers in forward order.

    Returns
    -------
    xarray.DataArray
        Dims (``time``, ``unit``), dask-backed. ``unit`` is a running index over the stacked
        layers; non-index unit coords ``layer``, ``unit_id``, ``channel``, ``y``, ``x``,
        ``pos_x``, ``pos_y``, ``pos_z``; the root's per-frame coords along ``time``.

    Examples
    --------
    >>> act = netphys.layer_activity("rec.zarr", "conv1")  # doctest: +SKIP
    >>> act.sel(time=act.session == 0)  # doctest: +SKIP
    """
    tree = _as_tree(recording, "layer_activity")
    names = _pick_layers(tree, layers, "layer_activity")
    if not names:
        raise ValueError("layer_activity(): the recording has no layers.")
    parts = []
    for name in names:
        ds = tree[f"{_LAYERS}/{name}"].to_dataset(inherit=False)
        da = ds["activity"]
        da = da.assign_coords(layer=("unit", np.full(da.sizes["unit"], name, dtype=object)))
        parts.append(da)
    out = parts[0] if len(parts) == 1 else xr.concat(parts, dim="unit", coords="all")
    out = out.assign_coords(unit=np.arange(out.sizes["unit"]), **_time_coords(tree))
    out.name = "activity"
    out.attrs = {"long_name": "unit activity", "units": "a.u."}
    return out


def node_activity(
    recording: Any,
    layers: str | Sequence[str] | None = None,
) -> xr.DataArray:
    """Return node activity (channel spatial means) as a (time, node) DataArray.

    Parameters
    ----------
    recording : xarray.DataTree or str
        A tree from :func:`open_recording`, or the path of a recording.
    layers : str or list of str, optional
        Layer name(s); default: all recorded layers.

    Returns
    -------
    xarray.DataArray
        Dims (``time``, ``node``); ``node`` is a running index, with coords ``layer`` and
        ``channel`` along ``node`` and the per-frame coords along ``time``.
    """
    tree = _as_tree(recording, "node_activity")
    names = _pick_layers(tree, layers, "node_activity")
    parts = []
    for name in names:
        da = tree[f"{_LAYERS}/{name}"].to_dataset(inherit=False)["nodes"]
        da = da.assign_coords(
            channel=("node", da["node"].values),
            layer=("node", np.full(da.sizes["node"], name, dtype=object)),
        ).drop_vars("node")
        parts.append(da)
    out = parts[0] if len(parts) == 1 else xr.concat(parts, dim="node", coords="all")
    out = out.assign_coords(node=np.arange(out.sizes["node"]), **_time_coords(tree))
    out.name = "nodes"
    return out


def recover(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Make an interrupted recording consistent and mark it ``recovered``.

    Every array along ``time`` is clipped to ``frames_committed`` (frames written after the
    last commit are dropped), stray ``*.partial`` files from interrupted atomic writes are
    removed, and metadata is consolidated so that plain ``xarray.open_datatree`` opens it.

    Parameters
    ----------
    path : str or Path
        The recording directory.

    Returns
    -------
    dict
        ``frames_committed``, ``status`` before recovery, ``clipped`` (arrays that were
        longer than the committed length) and ``partial_files_removed``.

    Examples
    --------
    >>> netphys.recover("interrupted.zarr")  # doctest: +SKIP
    {'frames_committed': 2048, 'status_before': 'recording', ...}
    """
    p = Path(path)
    if int(_open_root(p, "recover").attrs.get("format_version", 1)) == RANKS_FORMAT_VERSION:
        return finalize(p, status="recovered")  # many ranks: netphys.io._ranks
    root = zarr.open_group(p, mode="r+", zarr_format=3, use_consolidated=False)
    attrs = dict(root.attrs)
    n = int(attrs.get("frames_committed", 0))
    removed = 0
    for f in p.rglob("*.partial"):
        f.unlink()
        removed += 1
    clipped = []
    for key, arr in _walk_arrays(root):
        dims = arr.metadata.dimension_names or ()
        if dims and dims[0] == "time" and arr.shape[0] != n:
            shape = (n, *arr.shape[1:])
            if arr.shape[0] < n:
                # metadata resize landed for some arrays only; never happens for committed frames
                raise RecordingFormatError(
                    f"recover(): array {key!r} has {arr.shape[0]} frames, fewer than the "
                    f"{n} committed; the store is damaged beyond the crash protocol."
                )
            arr.resize(shape)
            clipped.append(key)
    root.attrs.update({"status": "recovered", "frames_committed": n})
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
