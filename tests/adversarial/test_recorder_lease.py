"""A live writer is detectable: recover and second writers are refused; a crash frees the path."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import netphys
from netphys.errors import RecordingError
from netphys.io._lease import Lease

WRITER = textwrap.dedent(
    """
    import sys, torch, netphys
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU()).eval()
    with netphys.Recorder(model, sys.argv[1], layers=["1"], chunk_frames=16) as rec:
        k = 0
        while True:
            rec.annotate(stimulus=torch.arange(k * 8, k * 8 + 8))
            with torch.no_grad():
                model(torch.randn(8, 6))
            k += 1
    """
)


def _committed(path: Path) -> int:
    try:
        return int(json.loads((path / "zarr.json").read_text())["attributes"]["frames_committed"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture
def live_writer(tmp_path):
    path = tmp_path / "live.zarr"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(script), str(path)], env=env)
    deadline = time.time() + 120
    try:
        while _committed(path) < 32:
            assert proc.poll() is None, "writer died on its own"
            assert time.time() < deadline, "writer made no progress"
            time.sleep(0.02)
        yield path, proc
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_live_writer_refuses_recover_and_second_writers_until_it_dies(live_writer):
    path, proc = live_writer
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU()).eval()
    with pytest.raises(
        RecordingError, match=rf"recover\(\): .*being written by process {proc.pid}"
    ):
        netphys.recover(path)
    with pytest.raises(RecordingError, match=r"being written by process .*two writers"):
        netphys.record(model, torch.randn(4, 6), path, layers=["1"], mode="w", progress=False)
    with pytest.raises(RecordingError, match="being written"):
        netphys.record(model, torch.randn(4, 6), path, layers=["1"], mode="a", progress=False)
    assert proc.poll() is None  # the writer was not disturbed
    before = _committed(path)
    time.sleep(0.3)
    assert _committed(path) >= before
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the kernel released the dead writer's lock: recover and append work now
    report = netphys.recover(path)
    n = report["frames_committed"]
    tree = netphys.open_recording(path)
    np.testing.assert_array_equal(tree["stimulus"].values, np.arange(n))
    assert not np.isnan(netphys.layer_activity(tree).values).any()
    netphys.record(model, torch.randn(4, 6), path, layers=["1"], mode="a", progress=False)
    assert netphys.open_recording(path).sizes["time"] == n + 4


def test_recover_force_overrides_a_held_lease(tmp_path):
    path = netphys.record(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()),
                          torch.randn(3, 2), tmp_path / "r.zarr", progress=False)  # fmt: skip
    lease = Lease.acquire(path, func="test")
    try:
        with pytest.raises(RecordingError, match=f"process {os.getpid()}"):
            netphys.recover(path)
        assert netphys.recover(path, force=True)["frames_committed"] == 3
    finally:
        lease.release()
    with pytest.raises(TypeError, match="`force` must be True or False"):
        netphys.recover(path, force="yes")


def test_store_deleted_under_a_running_recorder_is_reported(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU()).eval()
    path = tmp_path / "r.zarr"
    with pytest.raises(RecordingError, match=r"deleted or replaced while it was being written"):
        with netphys.Recorder(model, path, layers=["1"], chunk_frames=4, writer="inline") as rec:
            with torch.no_grad():
                model(torch.randn(4, 6))  # one chunk, held while the arrays are created
                rec._store.join_prepared()  # created (deletion during creation: next test)
                shutil.rmtree(path)
                for _ in range(3):
                    model(torch.randn(4, 6))
    assert not path.exists()  # nothing half-recreated
    for m in model.modules():
        assert not m._forward_hooks


def test_two_writers_in_one_process_are_refused(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU()).eval()
    path = tmp_path / "r.zarr"
    with netphys.Recorder(model, path, layers=["1"]):
        with pytest.raises(RecordingError, match="being written"):
            netphys.Recorder(model, path, layers=["1"], mode="w").open()
        with torch.no_grad():
            model(torch.randn(3, 6))
    assert netphys.open_recording(path).sizes["time"] == 3


def test_store_deleted_while_its_arrays_are_created_is_not_recreated(tmp_path, monkeypatch):
    """The background creation meets a deleted store: it says so and writes nothing back."""
    import netphys.io._nodes as nodes

    real = nodes.write_file
    calls = {"n": 0}

    def delete_then_write(path, data, **kw):
        calls["n"] += "layers" in Path(path).parts  # the layer's group and arrays
        if calls["n"] == 3:  # midway through the creation
            shutil.rmtree(tmp_path / "r.zarr")
        return real(path, data, **kw)

    monkeypatch.setattr(nodes, "write_file", delete_then_write)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU()).eval()
    path = tmp_path / "r.zarr"
    with pytest.raises(RecordingError, match=r"deleted or replaced while it was being written"):
        with netphys.Recorder(model, path, layers=["1"], chunk_frames=4, writer="inline"):
            with torch.no_grad():
                model(torch.randn(4, 6))
                model(torch.randn(4, 6))
    assert calls["n"] == 3  # the creation stopped at the deletion
    assert not path.exists()  # nothing recreated (no half store without its root)
