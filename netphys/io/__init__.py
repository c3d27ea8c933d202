"""Recording format (Zarr v3) and readers/writers for real neural data formats."""

from __future__ import annotations

from netphys.io._stimuli import read_stimuli, write_stimuli
from netphys.io.recording import (
    FORMAT_VERSION,
    layer_activity,
    node_activity,
    open_recording,
    recover,
)

__all__ = [
    "FORMAT_VERSION",
    "layer_activity",
    "node_activity",
    "open_recording",
    "read_stimuli",
    "recover",
    "write_stimuli",
]

# --- readers and writers of real data (issue 5) --------------------------------------------
from netphys.io._data import data_dir
from netphys.io.dataset import open_dataset
from netphys.io.matlab import read_stringer_mat
from netphys.io.npz import read_npz
from netphys.io.nwb import read_nwb, to_nwb, write_nwb
from netphys.io.pynapple import to_pynapple
from netphys.io.suite2p import read_suite2p, to_suite2p, write_suite2p

__all__ += [
    "data_dir",
    "open_dataset",
    "read_npz",
    "read_nwb",
    "read_stringer_mat",
    "read_suite2p",
    "to_nwb",  # deprecated alias of write_nwb
    "to_pynapple",
    "to_suite2p",  # deprecated alias of write_suite2p
    "write_nwb",
    "write_suite2p",
]
