"""Leases of multi-process recordings, and heartbeats where ``flock`` does not work.

DistributedRecorder ranks share one lease, so ``recover`` and ``mode="w"`` writers are refused
while any rank lives. Where ``flock`` is unavailable (or only locks on one host, as on some
network filesystems) the heartbeat files decide: a live holder blocks, a crashed one stops
counting (at once on its host, after ``STALE_S`` elsewhere), ``force=True`` overrides.
"""

from __future__ import annotations

import json
import os
import signal
import socket
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
from netphys.io import _lease
from netphys.io._lease import Lease, lock_path

RANK = textwrap.dedent(
    """
    import sys, torch, netphys
    import netphys.io._lease as lease
    if sys.argv[3] == "noflock":
        lease._flock = lambda fd, shared: None  # a filesystem without flock
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU()).eval()
    rank = int(sys.argv[2])
    kw = dict(layers=["1"], chunk_frames=8, writer="inline", mode="w")
    rec = netphys.DistributedRecorder(model, sys.argv[1], rank=rank, world_size=2, **kw)
    with rec, torch.no_grad():
        k = 0
        while True:
            rec.annotate(stimulus=torch.arange(k * 8, k * 8 + 8) * 2 + rank)
            model(torch.randn(8, 6))
            k += 1
    """
)


def _start(tmp_path: Path, path: Path, rank: int, flock: str) -> subprocess.Popen:
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, str(script), str(path), str(rank), flock], env=env)


def _wait(cond, procs, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert all(p.poll() is None for p in procs), f"a writer died before {what}"
        assert time.time() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.05)


def _slots(path: Path, rank: int) -> int:
    try:
        meta = json.loads((path / "ranks" / str(rank) / "zarr.json").read_text())
        return len(meta["attributes"]["slots"])
    except (OSError, ValueError, KeyError):
        return 0


def _committed(path: Path) -> int:
    try:
        return int(json.loads((path / "zarr.json").read_text())["attributes"]["frames_committed"])
    except (OSError, ValueError, KeyError):
        return 0


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU()).eval()


@pytest.mark.slow
def test_live_ranks_refuse_recover_and_overwrite_until_all_are_gone(tmp_path, no_flock):
    """Two rank processes, and this one, without flock: their heartbeats alone must protect.

    (With flock, the same refusals come from the shared/exclusive locks as well: see
    ``test_rank_leases_are_shared_with_each_other_but_not_with_recover`` and the DDP tests.)
    """
    path = tmp_path / "ddp.zarr"
    ranks = [_start(tmp_path, path, 0, "noflock"), _start(tmp_path, path, 1, "noflock")]
    try:
        _wait(lambda: _slots(path, 0) >= 2 and _slots(path, 1) >= 2, ranks, "commits")
        pids = {str(p.pid) for p in ranks}
        with pytest.raises(RecordingError, match=r"recover\(\): .*being written by process") as e:
            netphys.recover(path)
        assert any(f"process {pid} " in str(e.value) for pid in pids)
        with pytest.raises(RecordingError, match="being written by process"):
            netphys.record(_model(), torch.randn(4, 6), path, layers=["1"], mode="w",
                           progress=False)  # fmt: skip
        with pytest.raises(RecordingError, match=r"DistributedRecorder\(\): .*being written"):
            netphys.DistributedRecorder(_model(), path, rank=0, world_size=2, layers=["1"],
                                        mode="w").open()  # fmt: skip
        before = _slots(path, 0), _slots(path, 1)
        _wait(
            lambda: _slots(path, 0) > before[0] and _slots(path, 1) > before[1],
            ranks,
            "progress after the refusals",
        )  # fmt: skip: the ranks were not disturbed
        _kill(ranks[1])  # one rank gone: the other still holds the lease
        with pytest.raises(RecordingError, match=rf"process {ranks[0].pid} "):
            netphys.recover(path)
    finally:
        for p in ranks:
            _kill(p)
    assert lock_path(path).exists()  # the killed ranks left their lock file behind ...
    report = netphys.recover(path)  # ... which does not block: their pids are dead
    tree = netphys.open_recording(path)
    assert tree.sizes["time"] == report["frames_valid"] > 0
    assert not np.isnan(netphys.layer_activity(tree).values).any()
    assert set(np.unique(tree["rank"].values)) == {0, 1}
    beats = lock_path(path).with_name(lock_path(path).name + ".d")
    assert not list(beats.glob("*.json"))  # no live holder left (stale entries cleaned up)
    _entry(path, host="other-node", pid=9, age=0.5)  # live-looking, on another host
    with pytest.raises(RecordingError, match=r"other-node.*recover --force"):
        netphys.recover(path)
    assert netphys.recover(path, force=True)["status_before"] == "recovered"


def test_rank_leases_are_shared_with_each_other_but_not_with_recover(tmp_path):
    store = tmp_path / "r.zarr"
    a = Lease.acquire(store, func="rank0", shared=True)
    b = Lease.acquire(store, func="rank1", shared=True)
    try:
        with pytest.raises(
            RecordingError, match=rf"recover\(\): .*process {os.getpid()} .*and 1 other"
        ):
            Lease.acquire(store, func="recover", what="recover")
        a.release()
        with pytest.raises(RecordingError, match="refusing to recover"):
            Lease.acquire(store, func="recover", what="recover")
    finally:
        b.release()
    Lease.acquire(store, func="recover").release()  # all ranks gone
    assert not lock_path(store).exists()


@pytest.fixture
def no_flock(monkeypatch):
    """Pretend the filesystem has no flock (ENOLCK): only heartbeats tell live from dead."""
    monkeypatch.setattr(_lease, "_flock", lambda fd, shared: None)


def _entry(store: Path, *, host: str, pid: int, age: float, mode: str = "exclusive") -> Path:
    folder = lock_path(store).with_name(lock_path(store).name + ".d")
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / f"{host}-{pid}-test.json"
    beat = {
        "pid": pid,
        "host": host,
        "started": "then",
        "mode": mode,
        "heartbeat": time.time() - age,
    }
    f.write_text(json.dumps(beat))
    return f


def test_without_flock_a_live_heartbeat_blocks_and_a_dead_one_does_not(tmp_path, no_flock):
    store = tmp_path / "r.zarr"
    lease = Lease.acquire(store, func="Recorder")
    with pytest.raises(RecordingError, match=rf"process {os.getpid()} on host"):
        Lease.acquire(store, func="recover", what="recover")
    lease.release()
    # a crashed writer on this host (its pid is gone) left its lock file and entry behind
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(store).write_text("{}")
    stale = _entry(store, host=socket.gethostname(), pid=dead.pid, age=0.0)
    Lease.acquire(store, func="recover").release()
    assert not stale.exists()  # cleaned up on the way
    # a writer on another host: live while its heartbeat is fresh, crashed once it is stale
    _entry(store, host="other-node", pid=4242, age=1.0)
    with pytest.raises(RecordingError, match=r"process 4242 on host 'other-node'"):
        Lease.acquire(store, func="recover", what="recover")
    _entry(store, host="other-node", pid=4242, age=_lease.STALE_S + 1)
    Lease.acquire(store, func="recover").release()


def test_heartbeat_catches_a_holder_that_flock_does_not_see(tmp_path, monkeypatch):
    # some network filesystems grant flock on every host: the heartbeat still refuses
    monkeypatch.setattr(_lease, "_flock", lambda fd, shared: True)
    store = tmp_path / "r.zarr"
    _entry(store, host="other-node", pid=7, age=2.0)
    with pytest.raises(RecordingError, match="process 7 on host 'other-node'"):
        Lease.acquire(store, func="Recorder")
    _entry(store, host="other-node", pid=7, age=2.0, mode="shared")  # a rank: ranks share
    Lease.acquire(store, func="DistributedRecorder", shared=True).release()


def test_heartbeat_is_refreshed_while_the_holder_lives(tmp_path, monkeypatch):
    monkeypatch.setattr(_lease, "HEARTBEAT_S", 0.05)
    lease = Lease.acquire(tmp_path / "r.zarr", func="Recorder")
    try:
        first = json.loads(lease._entry.read_text())["heartbeat"]
        deadline = time.time() + 10
        while json.loads(lease._entry.read_text())["heartbeat"] == first:
            assert time.time() < deadline, "the heartbeat never advanced"
            time.sleep(0.02)
        assert lease.info()["pid"] == os.getpid()
    finally:
        lease.release()
    assert not lease._entry.exists()
