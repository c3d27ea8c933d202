"""Hostile or damaged recording stores: symlinks, forged frame counts, killed writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import netphys
from netphys.errors import RecordingFormatError, UnsafeFileError


def _small(path: Path, n: int = 6) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    return netphys.record(model, torch.randn(n, 3), path, layers=["1"], progress=False)


def _edit_attrs(path: Path, **attrs) -> None:
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"].update(attrs)
    meta.pop("consolidated_metadata", None)
    (path / "zarr.json").write_text(json.dumps(meta))


def test_chunk_symlinked_out_of_the_store_is_refused(tmp_path):
    path = _small(tmp_path / "r.zarr")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"SENTINEL" * 64)
    chunk = next((path / "layers" / "1" / "activity").glob("c.*"))  # keys c.<t>.<u>
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.unlink()
    chunk.symlink_to(secret)
    with pytest.raises(UnsafeFileError, match=r"is a symlink to .*secret.bin, outside the store"):
        netphys.open_recording(path)
    with pytest.raises(UnsafeFileError, match="outside the store"):
        netphys.layer_activity(path)
    assert secret.read_bytes() == b"SENTINEL" * 64


def test_recover_does_not_follow_a_symlinked_group_into_another_store(tmp_path):
    victim = _small(tmp_path / "victim.zarr", n=9)
    before = {p: p.read_bytes() for p in victim.rglob("*") if p.is_file()}
    path = _small(tmp_path / "r.zarr", n=4)
    _edit_attrs(path, status="recording")
    group = path / "layers" / "1"
    for p in sorted(group.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    group.rmdir()
    group.symlink_to(victim / "layers" / "1", target_is_directory=True)
    with pytest.raises(UnsafeFileError, match=r"recover\(\): .*victim.zarr/layers/1, outside"):
        netphys.recover(path)
    after = {p: p.read_bytes() for p in victim.rglob("*") if p.is_file()}
    assert after == before
    assert netphys.open_recording(victim).sizes["time"] == 9


@pytest.mark.parametrize(
    ("claim", "match"),
    [
        (-5, r"frames_committed=-5; expected an int >= 0"),
        (True, r"frames_committed=True"),
        (10**10, r"claims 10000000000 committed frames but its frame table holds 6"),
    ],
)
def test_forged_frame_counts_fail_fast(tmp_path, claim, match):
    path = _small(tmp_path / "r.zarr")
    _edit_attrs(path, frames_committed=claim)
    with pytest.raises(RecordingFormatError, match=match):
        netphys.open_recording(path)
    with pytest.raises(RecordingFormatError, match=match):
        netphys.recover(path)


def test_store_claiming_1e10_frames_in_every_shape_fails_fast(tmp_path):
    path = _small(tmp_path / "r.zarr")
    _edit_attrs(path, frames_committed=10**10)
    for meta_path in path.rglob("zarr.json"):
        meta = json.loads(meta_path.read_text())
        if (
            meta.get("node_type") == "array"
            and (meta.get("dimension_names") or [None])[0] == "time"
        ):
            meta["shape"][0] = 10**10
            meta_path.write_text(json.dumps(meta))
    start = time.perf_counter()
    with pytest.raises(RecordingFormatError, match=r"no data for frame 9999999999.*forged"):
        netphys.open_recording(path)
    assert time.perf_counter() - start < 30  # a hang would allocate 80 GB of frame table


KILLED_BEFORE_SHAPE = textwrap.dedent(
    """
    import os, signal, sys, torch, netphys
    from netphys.io._recording_writer import RecordingWriter
    calls = {"n": 0}
    real = RecordingWriter._write_conditions
    def die_on_third(self):
        calls["n"] += 1
        if calls["n"] == 3:  # chunk objects of the 3rd block are on disk, shapes not grown
            os.kill(os.getpid(), signal.SIGKILL)
        real(self)
    RecordingWriter._write_conditions = die_on_third
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU()).eval()
    with netphys.Recorder(model, sys.argv[1], layers=["1"], chunk_frames=16, writer="inline") as rec:
        for k in range(10):
            rec.annotate(stimulus=torch.arange(k * 16, k * 16 + 16))
            with torch.no_grad():
                model(torch.ones(16, 6) * torch.arange(k * 16, k * 16 + 16)[:, None] / 100)
    """
)


def test_plain_xarray_after_a_kill_sees_only_committed_frames(tmp_path):
    path = tmp_path / "killed.zarr"
    script = tmp_path / "rec.py"
    script.write_text(KILLED_BEFORE_SHAPE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, str(script), str(path)], env=env, timeout=120)
    assert proc.returncode == -9
    # the third block's chunk objects are on disk beyond the stored shape
    assert (path / "layers" / "1" / "activity" / "c.2.0").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no consolidated metadata yet
        plain = xr.open_datatree(path, engine="zarr")
    assert plain.attrs["status"] == "recording"
    act = plain["layers/1"]["activity"].values
    assert act.shape == (32, 8)
    assert not np.isnan(act).any()
    np.testing.assert_array_equal(plain["stimulus"].values, np.arange(32))
    assert plain["behaviour"]["logits"].shape == (32, 8)
    assert netphys.open_recording(path).sizes["time"] == 32
