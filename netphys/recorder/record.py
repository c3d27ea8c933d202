"""``record``: present a dataset to a model and record it, in one call."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from netphys.errors import NetphysWarning
from netphys.recorder.recorder import Recorder

__all__ = ["present", "present_spontaneous", "record"]


def _as_inputs(data: Any, labels: Any) -> tuple[torch.Tensor, np.ndarray | None]:
    """Turn ``data`` (tensor, array, or a Dataset of (x, y) items) into inputs and labels."""
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.Tensor):
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError("record(): `data` is empty; pass at least one sample.")
        items = [data[i] for i in range(n)]
        if isinstance(items[0], (tuple, list)):
            x = torch.stack([torch.as_tensor(it[0]) for it in items])
            if labels is None and len(items[0]) > 1:
                labels = np.asarray([int(it[1]) for it in items])
        else:
            x = torch.stack([torch.as_tensor(it) for it in items])
    elif isinstance(data, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(data)
    else:
        raise TypeError(
            "record(): `data` must be a torch.Tensor, a numpy array or a torch Dataset of "
            f"(input, label) items; got {type(data).__name__}."
        )
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(
            f"record(): `data` is empty (shape {tuple(x.shape)}); pass at least one sample."
        )
    if labels is not None:
        lab = (
            labels.detach().cpu().numpy()
            if isinstance(labels, torch.Tensor)
            else np.asarray(labels)
        )
        if lab.ndim != 1 or len(lab) != x.shape[0]:
            raise ValueError(
                f"record(): `labels` has shape {lab.shape} but `data` has {x.shape[0]} samples; "
                "pass one integer label per sample."
            )
        labels = lab.astype("int64")
    return x, labels


def spontaneous_inputs(
    like: torch.Tensor, n: int, *, kind: str = "noise", rng: np.random.Generator
) -> torch.Tensor:
    """Noise (data mean and std) or blank (data mean) inputs shaped like ``like``'s samples."""
    mean = float(like.float().mean())
    std = float(like.float().std()) if like.numel() > 1 else 1.0
    shape = (n, *like.shape[1:])
    if kind == "blank":
        arr = np.full(shape, mean, dtype="float32")
    elif kind == "noise":
        arr = rng.normal(mean, std, size=shape).astype("float32")
    else:
        raise ValueError(f"record(): `spontaneous` must be 'noise' or 'blank'; got {kind!r}.")
    return torch.as_tensor(arr, dtype=like.dtype if like.is_floating_point() else torch.float32)


def present(
    rec: Recorder,
    model: nn.Module,
    x: torch.Tensor,
    *,
    labels: np.ndarray | None = None,
    stimulus: np.ndarray | None = None,
    condition: str = "stimulus",
    repeat: int = 0,
    batch_size: int = 256,
    device: Any = None,
    progress: bool = False,
    desc: str | None = None,
) -> None:
    """Show ``x`` to ``model`` batch by batch inside an open recorder, annotating each batch."""
    n = x.shape[0]
    stim = np.arange(n) if stimulus is None else np.asarray(stimulus)
    with torch.no_grad():
        for s in tqdm(range(0, n, batch_size), disable=not progress, desc=desc, leave=False):
            e = min(s + batch_size, n)
            xb = x[s:e]
            if device is not None:
                xb = xb.to(device, non_blocking=True)
            rec.annotate(
                stimulus=stim[s:e],
                label=-1 if labels is None else labels[s:e],
                condition=condition,
                repeat=repeat,
            )
            model(xb)


def present_spontaneous(
    rec: Recorder,
    model: nn.Module,
    noise: torch.Tensor,
    *,
    batch_size: int = 256,
    device: Any = None,
) -> None:
    """Show noise (or blank) inputs as ``condition="spontaneous"`` frames with no stimulus."""
    present(
        rec,
        model,
        noise,
        stimulus=np.full(len(noise), -1),
        condition="spontaneous",
        batch_size=batch_size,
        device=device,
    )


def record(
    model: nn.Module,
    data: Any,
    path: str | os.PathLike[str],
    *,
    labels: Any = None,
    layers: str | Sequence[str] | None = None,
    repeats: int = 1,
    n_spontaneous: int = 0,
    spontaneous: str = "noise",
    batch_size: int = 256,
    session: int | None = None,
    mode: str = "w-",
    dtype: str = "float32",
    max_units: int | Mapping[str, int] | None = None,
    seed: int = 0,
    variability: Any = None,
    progress: bool = True,
    **recorder_options: Any,
) -> Path:
    """Present a dataset to ``model`` (``repeats`` times, plus spontaneous frames) and record it.

    Parameters
    ----------
    model : torch.nn.Module
        The model; it is put in eval mode for the recording and restored afterwards.
    data : torch.Tensor, numpy.ndarray or torch.utils.data.Dataset
        Inputs with samples first, or a Dataset of ``(input, label)`` items.
    path : str or Path
        The recording directory (``*.zarr``).
    labels : array of int, optional
        One label per sample (taken from the Dataset when it yields pairs).
    layers : str or list of str, optional
        Modules to record (default: every activation module).
    repeats : int, default=1
        How many times the whole dataset is presented (``repeat`` = 0, 1, ...).
    n_spontaneous : int, default=0
        Frames of noise (or blank) input after the stimuli, ``condition="spontaneous"``.
    spontaneous : {"noise", "blank"}, default="noise"
        Gaussian noise with the data's mean and std, or the data mean.
    batch_size : int, default=256
        Samples per forward call.
    session : int, optional
        Session id of these frames (default: 0, or the next one when appending).
    mode : {"w-", "w", "a"}, default="w-"
        Refuse an existing path, overwrite it, or append a session to it.
    variability : spec, list of specs, dict or str, optional
        Trial-to-trial variability (see :mod:`netphys.variability`), fresh on every repeat and
        seeded by ``seed``; input noise takes its ``signal_std`` from ``data`` when unset.
        None (default) records the noise-free model: repeats are then identical (warned).
    dtype, max_units, seed, **recorder_options
        Passed to :class:`netphys.Recorder`.
    progress : bool, default=True
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        The recording's path; open it with :func:`netphys.open_recording`.

    Raises
    ------
    ValueError
        On empty data, labels of the wrong length, or a bad ``repeats``/``n_spontaneous``.

    Warns
    -----
    NetphysWarning
        When ``repeats > 1`` without ``variability``: the repeats are identical, so
        cross-validated analyses (cvPCA, SVCA) find all variance reliable by construction.

    Examples
    --------
    >>> import torch, netphys
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    >>> netphys.record(model, torch.randn(10, 4), "rec.zarr", repeats=2)  # doctest: +SKIP
    PosixPath('rec.zarr')
    """
    x, lab = _as_inputs(data, labels)
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"record(): `repeats` must be an int >= 1; got {repeats!r}.")
    if not isinstance(n_spontaneous, int) or n_spontaneous < 0:
        raise ValueError(f"record(): `n_spontaneous` must be an int >= 0; got {n_spontaneous!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"record(): `batch_size` must be an int >= 1; got {batch_size!r}.")
    if repeats > 1 and variability is None:
        warnings.warn(
            f"record(): {repeats} repeats without `variability`: a model in eval mode gives "
            "identical repeats, so cvPCA/SVCA find every variance reliable. Pass e.g. "
            "`variability=netphys.variability.Poisson(rate=10, frame_time=0.1)`.",
            NetphysWarning,
            stacklevel=2,
        )
    rng = np.random.default_rng(seed)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with Recorder(
            model,
            path,
            layers=layers,
            mode=mode,
            dtype=dtype,
            max_units=max_units,
            seed=seed,
            variability=variability,
            **recorder_options,
        ) as rec:
            rec.variability.resolve_input_scale(x)
            rec.session(session)
            total = repeats * x.shape[0] + n_spontaneous
            bar = tqdm(total=total, disable=not progress, desc="recording", unit="frame")
            for r in range(repeats):
                present(rec, model, x, labels=lab, repeat=r, batch_size=batch_size, device=device)
                bar.update(x.shape[0])
            if n_spontaneous:
                noise = spontaneous_inputs(x, n_spontaneous, kind=spontaneous, rng=rng)
                present_spontaneous(rec, model, noise, batch_size=batch_size, device=device)
                bar.update(n_spontaneous)
            bar.close()
    finally:
        model.train(was_training)
    return Path(path)
