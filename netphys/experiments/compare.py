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


_CALCIUM_FORMATS = ("suite2p", "simulated-calcium")


def _is_calcium(ds: Any) -> bool:
    """Tell whether a reader output is calcium imaging (suite2p, NWB ophys, simulated calcium)."""
    if not isinstance(ds, xr.Dataset):
        return False
    attrs = ds.attrs
    return (
        attrs.get("format") in _CALCIUM_FORMATS
        or attrs.get("modality") == "ophys"
        or {"F", "spks"} <= set(ds.data_vars)
    )


def _select(
    ds: xr.Dataset, *, session: Any, condition: str, name: str
) -> tuple[xr.Dataset, list[str]]:
    """Frames of one session and one condition; returns what was chosen, in words."""
    said = []
    coords = ds["activity"].coords
    if "session" in coords and session != "all":
        sessions = np.unique(np.asarray(coords["session"].values))
        chosen = int(sessions.max()) if session == "last" else int(session)
        if chosen not in sessions:
            raise ValueError(
                f"compare_recordings(): `session`={session!r} but {name} has sessions "
                f"{sessions.tolist()}; pick one of them, 'last' or 'all'."
            )
        ds = ds.isel(time=np.asarray(coords["session"].values) == chosen)
        said.append(f"session {chosen} of {sessions.tolist()}")
    coords = ds["activity"].coords
    if "condition" in coords and condition != "all":
        cond = np.asarray(coords["condition"].values).astype(str)
        if not (cond == condition).any():
            raise ValueError(
                f"compare_recordings(): {name} has no {condition!r} frames (conditions "
                f"{sorted(set(cond.tolist()))}); pass condition='all' or another condition."
            )
        ds = ds.isel(time=cond == condition)
        said.append(f"{condition} frames")
    return ds, said


def _observe(model: xr.Dataset, mouse: xr.Dataset, seed: int) -> tuple[xr.Dataset, str]:
    """Image the model's activity like the mouse's: the calcium model at the mouse's frame rate."""
    from netphys.population import simulate_calcium

    fs = float(mouse.attrs.get("frame_rate", np.nan))
    if not np.isfinite(fs) or fs <= 0:
        return model, "mouse frame rate unknown: the model was NOT passed through a calcium model"
    act = model["activity"].drop_vars("frame_time", errors="ignore")
    cal = simulate_calcium(act, frame_rate=fs, tau=1.0, deconvolution="oasis", rng=seed)
    out = cal[["spks"]].rename(spks="activity")
    out.attrs = {**model.attrs, "frame_rate": fs, "format": model.attrs.get("format", "array")}
    note = (
        f"the model was passed through the calcium model at the mouse's {fs:g} Hz (indicator "
        f"tau 1.0 s, shot noise {cal.attrs['shot_noise']}, neuropil {cal.attrs['neuropil']}, "
        "OASIS deconvolution) and compared on its deconvolved events"
    )
    return out, note


def compare_recordings(
    a: Any,
    b: Any,
    *,
    session: int | str = "last",
    condition: str = "stimulus",
    layers: Any = None,
    calcium: str = "auto",
    rng: Any = 0,
    **options: Any,
) -> xr.Dataset:
    """Run :func:`netphys.population.compare` on recordings given as paths, trees or arrays.

    Like is compared with like: one session's frames of one condition (never a whole
    multi-session store treated as one continuous recording), chosen layers, and, when the
    other side is calcium imaging, the model imaged through the calcium model at that
    recording's frame rate. What was done is stated in the result's ``notes`` attr.

    Parameters
    ----------
    a, b : path, xarray.DataTree, xarray.Dataset, xarray.DataArray or numpy.ndarray
        A path opened with :func:`netphys.io.open_dataset` (suite2p folder, NWB, .mat, .npz,
        netphys ``*.zarr``), a model recording tree (via :func:`netphys.layer_activity`), a
        reader's Dataset or a (time, unit) array.
    session : int, "last" or "all", default="last"
        Session of recordings that have a ``session`` coord.
    condition : {"stimulus", "spontaneous", "all"} or str, default="stimulus"
        Frames of this condition, where a ``condition`` coord exists.
    layers : str or list of str, optional
        Layers of model recordings (default: all recorded layers).
    calcium : {"auto", "on", "off"}, default="auto"
        Pass a model recording through :func:`netphys.population.simulate_calcium` (OASIS
        deconvolution, at the other recording's frame rate): "auto" does it when exactly one
        side is a model and the other calcium imaging.
    rng : int, numpy.random.Generator or None, default=0
        Randomness of the calcium model and of :func:`netphys.population.compare`.
    **options
        Keyword arguments of :func:`netphys.population.compare` (``cells_only``, ``n_units``,
        ``n_frames``, ``n_boot``, ...).

    Returns
    -------
    xarray.Dataset
        The :func:`netphys.population.compare` result, with attrs ``notes`` (what was
        selected and how each side was observed, in words).

    Examples
    --------
    >>> from netphys.population import simulate_population
    >>> a = simulate_population(40, 300, rng=0)["activity"]
    >>> int(compare_recordings(a, a * 2, sort=False)["n_units"][0])
    40
    """
    from netphys._validation import as_rng, check_choice

    check_choice(calcium, ("auto", "on", "off"), func="compare_recordings", name="calcium")
    if not (session in ("last", "all") or isinstance(session, (int, np.integer))):
        raise ValueError(
            f"compare_recordings(): `session` must be an int, 'last' or 'all'; got {session!r}."
        )
    gen = as_rng(rng, func="compare_recordings")
    cal_seed, cmp_seed = (int(v) for v in gen.integers(2**31, size=2))
    pops, notes, is_model = [], [], []
    for x, name in ((a, "a"), (b, "b")):
        if isinstance(x, (str, os.PathLike)):
            x = open_dataset(x, strict=False, **({"layers": layers} if layers is not None else {}))
        model = isinstance(x, xr.DataTree) or (
            isinstance(x, xr.Dataset) and x.attrs.get("format") == "netphys"
        )
        if isinstance(x, xr.DataTree):
            attrs = {k: v for k, v in x.attrs.items() if k in ("frame_rate", "variability")}
            x = layer_activity(x, layers).to_dataset(name="activity").assign_attrs(attrs)
            x.attrs["format"] = "netphys"
        if isinstance(x, (xr.Dataset, xr.DataArray)):
            x = as_recording_dataset(x, func="compare_recordings")
            x, said = _select(x, session=session, condition=condition, name=name)
            if model:
                lay = sorted(
                    {str(v) for v in x["activity"].coords.get("layer", xr.DataArray([])).values}
                )
                said.append(f"layers {lay}" if lay else "all layers")
            notes.append(
                f"{name}: " + (", ".join(said) or "every frame") + f" ({x.sizes['time']} frames)"
            )
        pops.append(x)
        is_model.append(model)
    if calcium != "off":
        for i in (0, 1):
            other = pops[1 - i]
            wanted = calcium == "on" or (not is_model[1 - i] and _is_calcium(other))
            if is_model[i] and wanted:
                pops[i], note = _observe(pops[i], other, cal_seed)
                notes.append(f"{'ab'[i]}: {note}")
    result = compare(pops[0], pops[1], rng=cmp_seed, **options)
    result.attrs["notes"] = notes
    return result


_SIMILARITY = (
    ("rsa", "RSA (Spearman, cross-validated RDMs)"),
    ("rsa_ceiling", "  split-half noise ceiling"),
    ("cka", "linear CKA"),
    ("cka_ceiling", "  split-half noise ceiling"),
)


def _cell(result: xr.Dataset, key: str, i: int | None, fmt: str) -> str:
    v = result[key].values if i is None else result[key].values[i]
    if not np.isfinite(v):
        return "nan"
    text = fmt.format(v)
    ci = f"{key}_ci"
    if ci in result:
        lo, hi = result[ci].values if i is None else result[ci].values[i]
        if np.isfinite(lo) and np.isfinite(hi):
            text += f" [{fmt.format(lo)}, {fmt.format(hi)}]"
    return text


def _table(result: xr.Dataset) -> str:
    labels = [str(v) for v in result["recording"].values]
    width = max(len(desc) for _, desc, _ in COMPARE_SCALARS) + 2
    col = max(26, *(len(lab) + 2 for lab in labels))
    lines = ["".ljust(width) + "".join(lab.rjust(col) for lab in labels)]
    for key, desc, fmt in COMPARE_SCALARS:
        cells = [_cell(result, key, i, fmt) for i in range(len(labels))]
        lines.append(desc.ljust(width) + "".join(c.rjust(col) for c in cells))
    for key, desc in _SIMILARITY:
        if key in result:
            lines.append(desc.ljust(width) + _cell(result, key, None, "{:.3f}").rjust(col))
    if result.attrs.get("n_boot"):
        lines.append(
            f"[ ]: 95 % interval over {result.attrs['n_boot']} half-samples of the neurons"
        )
    lines += [f"matched: {result.attrs.get('matching', '')}"]
    lines += [f"note: {n}" for n in result.attrs.get("notes", [])]
    lines += [f"caveat: {c}" for c in result.attrs.get("caveats", [])]
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
    session: int | str = "last",
    condition: str = "stimulus",
    layers: Any = None,
    calcium: str = "auto",
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
    session, condition, layers, calcium
        What to compare and how to observe a model, as in :func:`compare_recordings`.
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
    read = dict(read_options or {}) | ({"layers": layers} if layers is not None else {})
    a = open_dataset(path_a, strict=False, **read)  # one set of options for two formats
    b = open_dataset(path_b, strict=False, **read)
    if labels is None:
        na, nb = Path(path_a).name or str(path_a), Path(path_b).name or str(path_b)
        labels = (na, nb) if na != nb else (f"{na} (a)", f"{nb} (b)")
    result = compare_recordings(
        a,
        b,
        n_units=n_units,
        n_frames=n_frames,
        labels=labels,
        session=session,
        condition=condition,
        layers=layers,
        calcium=calcium,
        rng=rng,
        **options,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_figure(plot_compare(result), out / "compare.png")
    summary = {
        "recordings": {
            lab: {key: json_safe(result[key].values[i]) for key, _, _ in COMPARE_SCALARS}
            | {
                f"{key}_ci": json_safe(result[f"{key}_ci"].values[i])
                for key, _, _ in COMPARE_SCALARS
                if f"{key}_ci" in result
            }
            for i, lab in enumerate(labels)
        },
        "similarity": {
            key: json_safe(result[key].values)
            for key in result.data_vars
            if str(key).startswith(("rsa", "cka"))
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
