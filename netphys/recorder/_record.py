"""``record``: present a dataset to a model and record it, in one call."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from netphys._validation import as_rng, check_bool, check_choice, check_int, check_int_values
from netphys.errors import NetphysWarning
from netphys.recorder.recorder import Recorder

__all__ = ["present", "present_spontaneous", "record", "spontaneous_inputs"]

_UNSET: Any = object()


def _labels_array(labels: Any, n: int) -> np.ndarray:
    lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if lab.ndim != 1 or len(lab) != n:
        raise ValueError(
            f"record(): `labels` has shape {lab.shape} but `data` has {n} samples; "
            "pass one integer label per sample."
        )
    return check_int_values(lab, func="record", name="labels")


def _as_inputs(data: Any, labels: Any) -> tuple[torch.Tensor, np.ndarray | None]:
    """Turn ``data`` (tensor, array, or a Dataset of (x, y) items) into inputs and labels."""
    if isinstance(data, (list, tuple, Mapping)):
        kind = "dict" if isinstance(data, Mapping) else type(data).__name__
        hint = (
            "pass the inputs tensor and `labels=` separately, e.g. "
            "`record(model, d['x'], path, labels=d['y'])`"
            if kind == "dict"
            else "stack the samples into one tensor (`torch.stack(samples)`) or wrap them in a "
            "torch Dataset or DataLoader"
        )
        raise TypeError(
            f"record(): `data` must be a torch.Tensor, a numpy array, a torch Dataset of "
            f"(input, label) items or a DataLoader; got a {kind}: {hint}."
        )
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.Tensor):
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError("record(): `data` is empty; pass at least one sample.")
        items = [data[i] for i in range(n)]
        if isinstance(items[0], (tuple, list)):
            x = torch.stack([torch.as_tensor(it[0]) for it in items])
            if labels is None and len(items[0]) > 1:
                labels = [it[1] for it in items]
        else:
            x = torch.stack([torch.as_tensor(it) for it in items])
    elif isinstance(data, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(data)
    else:
        raise TypeError(
            "record(): `data` must be a torch.Tensor, a numpy array, a torch Dataset of "
            f"(input, label) items or a DataLoader; got {type(data).__name__}."
        )
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(
            f"record(): `data` is empty (shape {tuple(x.shape)}); pass at least one sample."
        )
    return x, None if labels is None else _labels_array(labels, x.shape[0])


def _loader_batches(loader: Any) -> Iterator[tuple[torch.Tensor, np.ndarray | None]]:
    """Yield (inputs, labels or None) from a DataLoader's batches."""
    for batch in loader:
        if isinstance(batch, (tuple, list)):
            x = torch.as_tensor(batch[0])
            y = batch[1] if len(batch) > 1 else None
        elif isinstance(batch, Mapping):
            raise TypeError(
                "record(): the DataLoader yields dicts; netphys needs (input, label) pairs or "
                "input tensors. Wrap the dataset so that it returns `(x, y)` tuples."
            )
        else:
            x, y = torch.as_tensor(batch), None
        yield x, None if y is None else _labels_array(y, x.shape[0])


def spontaneous_inputs(
    like: torch.Tensor,
    n: int,
    *,
    kind: str = "noise",
    rng: Any = None,
    model: nn.Module | None = None,
) -> torch.Tensor:
    """Spontaneous-activity inputs shaped like ``like``'s samples.

    Float inputs: Gaussian noise with the data's mean and std (``"noise"``) or the data mean
    (``"blank"``), in the data's dtype. Integer inputs (token ids of a model whose first layer
    is an :class:`torch.nn.Embedding`): uniformly random tokens over the embedding's
    vocabulary (or the range seen in ``like``), or the padding token (else 0) for ``"blank"``.

    Examples
    --------
    >>> spontaneous_inputs(torch.zeros(3, 4, dtype=torch.long), 2, rng=0, model=nn.Embedding(7, 2)).shape
    torch.Size([2, 4])
    """
    check_choice(kind, ("noise", "blank"), func="record", name="spontaneous")
    gen = as_rng(rng, func="record")
    shape = (n, *like.shape[1:])
    if not like.is_floating_point():
        emb = next(
            (m for m in (model.modules() if model else []) if isinstance(m, nn.Embedding)), None
        )
        if kind == "blank":
            pad = emb.padding_idx if emb is not None and emb.padding_idx is not None else 0
            return torch.full(shape, int(pad), dtype=like.dtype)
        lo, hi = (
            (0, emb.num_embeddings) if emb is not None else (int(like.min()), int(like.max()) + 1)
        )
        return torch.as_tensor(gen.integers(lo, hi, size=shape), dtype=like.dtype)
    mean = float(like.float().mean())
    std = float(like.float().std()) if like.numel() > 1 else 1.0
    if kind == "blank":
        arr = np.full(shape, mean)
    else:
        arr = gen.normal(mean, std, size=shape)
    return torch.as_tensor(arr, dtype=like.dtype)


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


def _present_loader(
    rec: Recorder, model: nn.Module, loader: Any, *, repeat: int, device: Any
) -> int:
    """Show every batch of a DataLoader; return the number of samples."""
    start = 0
    with torch.no_grad():
        for xb, yb in _loader_batches(loader):
            n = xb.shape[0]
            rec.annotate(
                stimulus=np.arange(start, start + n),
                label=-1 if yb is None else yb,
                condition="stimulus",
                repeat=repeat,
            )
            model(xb.to(device, non_blocking=True))
            start += n
    return start


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
    dtype: str | None = None,
    max_units: int | Mapping[str, int] | None = None,
    rng: int | np.random.Generator | None = 0,
    variability: Any = None,
    progress: bool = True,
    seed: Any = _UNSET,
    **recorder_options: Any,
) -> Path:
    """Present a dataset to ``model`` (``repeats`` times, plus spontaneous frames) and record it.

    Parameters
    ----------
    model : torch.nn.Module
        The model; it is put in eval mode for the recording and restored afterwards.
    data : torch.Tensor, numpy.ndarray, torch.utils.data.Dataset or DataLoader
        Inputs with samples first, a Dataset of ``(input, label)`` items, or a DataLoader
        yielding ``(inputs, labels)`` batches or input batches (its batches are used as they
        come; ``stimulus`` counts samples in loader order).
    path : str or Path
        The recording directory (``*.zarr``).
    labels : array of int, optional
        One integer label per sample (taken from the Dataset when it yields pairs).
    layers : str or list of str, optional
        Modules to record (default: every activation module).
    repeats : int, default=1
        How many times the whole dataset is presented (``repeat`` = 0, 1, ...).
    n_spontaneous : int, default=0
        Frames of noise (or blank) input after the stimuli, ``condition="spontaneous"``;
        random tokens for token models (see :func:`spontaneous_inputs`).
    spontaneous : {"noise", "blank"}, default="noise"
        Gaussian noise with the data's mean and std, or the data mean.
    batch_size : int, default=256
        Samples per forward call (a DataLoader keeps its own batches).
    session : int, optional
        Session id of these frames (default: 0, or the next one when appending).
    mode : {"w-", "w", "a"}, default="w-"
        Refuse an existing path, replace an existing recording, or append a session to it.
    dtype, max_units, **recorder_options
        Passed to :class:`netphys.Recorder`.
    rng : int, numpy.random.Generator or None, default=0
        Randomness of the unit selection, of the spontaneous inputs and of ``variability``.
    variability : spec, list of specs, dict or str, optional
        Trial-to-trial variability (see :mod:`netphys.variability`), fresh on every repeat and
        seeded by ``rng``; input noise takes its ``signal_std`` from ``data`` when unset (from
        the first batch for a DataLoader). None (default) records the noise-free model:
        repeats are then identical (warned).
    progress : bool, default=True
        Show a progress bar.
    seed : int, optional
        Deprecated alias of ``rng``.

    Returns
    -------
    pathlib.Path
        The recording's path; open it with :func:`netphys.open_recording`.

    Raises
    ------
    ValueError
        On empty data, labels of the wrong length, or a bad ``repeats``/``n_spontaneous``.
    TypeError
        On data of an unsupported type (a list or dict: the message says what to pass) or
        non-integer labels.

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
    if seed is not _UNSET:
        warnings.warn("record(): `seed=` is deprecated; pass `rng=`.", FutureWarning, stacklevel=2)
        rng = seed
    loader = data if isinstance(data, torch.utils.data.DataLoader) else None
    x, lab = (None, None) if loader is not None else _as_inputs(data, labels)
    repeats = check_int(repeats, func="record", name="repeats", minimum=1)
    n_spontaneous = check_int(n_spontaneous, func="record", name="n_spontaneous", minimum=0)
    batch_size = check_int(batch_size, func="record", name="batch_size", minimum=1)
    check_choice(spontaneous, ("noise", "blank"), func="record", name="spontaneous")
    progress = check_bool(progress, func="record", name="progress")
    if repeats > 1 and variability is None:
        warnings.warn(
            f"record(): {repeats} repeats without `variability`: a model in eval mode gives "
            "identical repeats, so cvPCA/SVCA find every variance reliable. Pass e.g. "
            "`variability=netphys.variability.Poisson(rate=10, frame_time=0.1)`.",
            NetphysWarning,
            stacklevel=2,
        )
    gen = as_rng(rng, func="record")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    noise = None
    if n_spontaneous:  # made before recording: a bad input fails before any frame is written
        like = x if x is not None else next(_loader_batches(loader))[0]
        noise = spontaneous_inputs(like, n_spontaneous, kind=spontaneous, rng=gen, model=model)
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
            rng=gen if not isinstance(rng, (int, np.integer)) else int(rng),
            variability=variability,
            **recorder_options,
        ) as rec:
            if x is not None:
                rec.variability.resolve_input_scale(x)
            rec.session(session)
            n = None if x is None else x.shape[0]
            bar = tqdm(total=None if n is None else repeats * n + n_spontaneous,
                       disable=not progress, desc="recording", unit="frame")  # fmt: skip
            for r in range(repeats):
                if x is None:
                    bar.update(_present_loader(rec, model, loader, repeat=r, device=device))
                else:
                    present(
                        rec, model, x, labels=lab, repeat=r, batch_size=batch_size, device=device
                    )
                    bar.update(x.shape[0])
            if noise is not None:
                present_spontaneous(rec, model, noise, batch_size=batch_size, device=device)
                bar.update(n_spontaneous)
            bar.close()
    finally:
        model.train(was_training)
    return Path(path)
