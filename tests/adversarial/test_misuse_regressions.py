"""Instances of issue-11 classes found open in paths added later (re-run of the issue).

- ``DistributedRecorder(mode="w")`` deleted any folder (class 7); ``mode="a"`` on a folder or
  file that is not a recording failed with raw zarr/OS errors (class 10), for both recorders.
- A suite2p ``F.npy`` whose header claims 10**10 frames (a sparse file: nothing on disk) made
  the lazy reader allocate the frame times (80 GB) (class 3).
- ``netphys units --inputs`` loaded a ``.npy`` without checking its header (class 3).
- A store deleted under a running ``DistributedRecorder`` rank was half recreated (class 4).
- ``open_dataset`` on a FIFO, or a store holding one, blocked forever (class 3).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import netphys
from netphys.cli import main
from netphys.errors import ResourceLimitError
from netphys.io import read_suite2p


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()).eval()


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).replace(" ", "")
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()


@pytest.fixture
def precious(tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    (tmp_path / "notes.txt").write_text("notes")
    return folder


@pytest.mark.parametrize("mode", ["w", "a"])
def test_distributed_recorder_never_deletes_or_appends_to_other_data(precious, mode):
    for path, kind in ((precious, "a folder"), (precious.parent / "notes.txt", "a file")):
        with pytest.raises(FileExistsError, match=rf"`path` .* is {kind} that is not a netphys "
                           rf"recording; `mode='{mode}'` only"):  # fmt: skip
            netphys.DistributedRecorder(_model(), path, rank=0, world_size=1, layers=["1"],
                                        mode=mode).open()  # fmt: skip
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert (precious.parent / "notes.txt").read_text() == "notes"
    assert sorted(p.name for p in precious.parent.iterdir()) == ["notes.txt", "thesis"]


def test_recorder_append_to_a_non_recording_is_refused_untouched(precious):
    with pytest.raises(FileExistsError, match=r"Recorder: .*thesis' exists and is a folder .*"
                       r"`mode='a'` only appends to recordings"):  # fmt: skip
        netphys.record(_model(), torch.randn(3, 2), precious, mode="a", progress=False)
    empty = precious.parent / "empty"
    empty.mkdir()
    with pytest.raises(FileExistsError, match="not a netphys recording"):
        netphys.record(_model(), torch.randn(3, 2), empty, mode="a", progress=False)
    assert [p.name for p in precious.iterdir()] == ["thesis.tex"] and not any(empty.iterdir())
    # a recording still takes appends
    rec = netphys.record(_model(), torch.randn(3, 2), precious.parent / "r.zarr", progress=False)
    netphys.record(_model(), torch.randn(2, 2), rec, mode="a", progress=False)
    assert netphys.open_recording(rec).sizes["time"] == 5


def test_suite2p_header_claiming_ten_billion_frames_is_refused_before_allocating(tmp_path):
    plane = tmp_path / "plane0"
    plane.mkdir()
    np.save(plane / "ops.npy", {"fs": 10.0})
    with open(plane / "F.npy", "wb") as f:  # 40 GB apparent size, nothing written
        f.write(_npy_header("<f4", (1, 10**10)))
        f.truncate(f.tell() + 4 * 10**10)
    with pytest.raises(ResourceLimitError, match=r"frame times of 10000000000 frames .*max_bytes"):
        read_suite2p(tmp_path)
    np.save(plane / "F.npy", np.ones((1, 50), np.float32))  # a real file of the same layout
    assert read_suite2p(tmp_path).sizes["time"] == 50


def test_units_inputs_file_is_size_checked_before_loading(tmp_path, capsys):
    bomb = tmp_path / "inputs.npy"
    bomb.write_bytes(_npy_header("<f8", (10**6, 10**6)))  # 8 TB declared, 128 bytes stored
    rec = netphys.record(_model(), torch.randn(3, 2), tmp_path / "r.zarr", progress=False)
    code = main(["units", str(rec), "--layer", "1", "--unit", "0", "--inputs", str(bomb)])
    err = capsys.readouterr().err
    assert code != 0
    assert "netphys units: error: load_npy(): " in err
    assert "inputs.npy: the array (shape (1000000, 1000000), float64) need 7.28 TiB" in err


def test_store_deleted_under_a_running_rank_is_reported_not_recreated(tmp_path):
    import shutil

    from netphys.errors import RecordingError

    path = tmp_path / "ddp.zarr"
    m = _model()
    with pytest.raises(RecordingError, match=r"deleted or replaced while it was being written"):
        with (
            torch.no_grad(),
            netphys.DistributedRecorder(
                m,
                path,
                rank=0,
                world_size=1,
                mode="w",
                layers=["1"],
                chunk_frames=4,
                writer="inline",
            ),
        ):
            m(torch.randn(4, 2))  # one block committed
            shutil.rmtree(path)
            for _ in range(3):
                m(torch.randn(4, 2))
    assert not path.exists()  # no half store (chunk files without metadata) recreated
    assert not list(tmp_path.glob(".ddp.zarr.netphys-lock*"))  # the lease was given back
    for mod in m.modules():
        assert not mod._forward_hooks


def test_fifos_are_refused_instead_of_blocking_forever(tmp_path):
    from tests.adversarial._readers_isolated import run_isolated

    pipe = tmp_path / "pipe.nwb"
    os.mkfifo(pipe)  # opening it for reading blocks until a writer comes: none will
    store = netphys.record(_model(), torch.randn(3, 2), tmp_path / "r.zarr", progress=False)
    chunk = next(p for p in (store / "layers").rglob("c/*") if p.is_file())
    chunk.unlink()
    os.mkfifo(chunk)
    out = run_isolated(
        f"""
        import netphys
        from netphys.errors import RecordingFormatError, UnsafeFileError
        for call in (lambda: netphys.io.open_dataset({str(pipe)!r}),
                     lambda: netphys.open_recording({str(store)!r})):
            try:
                call()
            except (RecordingFormatError, UnsafeFileError) as exc:
                print("refused:", exc)
        """,
        timeout=90,
    )
    assert out.count("refused:") == 2
    assert "pipe.nwb is neither a regular file nor a folder (a FIFO" in out
    assert f"{chunk} is not a regular file or folder (a FIFO, socket or device)" in out
