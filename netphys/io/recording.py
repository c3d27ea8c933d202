"""The netphys recording format (version 2): a Zarr v3 store that opens as an xarray DataTree.

Layout (see ``docs/format.md``)::

    NAME.zarr/                 root: per-frame table along ``time`` + provenance attrs
      behaviour/               logits (time, output), prediction, confidence, loss
      layers/<module.path>/    activity (time, unit), nodes (time, node), unit coordinates
      graph/<pre>--<post>/     weight (checkpoint, post_node, pre_node)

This module never imports torch. Writing is done by :class:`RecordingWriter` (used by
:class:`netphys.Recorder`); reading by :func:`open_recording`, :func:`layer_activity` and
:func:`node_activity`; crash repair by :func:`recover`. The code lives in private modules:
``_recording_layout`` (names, dtypes, codecs, checks), ``_recording_writer``,
``_recording_reader``, ``_recording_recover`` and ``_lease`` (one writer per path).
"""

from __future__ import annotations

from netphys.io._recording_layout import COMPRESSIONS, FORMAT_VERSION, FRAME_FIELDS
from netphys.io._recording_reader import layer_activity, node_activity, open_recording
from netphys.io._recording_recover import recover
from netphys.io._recording_writer import RecordingWriter

__all__ = [
    "COMPRESSIONS",
    "FORMAT_VERSION",
    "FRAME_FIELDS",
    "RecordingWriter",
    "layer_activity",
    "node_activity",
    "open_recording",
    "recover",
]
