"""Many ranks, one recording: 2 gloo processes, exactness, SIGKILL of one rank / the job, resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import netphys
from netphys.errors import RecordingError
from tests.recorder._ddp_worker import inputs, model

WORKER = Path(__file__).with_name("_ddp_worker.py")
N = 43  # odd on purpose: ranks get 22 and 21 samples, last chunks are partial
ROOT = Path(__file__).resolve().parents[2]


def run_ranks(path: Path, *, kill_at=(-1, -1), mode="w", dtype="float32", ddp="") -> list[int]:
    """Start both ranks, wait, return their exit codes."""
    Path(f"{path}.rendezvous").unlink(missing_ok=True)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(r),
                "2",
                str(path),
                str(N),
                str(kill_at[r]),
                mode,
                dtype,
                ddp,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for r in range(2)
    ]
    return [p.wait(timeout=240) for p in procs]


def expected(stimulus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent capture: layer "1" outputs and logits for the given sample indices."""
    m, x = model(), inputs(N)
    out = {}
    h = m[1].register_forward_hook(lambda mod, a, o: out.setdefault("a", o.detach().clone()))
    with torch.no_grad():
        logits = m(x[torch.as_tensor(np.array(stimulus))])
    h.remove()
    return out["a"].reshape(len(stimulus), -1).numpy(), logits.numpy()


def check_frames(path: Path, dtype: str, layer: str = "1") -> np.ndarray:
    """Every frame of the recording equals the independent capture; return its stimuli."""
    rec = netphys.open_recording(path)
    stim = rec["stimulus"].values
    assert len(np.unique(stim)) == len(stim), "a sample was recorded twice"
    np.testing.assert_array_equal(rec["rank"].values, stim % 2)  # rank r got samples r::2
    np.testing.assert_array_equal(rec["condition"].values, np.where(stim % 2, "odd", "even"))
    # global frame time: rank r's k-th frame is frame 2k + r, here the sample (across restarts)
    np.testing.assert_array_equal(rec["frame_time"].values, stim / 30.0)
    act, logits = expected(stim)
    got = rec[f"layers/{layer}/activity"].values
    want = act.astype(np.float16) if dtype == "float16" else act
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))  # bit-exact
    # logits go through a Linear whose BLAS rounding depends on the batch size (the workers
    # ran batches of 5, the capture one batch): equal to float32 precision, not bitwise
    np.testing.assert_allclose(rec["behaviour/logits"].values, logits, rtol=1e-5, atol=1e-6)
    return stim


def single_process(path: Path) -> None:
    """The same samples, model and annotations recorded by one process, in order."""
    m, x = model(), inputs(N)
    with torch.no_grad(), netphys.Recorder(m, path, layers=["1", "3"], chunk_frames=8) as rec:
        for s in range(0, N, 5):
            idx = torch.arange(s, min(s + 5, N))
            cond = ["odd" if i % 2 else "even" for i in idx.tolist()]
            rec.annotate(stimulus=idx, label=idx % 5, condition=cond)
            m(x[idx])


@pytest.mark.slow
def test_two_ranks_one_recording_exact_and_like_one_process(tmp_path):
    """A DDP-wrapped model on 2 gloo ranks records what one process records, plus `rank`."""
    path = tmp_path / "ddp.zarr"
    assert run_ranks(path, ddp="ddp") == [0, 0]
    stim = check_frames(path, "float32", layer="module.1")
    assert sorted(stim.tolist()) == list(range(N))
    ddp = netphys.open_recording(path)
    attrs = ddp.attrs
    assert (attrs["format_version"], attrs["status"], attrs["frames_valid"]) == (3, "complete", N)
    # plain xarray opens it too: padding rows are the ones with rank -1
    plain = xr.open_datatree(path, engine="zarr")
    assert int((plain["rank"].values >= 0).sum()) == N
    assert plain["layers/module.1/activity"].shape[0] == attrs["frames_committed"]
    assert plain["condition"].dtype.kind in "OUT"  # strings on disk, as in version 2
    # one process, same samples: every table field equal (dtype too) but `rank`
    single_process(tmp_path / "one.zarr")
    one = netphys.open_recording(tmp_path / "one.zarr")
    order = np.argsort(stim, kind="stable")
    fields = [k for k in one.coords if one[k].dims == ("time",)]
    assert set(fields) == {k for k in ddp.coords if ddp[k].dims == ("time",)} - {"rank"}
    for k in fields:
        np.testing.assert_array_equal(ddp[k].values[order], one[k].values, err_msg=k)
        assert ddp[k].dtype == one[k].dtype, k
        assert dict(ddp[k].attrs) == dict(one[k].attrs), k
    got = ddp["layers/module.1/activity"].values[order]
    np.testing.assert_array_equal(
        got.view(np.uint8), one["layers/1/activity"].values.view(np.uint8)
    )
    np.testing.assert_array_equal(
        ddp["layers/module.1/nodes"].values[order], one["layers/1/nodes"].values
    )
    # the Linear layer and the logits: batches differ (see check_frames), float32 precision
    for k, j in (("layers/module.3/activity", "layers/3/activity"), ("behaviour/logits",) * 2):
        np.testing.assert_allclose(ddp[k].values[order], one[j].values, rtol=1e-5, atol=1e-6)
    assert one.attrs["variability"] is None and attrs["variability"] is None
    # node weights: probed by rank 0 through the DDP module (no collectives), equal
    w_ddp = ddp["graph/module.1--module.3/weight"]
    w_one = one["graph/1--3/weight"]
    assert w_ddp.shape == w_one.shape == (1, 5, 4)
    np.testing.assert_array_equal(w_ddp.values, w_one.values)
    np.testing.assert_array_equal(ddp["graph/module.1--module.3/checkpoint"].values, [0])


@pytest.mark.slow
def test_sigkill_the_job_then_one_rank_then_resume(tmp_path):
    path = tmp_path / "ddp.zarr"
    # the whole job dies before each rank's 3rd call: one block of 8 frames each committed
    assert run_ranks(path, kill_at=(2, 2), dtype="float16") == [-9, -9]
    assert netphys.recover(path)["frames_valid"] == 16
    stim = check_frames(path, "float16")
    assert sorted(stim.tolist()) == list(range(16))
    # resumed, rank 1 alone dies before its 3rd call: rank 0 finishes, then its barrier fails
    codes = run_ranks(path, kill_at=(-1, 2), mode="a", dtype="float16")
    assert codes[1] == -9 and codes[0] != 0
    netphys.recover(path)
    stim = check_frames(path, "float16")
    assert sorted(stim[stim % 2 == 0].tolist()) == list(range(0, N, 2))
    assert sorted(stim[stim % 2 == 1].tolist()) == list(range(1, 32, 2))
    # a restarted run resumes without duplicating committed frames
    assert run_ranks(path, mode="a", dtype="float16") == [0, 0]
    stim = check_frames(path, "float16")
    assert sorted(stim.tolist()) == list(range(N))


def test_bad_rank_arguments(tmp_path):
    m = model()
    with pytest.raises(ValueError, match="0 <= `rank` < `world_size`"):
        netphys.DistributedRecorder(m, tmp_path / "a.zarr", rank=2, world_size=2)
    with pytest.raises(RecordingError, match="not initialised"):
        netphys.DistributedRecorder(m, tmp_path / "a.zarr")


def test_single_rank_without_process_group(tmp_path):
    """world_size=1 needs no process group; the store is format 3 and reads back exactly."""
    m, x = model(), inputs(N)
    path = tmp_path / "one.zarr"
    with (
        torch.no_grad(),
        netphys.DistributedRecorder(
            m, path, rank=0, world_size=1, layers=["1"], chunk_frames=8, mode="w"
        ) as rec,
    ):
        for s in range(0, N, 5):
            rec.annotate(stimulus=torch.arange(s, min(s + 5, N)))
            m(x[s : s + 5])
    out = netphys.open_recording(path)
    act, _ = expected(np.arange(N))
    np.testing.assert_array_equal(out["layers/1/activity"].values, act)
    assert out.attrs["frames_committed"] == 48 and out.attrs["frames_valid"] == N


def test_failed_first_forward_leaves_no_store_for_one_rank(tmp_path):
    """A lone rank whose first forward fails leaves the path free for the rerun."""
    m = model()
    path = tmp_path / "f.zarr"
    with (
        pytest.raises(RuntimeError, match="shapes cannot be multiplied"),
        netphys.DistributedRecorder(m, path, rank=0, world_size=1, layers=["1"]),
    ):
        m(torch.randn(2, 1, 5, 5))  # wrong input size: the Linear fails
    assert not path.exists()
    with torch.no_grad(), netphys.DistributedRecorder(m, path, rank=0, world_size=1) as rec:
        rec.annotate(stimulus=torch.arange(3))
        m(inputs(3))
    assert netphys.open_recording(path).attrs["frames_valid"] == 3


def test_two_ranks_in_one_process_draw_independent_noise_and_store_specs(tmp_path):
    """Variability: each rank's noise comes from (rng, rank); specs reach the root and ranks/."""
    x = inputs(8)
    path = tmp_path / "v.zarr"
    ms = [model(), model()]
    recs = [
        netphys.DistributedRecorder(
            m,
            path,
            rank=r,
            world_size=2,
            layers=["1"],
            chunk_frames=8,
            rng=3,
            mode="w",
            variability=netphys.variability.InputNoise(snr=4.0),
        )
        for r, m in enumerate(ms)
    ]
    with torch.no_grad(), recs[0], recs[1]:  # rank 1 closes first; rank 0 finalizes last
        for r, (m, rec) in enumerate(zip(ms, recs, strict=True)):
            rec.annotate(stimulus=torch.arange(8) * 2 + r)
            m(x)  # the same inputs on both ranks
    tree = netphys.open_recording(path)
    act = tree["layers/1/activity"].values
    ranks = tree["rank"].values
    assert sorted(ranks.tolist()) == [0] * 8 + [1] * 8
    assert not np.array_equal(act[ranks == 0], act[ranks == 1])  # independent noise
    clean, _ = expected(np.arange(8))
    assert not np.array_equal(act[ranks == 0], clean)  # noise was applied
    spec = tree.attrs["variability"]
    assert spec["sources"][0]["kind"] == "input_noise" and spec["sources"][0]["signal_std"] > 0
    seeds = [
        netphys.io._ranks_finalize.read_group_attrs(path / "ranks" / str(r))["variability"]["seed"]
        for r in range(2)
    ]
    assert seeds[0] == spec["seed"] and seeds[0] != seeds[1]


def test_legacy_version3_store_with_root_condition_codes_recovers(tmp_path):
    """Stores written before `ranks/condition` (int16 codes in the root) still recover and open."""
    import zarr

    path = tmp_path / "old.zarr"
    ms = [model(), model()]
    recs = [
        netphys.DistributedRecorder(m, path, rank=r, world_size=2, layers=["1"], chunk_frames=4)
        for r, m in enumerate(ms)
    ]
    with torch.no_grad(), recs[0], recs[1]:
        for r, (m, rec) in enumerate(zip(ms, recs, strict=True)):
            rec.annotate(stimulus=torch.arange(3) * 2 + r, condition=["even", "odd"][r])
            m(inputs(3))
    # rewrite as the old layout: each rank's local codes (both 0) in an int16 root `condition`
    root = zarr.open_group(path, mode="r+", zarr_format=3, use_consolidated=False)
    codes = np.asarray(root["ranks/condition"][:])
    del root["condition"], root["ranks/condition"]
    old = root.create_array("condition", shape=codes.shape, dtype="int16", chunks=(4,),
                            fill_value=-1, dimension_names=("time",))  # fmt: skip
    old[:] = codes
    root.attrs["status"] = "recording"
    netphys.recover(path)
    tree = netphys.open_recording(path)
    want = np.where(tree["stimulus"].values % 2, "odd", "even")
    np.testing.assert_array_equal(tree["condition"].values, want)
