"""Forged pickles (stat.npy, ops.npy, .npz members): refused with a clear error, never a crash.

Each case asserts: no crash (crash-prone ones run in a fresh interpreter), nothing built from
raw memory, no silent change of what a genuine file holds.
"""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest

from netphys.errors import RecordingFormatError, ResourceLimitError, UnsafeFileError
from netphys.io import read_npz, read_suite2p
from netphys.io._safe_pickle import load_npy, safe_loads
from tests.adversarial._readers_isolated import run_isolated

# numpy.ndarray((1,), numpy.dtype("O"), b"A" * 8): an object array around a fake pointer, as in
# the forged stat.npy (the file itself was not attached; these rebuild the same call)
FORGED_PICKLE = (
    b"\x80\x02cnumpy\nndarray\nK\x01\x85cnumpy\ndtype\nU\x01O\x85RC\x08" + b"A" * 8 + b"\x87R."
)
FORGED_VARIANTS = [
    FORGED_PICKLE,
    # the dtype given as the bare string "O"
    b"\x80\x02cnumpy\nndarray\nK\x01\x85U\x01OC\x08" + b"A" * 8 + b"\x87R.",
    # protocol 4: STACK_GLOBAL with the module name memoised
    b"\x80\x04\x8c\x05numpy\x94\x8c\x07ndarray\x93K\x01\x85h\x00\x8c\x05dtype\x93"
    b"\x8c\x01O\x85RC\x08" + b"A" * 8 + b"\x87R.",
]


def _npy(pickle_bytes: bytes, descr: str = "|O", shape: tuple[int, ...] = (1,)) -> bytes:
    """A .npy file: a compact version-1.0 header (padded to 64 bytes) and ``pickle_bytes``."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).replace(" ", "")
    pad = -(10 + len(header) + 1) % 64
    header = (header + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + pickle_bytes


def _suite2p_folder(root, stat_bytes: bytes):
    """A suite2p folder whose stat.npy holds ``stat_bytes``."""
    plane = root / "suite2p" / "plane0"
    plane.mkdir(parents=True)
    np.save(plane / "F.npy", np.zeros((1, 10), np.float32))
    np.save(plane / "ops.npy", {"fs": 10.0})
    (plane / "stat.npy").write_bytes(stat_bytes)
    return root


def test_forged_object_pointer_stat_is_refused_not_a_crash(tmp_path):
    folders = []
    for i, forged in enumerate(FORGED_VARIANTS):
        folders.append(str(_suite2p_folder(tmp_path / str(i), _npy(forged))))
    assert len(_npy(FORGED_VARIANTS[1])) == 100  # a tiny file, like the 105 bytes
    out = run_isolated(
        f"""
        from netphys.errors import UnsafeFileError
        from netphys.io import open_dataset
        for folder in {folders!r}:
            try:
                open_dataset(folder)
            except UnsafeFileError as exc:
                print("refused:", exc)
        """
    )
    assert out.count("refused:") == len(FORGED_VARIANTS)
    assert "stat.npy" in out and "numpy.ndarray(...)" in out


def test_forged_object_pointer_in_npz_member_is_refused_not_a_crash(tmp_path):
    path = tmp_path / "rec.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("spks.npy", _npy(FORGED_PICKLE))
    out = run_isolated(
        f"""
        from netphys.errors import UnsafeFileError
        from netphys.io import read_npz
        try:
            read_npz({str(path)!r})
        except UnsafeFileError as exc:
            print("refused:", exc)
        """
    )
    assert "refused:" in out and "rec.npz::spks.npy" in out


def test_uninitialised_memory_through_ndarray_is_refused():
    # numpy.ndarray((10**6,), dtype("f8")): a million uninitialised doubles
    data = b"\x80\x02cnumpy\nndarray\nJ\x40\x42\x0f\x00\x85cnumpy\ndtype\nU\x02f8\x85R\x86R."
    with pytest.raises(UnsafeFileError, match=r"x\.npy.*numpy\.ndarray\(\.\.\.\).*raw memory"):
        safe_loads(data, source="x.npy")


def test_object_scalar_and_object_structured_dtype_from_bytes_are_refused():
    # scalar(dtype('O'), b'AAAAAAAA') and scalar(dtype([('a','O')]), ...) read pointers
    scalar_o = (
        b"\x80\x02cnumpy._core.multiarray\nscalar\ncnumpy\ndtype\nU\x01O\x85RC\x08AAAAAAAA\x86R."
    )
    with pytest.raises(UnsafeFileError, match="object dtype from raw bytes"):
        safe_loads(scalar_o, source="s")
    # the same structured dtype through numpy's own path (its items as a list) still loads
    struct_o = pickle.dumps(np.zeros(1, dtype=[("a", "O")]), protocol=2)
    assert safe_loads(struct_o)["a"][0] == 0


def test_forged_field_offset_past_itemsize_is_refused():
    # a structured dtype whose field lies 1000 bytes past the 8-byte item: reads out of bounds
    good = pickle.dumps(np.zeros(2, dtype=[("x", "<f8")]), protocol=2)
    assert b"K\x00" in good
    forged = good.replace(b"K\x00\x86", b"M\xe8\x03\x86", 1)
    assert forged != good
    with pytest.raises(UnsafeFileError, match="structured dtype is inconsistent"):
        safe_loads(forged, source="f")


def test_memo_tree_is_refused_before_it_expands():
    # 40 levels of [x, x]: a few hundred bytes of pickle, 2**40 list slots when expanded
    x: list = [0.0]
    for _ in range(40):
        x = [x, x]
    data = pickle.dumps({"ypix": x}, protocol=2)
    assert len(data) < 2000
    with pytest.raises(ResourceLimitError, match=r"memo tree|max_bytes"):
        safe_loads(data, source="stat.npy")


def test_memo_tree_in_stat_npy_is_refused_by_read_suite2p(tmp_path):
    x: list = [1.0]
    for _ in range(40):
        x = [x, x]
    buf = io.BytesIO()
    np.save(buf, np.array([{"ypix": x, "xpix": x}, None], dtype=object)[:1], allow_pickle=True)
    folder = _suite2p_folder(tmp_path, buf.getvalue())
    with pytest.raises(ResourceLimitError, match=r"stat\.npy"):
        read_suite2p(folder)


def test_reference_cycle_is_refused():
    loop: list = []
    loop.append(loop)
    with pytest.raises(RecordingFormatError, match="reference cycle"):
        safe_loads(pickle.dumps(loop, protocol=2), source="c")


def test_deep_nesting_is_refused_not_a_recursion_error():
    # 100,000 nested lists, far past Python's recursion limit: "]" pushes, "a" appends
    n = 100_000
    data = b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b"."
    with pytest.raises(RecordingFormatError, match="levels deep"):
        safe_loads(data, source="d")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x80\x02c__builtin__\nbytearray\nJ\x00\xe4\x0bT\x85R.", r"bytearray\(1410065408\)"),
        (b"\x80\x02c__builtin__\nbytes\nJ\x00\xe4\x0bT\x85R.", r"bytes\(1410065408\)"),
        (b"\x80\x02c__builtin__\nstr\n](K\x01K\x02e\x85R.", r"str\(\) on a container"),
        (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x04\x00\x00\x00zlib\x86R.", "zlib"),
    ],
)
def test_builtins_asking_for_unbounded_work_are_refused(data, match):
    with pytest.raises(UnsafeFileError, match=match):
        safe_loads(data, source="b")


def test_header_declaring_huge_shape_is_refused_without_allocating(tmp_path):
    path = tmp_path / "F.npy"
    path.write_bytes(_npy(b"", descr="<f8", shape=(10**6, 10**6)))  # 8 TB declared, 0 stored
    with pytest.raises(ResourceLimitError, match=r"F\.npy.*shape \(1000000, 1000000\).*max_bytes"):
        load_npy(path)
    path.write_bytes(_npy(b"\x00" * 16, descr="<f8", shape=(10**7,)))  # 80 MB declared
    with pytest.raises(RecordingFormatError, match="truncated"):
        load_npy(path)
    with pytest.raises(ResourceLimitError, match="max_bytes"):
        load_npy(path, max_bytes=2**20)


def test_an_array_using_most_of_the_budget_still_loads(tmp_path):
    path = tmp_path / "F.npy"
    np.save(path, np.arange(100_000, dtype=np.float64))  # 800 KB
    np.testing.assert_array_equal(load_npy(path, max_bytes=900_000), np.arange(100_000))
    with pytest.raises(ResourceLimitError, match=r"max_bytes`=700000"):
        load_npy(path, max_bytes=700_000)


def test_npz_zip_bomb_is_refused_from_declared_sizes(tmp_path):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, spks=np.zeros((2000, 2000)))  # 32 MB of zeros in ~30 KB
    assert path.stat().st_size < 200_000
    with pytest.raises(ResourceLimitError, match=r"bomb\.npz.*declared uncompressed.*max_bytes"):
        read_npz(path, frame_rate=10.0, max_bytes=2**20)
    assert read_npz(path, frame_rate=10.0).sizes["unit"] == 2000  # within the default


def test_genuine_object_arrays_are_unchanged_by_the_guard(rng):
    stat = np.array(
        [
            {
                "ypix": rng.integers(0, 100, 30),
                "lam": rng.random(30).astype(np.float32),
                "med": [1.0, 2.0],
                "soma_crop": np.ones(30, bool),
                "name": "roi",
                "shared": None,
            }
            for _ in range(5)
        ],
        dtype=object,
    )
    buf = io.BytesIO()
    np.save(buf, stat, allow_pickle=True)
    back = load_npy(io.BytesIO(buf.getvalue()))
    ref = np.load(io.BytesIO(buf.getvalue()), allow_pickle=True)  # our own bytes: trusted
    assert type(back) is np.ndarray and back.dtype == object
    for a, b in zip(back, ref, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], np.ndarray):
                assert type(a[k]) is np.ndarray and a[k].dtype == b[k].dtype
                np.testing.assert_array_equal(a[k], b[k])
            else:
                assert a[k] == b[k]
