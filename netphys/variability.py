"""Sources of trial-to-trial variability for a recording (specs only; no torch here).

A model in eval mode is a noise-free animal: every repeat of a stimulus gives the same
response, so cross-validated analyses (cvPCA, SVCA) find all variance reliable by
construction. These specs state where a recording's variability comes from; the recorder
applies them with hooks (:mod:`netphys.recorder._variability`) and stores them, JSON-safe, in
the recording's root attrs under ``"variability"``.

- :class:`InputNoise`: additive Gaussian noise on every presented input at a given SNR.
- :class:`Jitter`: small random shifts of images ("fixational jitter").
- :class:`Dropout`: stochastic units, dropout kept on at recording time (MC-dropout style).
- :class:`Poisson`: spiking units, Poisson counts from rectified activity.

Specs combine as a list, e.g. ``[InputNoise(snr=4), Poisson(rate=20, frame_time=0.1)]``; a
dict ``{"kind": "poisson", "rate": 20}`` or a bare kind name (``"dropout"``, with defaults)
is accepted too.

Examples
--------
>>> from netphys.variability import InputNoise, Poisson, parse_variability, to_json
>>> specs = parse_variability([InputNoise(snr=4), {"kind": "poisson", "rate": 20}])
>>> [s.kind for s in specs]
['input_noise', 'poisson']
>>> to_json(specs)[1]
{'kind': 'poisson', 'rate': 20.0, 'frame_time': 0.1, 'layers': None}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from netphys._validation import check_int, check_positive_float

__all__ = [
    "KINDS",
    "Dropout",
    "InputNoise",
    "Jitter",
    "Poisson",
    "Variability",
    "describe",
    "parse_variability",
    "to_json",
]

_FUNC = "variability"


def _check_layers(layers: Any) -> tuple[str, ...] | None:
    if layers is None:
        return None
    if isinstance(layers, str):
        return (layers,)
    try:
        out = tuple(layers)
    except TypeError:
        out = ()
    if not out or not all(isinstance(n, str) for n in out):
        raise TypeError(
            f"{_FUNC}: `layers` must be None (the recorded layers), a module name or a list of "
            f"module names; got {layers!r}."
        )
    return out


@dataclass(frozen=True)
class InputNoise:
    """Additive Gaussian noise on every presented input, fresh on every presentation.

    Parameters
    ----------
    snr : float
        Signal-to-noise power ratio: the noise variance is ``signal_std**2 / snr``.
    signal_std : float, optional
        Standard deviation of the inputs (over all stimuli and elements). Default: taken from
        the data by :func:`netphys.record`, or from the first recorded batch.
    """

    kind: ClassVar[str] = "input_noise"
    snr: float = 4.0
    signal_std: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "snr", check_positive_float(self.snr, func=_FUNC, name="snr"))
        if self.signal_std is not None:
            value = check_positive_float(self.signal_std, func=_FUNC, name="signal_std")
            object.__setattr__(self, "signal_std", value)

    @property
    def noise_std(self) -> float | None:
        """Standard deviation of the added noise (None until ``signal_std`` is known)."""
        return None if self.signal_std is None else self.signal_std / self.snr**0.5


@dataclass(frozen=True)
class Jitter:
    """Random shifts of each image by up to ``pixels`` along its last two axes.

    The shift is drawn per presentation, uniformly in ``[-pixels, pixels]`` on each axis;
    pixels shifted in from outside repeat the image's edge.
    """

    kind: ClassVar[str] = "jitter"
    pixels: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "pixels", check_int(self.pixels, func=_FUNC, name="pixels", minimum=1)
        )


@dataclass(frozen=True)
class Dropout:
    """Stochastic units: dropout at rate ``p`` on the outputs of ``layers`` while recording.

    Kept units are scaled by ``1 / (1 - p)`` (inverted dropout), so the mean is unchanged.
    Applied with forward hooks; the model is not modified. ``layers=None`` means the recorded
    layers.
    """

    kind: ClassVar[str] = "dropout"
    p: float = 0.1
    layers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        p = check_positive_float(self.p, func=_FUNC, name="p")
        if not p < 1:
            raise ValueError(f"{_FUNC}: dropout `p` must be in (0, 1); got {p}. Use e.g. p=0.1.")
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "layers", _check_layers(self.layers))


@dataclass(frozen=True)
class Poisson:
    """Spiking units: Poisson spike counts from the rectified outputs of ``layers``.

    A unit with activity ``a`` fires ``k ~ Poisson(rate * frame_time * max(a, 0))`` spikes in a
    frame; the recorded (and propagated) value is ``k / (rate * frame_time)``, an unbiased
    estimate of ``max(a, 0)`` in the layer's own units. ``rate`` is the firing rate (Hz) at
    activity 1; the noise variance of a unit is ``max(a, 0) / (rate * frame_time)``.
    """

    kind: ClassVar[str] = "poisson"
    rate: float = 10.0
    frame_time: float = 0.1
    layers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rate", check_positive_float(self.rate, func=_FUNC, name="rate"))
        ft = check_positive_float(self.frame_time, func=_FUNC, name="frame_time")
        object.__setattr__(self, "frame_time", ft)
        object.__setattr__(self, "layers", _check_layers(self.layers))

    @property
    def gain(self) -> float:
        """Mean spike count per frame at activity 1 (``rate * frame_time``)."""
        return self.rate * self.frame_time


Variability = InputNoise | Jitter | Dropout | Poisson

#: Kind name -> spec class.
KINDS: dict[str, type] = {c.kind: c for c in (InputNoise, Jitter, Dropout, Poisson)}


def _one(item: Any) -> Variability:
    if isinstance(item, (InputNoise, Jitter, Dropout, Poisson)):
        return item
    if isinstance(item, str):
        item = {"kind": item}
    if isinstance(item, dict):
        options = dict(item)
        kind = options.pop("kind", None)
        if kind not in KINDS:
            raise ValueError(
                f"{_FUNC}: unknown kind {kind!r}; known kinds are {', '.join(map(repr, KINDS))}. "
                "Use e.g. `netphys.variability.Poisson(rate=10)` or {'kind': 'dropout', 'p': 0.1}."
            )
        cls = KINDS[kind]
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ValueError(
                f"{_FUNC}: {kind!r} has no option(s) {unknown}; its options are {sorted(fields)}."
            )
        spec: Variability = cls(**options)
        return spec
    raise TypeError(
        f"{_FUNC}: each source must be a spec (InputNoise, Jitter, Dropout, Poisson), a dict "
        f"with a 'kind', or a kind name; got {type(item).__name__} {item!r}."
    )


def parse_variability(variability: Any) -> list[Variability]:
    """Turn ``variability`` (None, a spec, dict, kind name, or a list of them) into specs.

    Raises
    ------
    ValueError
        On an unknown kind, an unknown option, a negative rate/SNR, or a kind given twice.
    TypeError
        On a value that is none of the accepted forms.

    Examples
    --------
    >>> parse_variability("dropout")
    [Dropout(p=0.1, layers=None)]
    >>> parse_variability(None)
    []
    """
    if variability is None:
        return []
    items = list(variability) if isinstance(variability, (list, tuple)) else [variability]
    specs = [_one(it) for it in items]
    kinds = [s.kind for s in specs]
    twice = sorted({k for k in kinds if kinds.count(k) > 1})
    if twice:
        raise ValueError(f"{_FUNC}: kind(s) {twice} given more than once; give each source once.")
    return specs


def to_json(specs: list[Variability]) -> list[dict[str, Any]]:
    """JSON-safe form of the specs (``parse_variability`` reads it back)."""
    out = []
    for s in specs:
        d: dict[str, Any] = {"kind": s.kind}
        for f in dataclasses.fields(s):
            v = getattr(s, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        out.append(d)
    return out


def describe(stored: Any) -> str:
    """One line describing stored variability attrs (``{"sources": [...], "seed": s}``).

    Examples
    --------
    >>> describe({"sources": [{"kind": "poisson", "rate": 20.0, "frame_time": 0.1}], "seed": 0})
    'poisson(rate=20.0, frame_time=0.1), seed 0'
    >>> describe(None)
    'none (noise-free: repeats are identical)'
    """
    if not stored or not stored.get("sources"):
        return "none (noise-free: repeats are identical)"
    parts = []
    for src in stored["sources"]:
        opts = ", ".join(f"{k}={v}" for k, v in src.items() if k != "kind" and v is not None)
        parts.append(f"{src['kind']}({opts})")
    return f"{' + '.join(parts)}, seed {stored.get('seed')}"
