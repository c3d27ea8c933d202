"""The Recorder's forward hooks: one forward call becomes frames, or nothing if it fails.

A root pre-hook opens a forward call, the layer hooks stage each recorded output, the root
post-hook commits the batch, and a root hook with ``always_call=True`` closes the call on every
exit path (exceptions included): a failed call gives its host blocks back and records nothing,
so the next call starts clean.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from netphys.errors import RecordingError
from netphys.recorder._layers import extract_tensor, site_of
from netphys.recorder._stage import Staging
from netphys.recorder._suspend import preserved_state, suspended

__all__ = ["Hooks"]

logger = logging.getLogger(__name__)

_TOP = "top"


class Hooks(Staging):
    """Forward hooks of the Recorder (mixin; state is set up by ``Recorder._reset_state``)."""

    store_weights: bool
    _auto_layers: bool
    _paused: int
    _stack: list[str | None]
    _post_done: bool
    _calls: dict[str, int]
    _batch: int | None
    _ran: set[str]
    _weights_done: set[int]
    _sites: dict[str, dict[int, str] | str | None]

    # -- hooks -------------------------------------------------------------------------
    def _root_pre(self, module: nn.Module, args: Any) -> None:
        skip = self._paused or suspended() or bool(self._stack)
        if not skip and self._writer is not None:
            self._writer.raise_if_failed()
        self._stack.append(None if skip else _TOP)
        if not skip:
            self._calls = {}
            self._batch = None
            self._ran = set()
            self._post_done = False
            self._training = bool(self._probe_model()[0].training)  # DDP: its module's

    def _recording(self) -> bool:
        return bool(self._stack) and self._stack[-1] == _TOP and not suspended()

    def _site_name(self, module: str, k: int) -> str | None:
        """Layer name of the k-th call of ``module`` in this forward (None: not recorded)."""
        sites = self._sites[module]
        if sites == "auto":
            return f"{module}:{k}"  # renamed at setup if the module runs once
        if sites is None:
            if k > 0:
                raise RecordingError(
                    f"Recorder: module {module!r} ran {k + 1} times in one forward call (a "
                    "module reused inside the model). Record each call as its own layer, "
                    f"`layers=['{module}:0', '{module}:1', ...]`, give each use its own module "
                    "instance, or record the module that contains them."
                )
            return module
        assert isinstance(sites, dict)
        if self._auto_layers and self._layouts and k >= len(sites):
            raise RecordingError(
                f"Recorder: module {module!r} ran {k + 1} times in this forward call but "
                f"{len(sites)} times in the first one; its calls are recorded as separate "
                "layers, so every forward must run it the same number of times."
            )
        return sites.get(k)

    def _layer_hook(self, module: str) -> Any:
        def hook(mod: nn.Module, args: Any, output: Any) -> None:
            if not self._recording():
                return
            k = self._calls.get(module, 0)
            self._calls[module] = k + 1
            name = self._site_name(module, k)
            if name is None:
                return
            t = self._checked_output(name, output)
            if t.shape[0] == 0:
                return  # an empty batch: nothing to record
            if not self._layouts:
                self._first[name] = t.clone()
            else:
                self._stage_layer(name, t)
            self._ran.add(name)

        return hook

    def _checked_output(self, name: str, output: Any) -> torch.Tensor:
        t = extract_tensor(output, name).detach()
        if t.ndim < 2:
            raise RecordingError(
                f"Recorder: module {name!r} output has shape {tuple(t.shape)}; expected a "
                "batch dimension first and at least one feature dimension."
            )
        if not t.is_floating_point():
            raise RecordingError(
                f"Recorder: module {name!r} output has dtype {t.dtype}; only floating-point "
                "activity can be recorded."
            )
        b = int(t.shape[0])
        if self._batch is None:
            self._batch = b
        elif b != self._batch:
            raise RecordingError(
                f"Recorder: module {name!r} output has batch size {b} but earlier layers had "
                f"{self._batch}; outputs must be batch-first (e.g. batch_first=True)."
            )
        return t

    def _root_post(self, module: nn.Module, args: Any, output: Any) -> None:
        if not self._recording():
            return
        if self._batch == 0:
            self._post_done = True  # an empty batch: no frame
            return
        if not self._layouts:
            self._fix_sites()
        missing = [n for n in self.layers if n not in self._ran]
        if missing:
            raise RecordingError(
                f"Recorder: layers {missing} did not run in this forward call; record only "
                "modules that run on every call (or use `rec.paused()` for other calls)."
            )
        b = int(self._batch or 0)
        if self.store_weights and self._session_not_weighed():
            self._store_weights(args)
        if not self._layouts:
            self._setup(output)
            for name in self.layers:
                self._stage_layer(name, self._first.pop(name))
        self._stage_rest(b, output)
        self._post_done = True

    def _root_end(self, module: nn.Module, args: Any, output: Any) -> None:
        """End a forward call (always called, exceptions too), dropping a failed one's rows."""
        if not self._stack:
            return
        top = self._stack.pop() == _TOP
        if not top:
            return
        if not self._post_done:
            if self._segments and self._pool is not None:
                self._release_segments()
            self._segments = []
            if not self._layouts:
                self._first.clear()
        self._pending = {}
        self._post_done = False

    def _fix_sites(self) -> None:
        """First forward: a default module that ran k > 1 times becomes k layers."""
        if not self._auto_layers:
            return
        layers: list[str] = []
        for module in dict.fromkeys(site_of(n)[0] for n in self.layers):
            count = self._calls.get(module, 0)
            if count <= 1:
                if f"{module}:0" in self._first:
                    self._first[module] = self._first.pop(f"{module}:0")
                    self._ran.discard(f"{module}:0")
                    self._ran.add(module)
                self._sites[module] = None
                layers.append(module)
            else:
                self._sites[module] = {k: f"{module}:{k}" for k in range(count)}
                layers += [f"{module}:{k}" for k in range(count)]
        self.layers = layers

    # -- graph weights -----------------------------------------------------------------
    def _session_not_weighed(self) -> bool:
        if not self._session_started:
            self._session = max(self._session, 0)
            self._session_started = True
        return self._session not in self._weights_done

    def _probe_model(self) -> tuple[nn.Module, str]:
        """Return the module the weight probe runs and the prefix of its names in ``layers``."""
        return self.model, ""

    def _store_weights(self, args: Any) -> None:
        """Store the static node-to-node weights of this session (probe run without a trace).

        The probe runs in eval mode with every Recorder suspended, and the model's buffers
        (BatchNorm statistics), train/eval flags and random generators are restored after it.
        A reused session id whose stored weights differ raises (before any frame is staged).
        """
        from netphys.recorder.graph import node_weights

        assert self._store is not None
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor):
            self._weights_done.add(self._session)
            return
        weights = None
        model, prefix = self._probe_model()
        layers = [name.removeprefix(prefix) for name in self.layers]
        try:
            with preserved_state(model), torch.no_grad():
                model.eval()
                found = node_weights(model, layers, x[:2])
            weights = {(prefix + pre, prefix + post): w for (pre, post), w in found.items()}
        except Exception:
            logger.info("node weights not stored for session %d", self._session, exc_info=True)
        if weights:
            self._store.write_graph(self._session, weights)
        self._weights_done.add(self._session)
