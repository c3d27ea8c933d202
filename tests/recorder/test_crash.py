"""SIGKILL at any moment: the store opens, committed frames are intact, recover() repairs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import netphys
from netphys.io import _chunks

SCRIPT = textwrap.dedent(
    """
    import sys, torch, netphys
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)).eval()
    def inputs(ids):
        return torch.sin(ids[:, None].double() * torch.arange(1, 7).double() / 7.0).float()
    with netphys.Recorder(model, sys.argv[1], layers=["0", "1"], chunk_frames=16) as rec:
        rec.session(0)
        k = 0
        while True:
            ids = torch.arange(k * 8, k * 8 + 8)
            rec.annotate(stimulus=ids)
            with torch.no_grad():
                model(inputs(ids))
            k += 1
    """
)


def _committed(path: Path) -> int:
    try:
        return int(json.loads((path / "zarr.json").read_text())["attributes"]["frames_committed"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.parametrize("wait_frames", [64, 400])
def test_sigkill_keeps_committed_frames(tmp_path, wait_frames):
    path = tmp_path / "crash.zarr"
    script = tmp_path / "rec.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(script), str(path)], env=env)
    try:
        deadline = time.time() + 120
        while _committed(path) < wait_frames:
            assert proc.poll() is None, "recording process died on its own"
            assert time.time() < deadline, "recording made no progress"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    tree = netphys.open_recording(path)  # opens without repair, clipped to frames_committed
    n = tree.sizes["time"]
    assert n >= wait_frames and n % 16 == 0  # whole chunks only
    assert tree.attrs["status"] == "recording"
    ids = tree["stimulus"].values
    np.testing.assert_array_equal(ids, np.arange(n))
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)
    ).eval()
    x = torch.sin(
        torch.as_tensor(np.array(ids))[:, None].double() * torch.arange(1, 7).double() / 7.0
    ).float()
    with torch.no_grad():
        pre = model[0](x)
    np.testing.assert_array_equal(netphys.layer_activity(tree, "0").values, pre.numpy())
    np.testing.assert_array_equal(netphys.layer_activity(tree, "1").values, torch.relu(pre).numpy())
    leftovers = [*path.rglob("*.partial"), *path.rglob(f"*{_chunks.SPARE_SUFFIX}")]
    report = netphys.recover(path)
    assert report["frames_committed"] == n
    assert report["partial_files_removed"] == len(leftovers)
    assert not list(path.rglob("*.partial"))
    assert not list(path.rglob(f"*{_chunks.SPARE_SUFFIX}"))  # the writer's spare documents
    plain = xr.open_datatree(path, engine="zarr")
    assert plain.attrs["status"] == "recovered"
    assert plain["layers/1"]["activity"].shape == (n, 32)
    assert plain["behaviour"]["logits"].shape == (n, 3)
    # a recovered recording can be appended to
    with netphys.Recorder(model, path, layers=["0", "1"], mode="a") as rec:
        rec.session(1)
        with torch.no_grad():
            model(x[:5])
    assert netphys.open_recording(path).sizes["time"] == n + 5


def test_append_refuses_unrecovered(tmp_path):
    path = tmp_path / "r.zarr"
    netphys.record(
        torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()),
        torch.randn(3, 2),
        path,
        progress=False,
    )
    import zarr

    zarr.open_group(path, mode="r+").attrs["status"] = "recording"
    from netphys.errors import RecordingError

    with pytest.raises(RecordingError, match="recover"):
        netphys.record(
            torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()),
            torch.randn(3, 2),
            path,
            mode="a",
            progress=False,
        )
