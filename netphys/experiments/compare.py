"""Model versus mouse on files: open two recordings, compare them, write a figure and a table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from netphys.experiments._common import json_safe, save_figure, write_json
from netphys.io import layer_activity, open_dataset
from netphys.io._common import as_recording_dataset
from netphys.plot import plot_compare
from netphys.population import COMPARE_SCALARS, compare

__all__ = ["compare_files", "compare_recordings"]


def compare_recordings(a: Any, b: Any, **options: Any) -> xr.Dataset:
    """Run :func:`netphys.population.compare` on recordings given as paths, trees or arrays.

    Parameters
    ----------
    a, b : path, xarray.DataTree, xarray.Dataset, xarray.DataArray or numpy.ndarray
        A path opened with :func:`netphys.io.open_dataset` (suite2p folder, NWB, .mat, .npz,
        netphys ``*.zarr``), a model recording tree (all layers, via
        :func:`netphys.layer_activity`), a reader's Dataset or a (time, unit) array.
    **options
        Keyword arguments of :func:`netphys.population.compare`.

    Returns
    -------
    xarray.Dataset
        The :func:`netphys.population.compare` result.

    Examples
    --------
    >>> from netphys.population import simulate_population
    >>> a = simulate_population(40, 300, rng=0)["activity"]
    >>> int(compare_recordings(a, a * 2, sort=False)["n_units"][0])
    40
    """
    pops = []
    for x in (a, b):
        if isinstance(x, (str, os.PathLike)):
            x = open_dataset(x)
        if isinstance(x, xr.DataTree):
            attrs = {k: v for k, v in x.attrs.items() if k == "frame_rate"}
            x = layer_activity(x).to_dataset(name="activity").assign_attrs(attrs)
        if isinstance(x, (xr.Dataset, xr.DataArray)):
            x = as_recording_dataset(x, func="compare_recordings")
        pops.append(x)
    return compare(pops[0], pops[1], **options)


def _table(result: xr.Dataset) -> str:
    labels = [str(v) for v in result["recording"].values]
    width = max(len(desc) for _, desc, _ in COMPARE_SCALARS) + 2
    col = max(12, *(len(lab) + 2 for lab in labels))
    lines = ["".ljust(width) + "".join(lab.rjust(col) for lab in labels)]
    for key, desc, fmt in COMPARE_SCALARS:
        vals = result[key].values
        cells = ["nan" if not np.isfinite(v) else fmt.format(v) for v in vals]
        lines.append(desc.ljust(width) + "".join(c.rjust(col) for c in cells))
    return "\n".join(lines)


def compare_files(
    path_a: str | os.PathLike[str],
    path_b: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    n_units: int | None = None,
    n_frames: int | None = None,
    labels: tuple[str, str] | None = None,
    read_options: dict[str, Any] | None = None,
    rng: Any = 0,
    **options: Any,
) -> str:
    """Compare two recordings on disk; write ``compare.png`` and ``compare.json``; return a table.

    Parameters
    ----------
    path_a, path_b : str or path-like
        Anything :func:`netphys.io.open_dataset` opens (suite2p folder, NWB, .mat, .npz,
        netphys ``*.zarr``).
    out_dir : str or path-like
        Folder for ``compare.png`` (the :func:`netphys.plot.plot_compare` figure) and ``compare.json``
        (scalars per recording, parameters, sources); created if missing.
    n_units, n_frames : int, optional
        Matched sizes, as in :func:`netphys.population.compare`.
    labels : tuple of str, optional
        Names of the two recordings; default the file names (made unique).
    read_options : dict, optional
        Options for :func:`netphys.io.open_dataset` on both files, e.g.
        ``{"bin_width": 0.1}`` for spike times or ``{"activity": "F"}``; a reader ignores
        options it does not take.
    rng : int, numpy.random.Generator or None, default=0
        Randomness, as in :func:`netphys.population.compare`.
    **options
        Other keyword arguments of :func:`netphys.population.compare` (``cells_only``, ``block_length``,
        ``min_shift``, ``sort``, ...).

    Returns
    -------
    str
        A printable table: one row per measure, one column per recording.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> d = tempfile.mkdtemp()
    >>> rng = np.random.default_rng(0)
    >>> for name in ("a", "b"):
    ...     np.savez(f"{d}/{name}.npz", spks=rng.random((30, 200)), fs=10.0)
    >>> table = compare_files(f"{d}/a.npz", f"{d}/b.npz", f"{d}/out", sort=False)
    >>> sorted(p.name for p in Path(f"{d}/out").iterdir())
    ['compare.json', 'compare.png']
    """
    a = open_dataset(path_a, strict=False, **(read_options or {}))  # one set for two formats
    b = open_dataset(path_b, strict=False, **(read_options or {}))
    if labels is None:
        na, nb = Path(path_a).name or str(path_a), Path(path_b).name or str(path_b)
        labels = (na, nb) if na != nb else (f"{na} (a)", f"{nb} (b)")
    result = compare_recordings(
        a, b, n_units=n_units, n_frames=n_frames, labels=labels, rng=rng, **options
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_figure(plot_compare(result), out / "compare.png")
    summary = {
        "recordings": {
            lab: {key: json_safe(result[key].values[i]) for key, _, _ in COMPARE_SCALARS}
            for i, lab in enumerate(labels)
        },
        "sources": {labels[0]: os.fspath(path_a), labels[1]: os.fspath(path_b)},
        "parameters": {k: v for k, v in result.attrs.items() if not k.startswith("source")},
        "spectra": {
            lab: {
                "svca_reliable": [json_safe(v) for v in result["svca_reliable"].values[i]],
                "eigen_variance": [json_safe(v) for v in result["eigen_variance"].values[i]],
            }
            for i, lab in enumerate(labels)
        },
    }
    write_json(out / "compare.json", summary)
    return _table(result)
