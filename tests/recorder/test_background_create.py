"""Arrays are created in a background thread at the first forward; failures are not lost."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

import netphys
import netphys.io._recording_define as define
from netphys.errors import RecordingError
from tests.recorder.models import CNN


def _record(path, x, **kw):
    rec = netphys.Recorder(CNN().eval(), path, layers=["act1", "act2"], store_weights=False, **kw)
    with torch.no_grad(), rec:
        for s in range(0, len(x), 8):
            rec.model(x[s : s + 8])


def test_creation_runs_in_its_own_thread_and_the_store_is_what_zarr_writes(tmp_path):
    threads: list[str] = []
    real = define.Definitions.materialize

    def spy(self):
        if self._pending_layers:
            threads.append(threading.current_thread().name)
        return real(self)

    define.Definitions.materialize = spy
    try:
        _record(tmp_path / "a.zarr", torch.randn(40, 1, 8, 8), chunk_frames=16)
    finally:
        define.Definitions.materialize = real
    assert threads == ["netphys-create"]
    root = zarr.open_group(tmp_path / "a.zarr", mode="r")
    assert root["session"].chunks == (16,)  # the frame table re-chunked to the blocks
    assert root["layers/act1/activity"].shape[0] == 40
    assert root["layers"].attrs.asdict() == {}  # the existing group was not overwritten
    assert not list((tmp_path / "a.zarr").rglob("*.partial"))
    tree = xr.open_datatree(tmp_path / "a.zarr", engine="zarr")
    assert tree["layers/act2"]["activity"].shape == (40, 6 * 8 * 8)
    np.testing.assert_array_equal(tree["layers/act1"]["unit_id"].values, np.arange(4 * 8 * 8))


@pytest.mark.parametrize("frames", [40, 5])  # the error reaches a write / only the close
def test_a_failed_creation_is_raised_and_leaves_the_path_free(tmp_path, monkeypatch, frames):
    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(define, "layer_nodes", broken)
    path = tmp_path / "f.zarr"
    with pytest.raises(RecordingError, match=r"No space left on device.*free disk space"):
        _record(path, torch.randn(frames, 1, 8, 8), chunk_frames=16)
    assert not path.exists()  # no frame was committed: nothing left in the way
    monkeypatch.undo()
    _record(path, torch.randn(frames, 1, 8, 8), chunk_frames=16)  # the lease was released
    assert netphys.open_recording(path)["layers/act1"]["activity"].shape[0] == frames


@pytest.mark.parametrize("batch", [16, 40])  # a block per batch / a batch over three blocks
def test_inline_writer_holds_blocks_back_while_arrays_are_created(tmp_path, batch):
    events: list[str] = []
    real = define.Definitions.materialize

    def slow(self):
        if self._pending_layers:
            time.sleep(0.3)
            events.append("created")
        return real(self)

    model = CNN().eval()
    seen: list[torch.Tensor] = []
    model.act1.register_forward_hook(lambda m, a, o: seen.append(o.clone()))
    model.register_forward_pre_hook(lambda m, a: events.append("forward"))
    x = torch.randn(3 * batch, 1, 8, 8)
    define.Definitions.materialize = slow
    try:
        rec = netphys.Recorder(model, tmp_path / "h.zarr", layers=["act1"], chunk_frames=16,
                               writer="inline", store_weights=False)  # fmt: skip
        with torch.no_grad(), rec:
            for s in range(0, len(x), batch):
                model(x[s : s + batch])
    finally:
        define.Definitions.materialize = real
    # no forward call waited for the arrays: all blocks but one of the pool's were held back
    # (40: a batch over three blocks needs blocks, so the held ones are written first)
    if batch == 16:
        assert events == ["forward", "forward", "forward", "created"]
    else:
        assert events[:2] == ["forward", "forward"]
    got = netphys.open_recording(tmp_path / "h.zarr")["layers/act1"]["activity"].values
    np.testing.assert_array_equal(got, torch.cat(seen).reshape(len(x), -1).numpy())
