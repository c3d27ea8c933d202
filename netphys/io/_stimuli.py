"""Input thumbnails stored beside a recording (group ``stimuli``), indexed by stimulus id."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from netphys.io._recording_layout import STIMULI as _STIMULI
from netphys.io._recording_layout import check_version as _check_version
from netphys.io._recording_reader import _as_tree

__all__ = ["read_stimuli", "write_stimuli"]


def write_stimuli(path: str | os.PathLike[str], images: Any, *, max_size: int = 64) -> None:
    """Store thumbnails of the presented images in a recording, indexed by stimulus id.

    A per-unit page (:func:`netphys.experiments.unit_profile`) then shows a unit's preferred
    stimuli themselves. Images larger than ``max_size`` pixels on a side are subsampled.

    Parameters
    ----------
    path : str or Path
        A closed recording.
    images : array-like
        (n_stimuli, height, width) or (n_stimuli, channels, height, width); row ``i`` is
        the input with ``stimulus == i``.
    max_size : int, default=64
        Largest stored side in pixels.

    Raises
    ------
    ValueError
        If ``images`` is not 3-D or 4-D.

    Examples
    --------
    >>> write_stimuli("rec.zarr", x_test[:, 0])  # doctest: +SKIP
    """
    x = np.asarray(images, dtype="float32")
    if x.ndim not in (3, 4):
        raise ValueError(
            "write_stimuli(): `images` must be (n, height, width) or (n, channels, height, "
            f"width); got shape {x.shape}. Pass images, or skip thumbnails for other inputs."
        )
    step = max(1, -(-max(x.shape[-2:]) // max_size))
    x = x[..., ::step, ::step]
    dims = (
        ("stimulus_id", "image_y", "image_x")
        if x.ndim == 3
        else ("stimulus_id", "image_channel", "image_y", "image_x")
    )
    root = zarr.open_group(Path(path), mode="r+", zarr_format=3, use_consolidated=False)
    _check_version(dict(root.attrs), path)
    g = root.require_group(_STIMULI)
    for name in list(g.array_keys()):
        del g[name]
    g.create_array(
        "image",
        data=x,
        dimension_names=dims,
        attributes={"long_name": "presented input (thumbnail)", "subsampled_by": step},
    )
    g.create_array("stimulus_id", data=np.arange(x.shape[0]), dimension_names=("stimulus_id",))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(Path(path))


def read_stimuli(recording: Any) -> np.ndarray | None:
    """Return the stored input thumbnails of a recording (None when there are none).

    Parameters
    ----------
    recording : xarray.DataTree or str
        A tree from :func:`open_recording`, or the path of a recording.

    Returns
    -------
    numpy.ndarray or None
        Images indexed by stimulus id, as written by :func:`write_stimuli`.
    """
    tree = _as_tree(recording, "read_stimuli")
    if _STIMULI not in tree.children:
        return None
    return np.asarray(tree.children[_STIMULI].to_dataset(inherit=False)["image"].values)
