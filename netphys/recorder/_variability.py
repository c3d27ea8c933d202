"""Apply variability specs (:mod:`netphys.variability`) to a model with hooks.

Input sources (noise, jitter) are a forward pre-hook on the model; unit sources (dropout,
Poisson spiking) are forward hooks on layer outputs that return the changed output, so later
hooks (the recorder's) and later layers see it. The model itself is never modified, and the
hooks act only while ``active()`` is true (recorded, unpaused forward calls). All draws come
from one ``torch.Generator`` per device seeded with ``seed``: a run is reproducible, and every
presentation (every repeat) gets fresh noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from netphys.variability import (
    Dropout,
    InputNoise,
    Jitter,
    Poisson,
    Variability,
    parse_variability,
    to_json,
)

__all__ = ["VariabilityHooks"]


class VariabilityHooks:
    """Hooks that add the variability of ``specs`` to ``model``'s forward calls.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    variability : spec, list of specs, dict or str
        Parsed with :func:`netphys.variability.parse_variability`.
    seed : int
        Seed of the noise generator (stored with the specs).
    layers : list of str
        The recorded layers: the default targets of the unit sources.
    active : callable
        Returns True when the current forward call is recorded.
    """

    def __init__(
        self,
        model: nn.Module,
        variability: Any,
        *,
        seed: int,
        layers: Sequence[str],
        active: Callable[[], bool],
    ) -> None:
        self.specs: list[Variability] = parse_variability(variability)
        self.model = model
        self.seed = int(seed)
        self.active = active
        modules = dict(model.named_modules())
        self.targets: dict[str, list[Variability]] = {}
        for spec in self.specs:
            if isinstance(spec, (Dropout, Poisson)):
                names = list(spec.layers) if spec.layers is not None else list(layers)
                bad = [n for n in names if n not in modules]
                if bad:
                    raise ValueError(
                        f"Recorder: `variability` {spec.kind!r} names modules {bad} that the "
                        f"model lacks; pick from e.g. {list(modules)[1:6]}."
                    )
                for n in names:
                    self.targets.setdefault(n, []).append(spec)
        self._generators: dict[str, torch.Generator] = {}
        self._handles: list[Any] = []

    def __bool__(self) -> bool:
        return bool(self.specs)

    def attrs(self) -> dict[str, Any] | None:
        """JSON-safe description stored in the recording: ``{"sources": [...], "seed": s}``."""
        if not self.specs:
            return None
        return {"sources": to_json(self.specs), "seed": self.seed}

    def resolve_input_scale(self, x: torch.Tensor) -> None:
        """Fix ``signal_std`` of input noise from ``x`` (the whole stimulus set) if unset."""
        self.specs = [
            InputNoise(snr=s.snr, signal_std=float(x.float().std()) or 1.0)
            if isinstance(s, InputNoise) and s.signal_std is None
            else s
            for s in self.specs
        ]

    # -- hooks --------------------------------------------------------------------------
    def attach(self) -> None:
        """Register the hooks (unit hooks first so the recorder sees the changed outputs)."""
        modules = dict(self.model.named_modules())
        if any(isinstance(s, (InputNoise, Jitter)) for s in self.specs):
            self._handles.append(
                self.model.register_forward_pre_hook(self._input_hook, with_kwargs=True)
            )
        for name in self.targets:
            self._handles.append(modules[name].register_forward_hook(self._unit_hook(name)))

    def detach(self) -> None:
        """Remove the hooks."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _gen(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed)
            self._generators[key] = g
        return self._generators[key]

    def _input_hook(self, module: nn.Module, args: Any, kwargs: Any) -> Any:
        if not self.active():
            return None
        if args and isinstance(args[0], torch.Tensor):
            x = args[0]
            return (self.perturb_input(x), *args[1:]), kwargs
        return None

    def perturb_input(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the input sources (jitter, then noise) to a batch ``x`` (samples first)."""
        if not x.is_floating_point():
            return x
        for spec in self.specs:
            if isinstance(spec, Jitter):
                x = _jitter(x, spec.pixels, self._gen(x.device))
        for spec in self.specs:
            if isinstance(spec, InputNoise):
                if spec.signal_std is None:
                    self.resolve_input_scale(x)
                    spec = next(s for s in self.specs if isinstance(s, InputNoise))
                std = spec.noise_std or 0.0
                noise = torch.randn(
                    x.shape, generator=self._gen(x.device), device=x.device, dtype=x.dtype
                )
                x = x + noise * std
        return x

    def _unit_hook(self, name: str) -> Any:
        specs = self.targets[name]

        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            if not self.active():
                return None
            if isinstance(output, torch.Tensor):
                return self.perturb_units(output, specs)
            if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
                return (self.perturb_units(output[0], specs), *output[1:])
            return None

        return hook

    def perturb_units(self, t: torch.Tensor, specs: Sequence[Variability]) -> torch.Tensor:
        """Apply dropout and Poisson spiking (in spec order) to a layer output."""
        gen = self._gen(t.device)
        for spec in specs:
            if isinstance(spec, Dropout):
                keep = torch.rand(t.shape, generator=gen, device=t.device) >= spec.p
                t = t * keep.to(t.dtype) / (1.0 - spec.p)
            elif isinstance(spec, Poisson):
                mean = torch.clamp(t.float(), min=0.0) * spec.gain
                counts = torch.poisson(mean, generator=gen)
                t = (counts / spec.gain).to(t.dtype)
        return t


def _jitter(x: torch.Tensor, pixels: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each sample by a random (dy, dx) in [-pixels, pixels]², edges replicated."""
    if x.ndim < 3:
        raise ValueError(
            f"Recorder: `variability` 'jitter' needs image inputs (samples, ..., height, width); "
            f"got shape {tuple(x.shape)}. Use InputNoise for non-image inputs."
        )
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    shifts = torch.randint(-pixels, pixels + 1, (b, 2), generator=gen, device=gen.device)
    shifts = shifts.cpu()
    p = pixels
    flat = x.reshape(b, -1, h, w)
    padded = torch.nn.functional.pad(flat, (p, p, p, p), mode="replicate")
    out = torch.empty_like(flat)
    for i in range(b):
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        out[i] = padded[i, :, p - dy : p - dy + h, p - dx : p - dx + w]
    return out.reshape(x.shape)
