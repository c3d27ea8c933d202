"""Symlinks inside a suite2p folder that lead out of it: refused unless ``trusted=True``.

Each case plants a sentinel file outside the folder (values 7.0) and links one of the files
(or the plane folder) to it; the reader must refuse, naming the link, its target and the
opt-in, and must never return the sentinel's values unless the user opted in.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from netphys.errors import UnsafeFileError
from netphys.io import open_dataset, read_suite2p
from netphys.io._guard import check_store_confined

SENTINEL = 7.0


@pytest.fixture
def secret(tmp_path):
    """A suite2p-looking plane outside every folder under test, filled with the sentinel."""
    out = tmp_path / "elsewhere"
    out.mkdir()
    np.save(out / "F.npy", np.full((2, 10), SENTINEL, np.float32))
    np.save(out / "iscell.npy", np.full((2, 2), 1.0))
    np.save(out / "ops.npy", {"fs": 99.0})
    np.save(out / "stat.npy", np.array([{"med": [7, 7]}] * 2, dtype=object), allow_pickle=True)
    return out


def _plane(root):
    plane = root / "suite2p" / "plane0"
    plane.mkdir(parents=True)
    np.save(plane / "F.npy", np.zeros((2, 10), np.float32))
    np.save(plane / "ops.npy", {"fs": 10.0})
    return plane


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("F.npy", "F.npy"),
        ("Fneu.npy", "F.npy"),
        ("spks.npy", "F.npy"),
        ("stat.npy", "stat.npy"),
        ("ops.npy", "ops.npy"),
        ("iscell.npy", "iscell.npy"),
    ],
)
def test_file_symlinked_out_of_the_folder_is_refused(tmp_path, secret, name, target):
    plane = _plane(tmp_path / "rec")
    (plane / name).unlink(missing_ok=True)
    os.symlink(secret / target, plane / name)
    for reader in (read_suite2p, open_dataset):
        with pytest.raises(
            UnsafeFileError,
            match=rf"read_suite2p\(\): .*{name} is a symlink to "
            rf".*elsewhere.*outside the suite2p folder .*trusted=True",
        ):
            reader(tmp_path / "rec")
    ds = read_suite2p(tmp_path / "rec", trusted=True)  # the explicit opt-in reads it
    seen = {
        "F.npy": lambda: ds.F.max(),
        "Fneu.npy": lambda: ds.neuropil.max(),
        "spks.npy": lambda: ds.activity.max(),
        "stat.npy": lambda: ds.pos_x.max(),
        "ops.npy": lambda: ds.attrs["frame_rate"],
        "iscell.npy": lambda: ds.cell_prob.min(),
    }[name]()
    assert float(seen) == {"ops.npy": 99.0, "iscell.npy": 1.0}.get(name, SENTINEL)


def test_plane_folder_or_suite2p_folder_symlinked_out_is_refused(tmp_path, secret):
    (tmp_path / "a" / "suite2p").mkdir(parents=True)
    os.symlink(secret, tmp_path / "a" / "suite2p" / "plane0")
    with pytest.raises(UnsafeFileError, match=r"plane0 is a symlink to .*elsewhere"):
        read_suite2p(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "real" / "plane0").mkdir(parents=True)
    os.symlink(secret / "F.npy", tmp_path / "real" / "plane0" / "F.npy")
    os.symlink(tmp_path / "real", tmp_path / "b" / "suite2p")
    with pytest.raises(UnsafeFileError, match=r"plane0 is reached through a symlink, at .*real"):
        read_suite2p(tmp_path / "b")
    assert float(read_suite2p(tmp_path / "a", trusted=True).F.max()) == SENTINEL


def test_links_the_user_named_or_that_stay_inside_are_read(tmp_path):
    plane = _plane(tmp_path / "rec")
    np.save(plane.parent / "spks_real.npy", np.ones((2, 10), np.float32))
    os.symlink(plane.parent / "spks_real.npy", plane / "spks.npy")  # inside the folder
    os.symlink(tmp_path / "rec", tmp_path / "shortcut")  # the folder the user passes
    ds = read_suite2p(tmp_path / "shortcut")
    assert float(ds.activity.max()) == 1.0 and float(ds.F.max()) == 0.0
    # a dangling or outside link that the reader never opens does not block the read
    os.symlink("/etc/hostname", plane / "data.bin")
    assert read_suite2p(tmp_path / "rec").sizes["unit"] == 2


def test_confinement_check_of_named_files_resolves_every_component(tmp_path):
    (tmp_path / "root").mkdir()
    os.symlink("/etc", tmp_path / "root" / "etc")
    with pytest.raises(UnsafeFileError, match=r"hostname is reached through a symlink, at /etc"):
        check_store_confined(
            tmp_path / "root",
            files=[tmp_path / "root" / "etc" / "hostname"],
            func="f",
            what="folder",
        )
    check_store_confined(tmp_path / "root", files=[tmp_path / "root" / "absent.npy"], func="f")
