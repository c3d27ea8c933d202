"""Pickles that ask the unpickler itself for unbounded work: refused before any opcode runs.

Hash bombs (shared nested tuples as dict keys or set members), keys chosen to collide, and
tuples nested too deep to hash are stopped by the opcode prescan (``_pickle_scan``). The
crash- and hang-prone cases run in a fresh interpreter with a timeout, so a regression fails
the test instead of hanging or killing pytest.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest

from netphys.errors import RecordingFormatError, ResourceLimitError
from netphys.io._safe_pickle import load_npy, safe_loads
from tests.adversarial._readers_isolated import run_isolated


def _shared_tuple(levels: int, base: int = 1000) -> bytes:
    """Opcodes pushing ``t``, built as ``t = (t, t)`` ``levels`` times over memo slots ``base+``."""

    def put(i: int) -> bytes:
        return b"r" + (base + i).to_bytes(4, "little")

    def get(i: int) -> bytes:
        return b"j" + (base + i).to_bytes(4, "little")

    out = b")" + put(0) + b"0"
    for i in range(levels):
        out += get(i) + get(i) + b"\x86" + put(i + 1) + b"0"
    return out + get(levels)


# each under 1 KB; hashing the key once visits 2**40 tuples (days of CPU)
HASH_BOMBS = {
    "dict key": b"\x80\x02}" + _shared_tuple(40) + b"K\x01s.",
    "set member": b"\x80\x04\x8f(" + _shared_tuple(40) + b"\x90.",
    "frozenset member": b"\x80\x04(" + _shared_tuple(40) + b"\x91.",
    "dict(pairs) call": b"\x80\x02c__builtin__\ndict\n"
    + _shared_tuple(40)
    + b"K\x01\x86\x85\x85R.",
}
# a tuple nested a million levels deep, used as a dict key: hashing it overflows the C stack
DEEP_KEY = b"\x80\x02}" + b")" + b"\x85" * 1_000_000 + b"K\x01s."


def _npy(pickle_bytes: bytes) -> bytes:
    header = repr({"descr": "|O", "fortran_order": False, "shape": (1,)}).replace(" ", "")
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + pickle_bytes


def _stat_with_bomb(root: Path) -> Path:
    """A suite2p folder whose stat.npy is np.save's own pickle with one ROI keyed by a bomb."""
    plane = root / "suite2p" / "plane0"
    plane.mkdir(parents=True)
    np.save(plane / "F.npy", np.zeros((1, 10), np.float32))
    np.save(plane / "ops.npy", {"fs": 10.0})
    genuine = pickle.dumps(np.array(["ZZZZ", {"npix": 1}], dtype=object), protocol=2)
    placeholder = b"X\x04\x00\x00\x00ZZZZ"
    assert genuine.count(placeholder) == 1
    forged = genuine.replace(placeholder, b"}" + _shared_tuple(40) + b"K\x01s")
    assert len(forged) < 1000
    (plane / "stat.npy").write_bytes(_npy(forged))
    return root


def test_hash_bombs_and_deep_keys_are_refused_without_hanging_or_crashing(tmp_path):
    """Each bomb through safe_loads, then one inside stat.npy through read_suite2p."""
    assert all(len(b) < 1000 for b in HASH_BOMBS.values())
    paths = []
    for i, data in enumerate([*HASH_BOMBS.values(), DEEP_KEY]):
        paths.append(str(tmp_path / f"{i}.pkl"))
        Path(paths[-1]).write_bytes(data)
    folder = _stat_with_bomb(tmp_path / "s2p")
    out = run_isolated(
        f"""
        import time
        from pathlib import Path
        from netphys.errors import RecordingFormatError, ResourceLimitError
        from netphys.io import read_suite2p
        from netphys.io._safe_pickle import safe_loads
        for path in {paths!r}:
            t0 = time.process_time()
            try:
                safe_loads(Path(path).read_bytes(), source=Path(path).name)
            except (RecordingFormatError, ResourceLimitError) as exc:
                print(type(exc).__name__, "|", exc, "|", time.process_time() - t0 < 10)
        try:
            read_suite2p({str(folder)!r})
        except ResourceLimitError as exc:
            print("read_suite2p refused:", exc)
        """,
        timeout=90,
    )
    lines = out.strip().splitlines()
    assert len(lines) == len(paths) + 1
    assert all(line.endswith("| True") for line in lines[:-1])
    for line in lines[: len(HASH_BOMBS)]:
        assert line.startswith("ResourceLimitError") and "hash bomb" in line
    assert lines[-2].startswith("RecordingFormatError") and "128 levels deep" in lines[-2]
    assert lines[-1].startswith("read_suite2p refused:") and "stat.npy" in lines[-1]
    assert "hash bomb" in lines[-1]


def test_colliding_integer_keys_are_refused():
    # k * (2**61 - 1) all hash to 0: filling the dict takes quadratic time (20k keys: seconds)
    prime = 2**61 - 1
    body = b"".join(
        b"\x8a\x09" + (k * prime).to_bytes(9, "little") + b"K\x00" for k in range(1, 2000)
    )
    data = b"\x80\x02}(" + body + b"u."
    with pytest.raises(
        ResourceLimitError, match=r"k\.npy: a dict or set .* 1024 keys that are not strings"
    ):
        safe_loads(data, source="k.npy")
    # the same number of string keys is an ordinary dict
    ok = pickle.dumps({f"key{k}": 0 for k in range(2000)}, protocol=2)
    assert len(safe_loads(ok)) == 2000


def test_expansion_limit_follows_max_bytes():
    # 2**14 leaves once expanded (~400 KB): fine by default, refused under a 100 KB max_bytes
    x: list = [0.0]
    for _ in range(14):
        x = [x, x]
    data = pickle.dumps((x,), protocol=2)
    assert len(data) < 500
    assert safe_loads(data)[0][1][0] == x[1][0]
    with pytest.raises(ResourceLimitError, match=r"max_bytes`=100000 of load_npy\(\).*larger"):
        safe_loads(data, source="m", max_bytes=100_000)


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"\x80\x02h\x05.", "undefined memo entry"),
        (b"\x80\x02K\x01a.", "append to an int"),
        (b"\x80\x02\x86.", "stack underflow"),
        (b"\x80\x02]K\x01", "truncated"),
    ],
)
def test_malformed_streams_are_refused_before_unpickling(data, what):
    with pytest.raises(RecordingFormatError, match=r"^bad\.npy: the pickle is malformed"):
        safe_loads(data, source="bad.npy")


def _suite2p_like_stat(n_rois: int, rng: np.random.Generator) -> np.ndarray:
    def roi() -> dict:
        n = int(rng.integers(20, 120))
        y, x = rng.integers(0, 512, n).astype(np.int32), rng.integers(0, 512, n).astype(np.int32)
        return {
            "ypix": y,
            "xpix": x,
            "lam": rng.random(n).astype(np.float32),
            "med": [float(np.median(y)), float(np.median(x))],
            "npix": n,
            "soma_crop": np.ones(n, bool),
            "overlap": np.zeros(n, bool),
            "radius": 5.3,
            "compact": 1.05,
            "neuropil_mask": rng.integers(0, 512 * 512, 3 * n),
            "iplane": 0,
            "imerge": [],
        }

    return np.array([roi() for _ in range(n_rois)], dtype=object)


def test_genuine_stat_with_thousands_of_rois_passes_the_prescan_unchanged(rng):
    stat = _suite2p_like_stat(1000, rng)
    for protocol in (2, 5):
        data = pickle.dumps(stat, protocol=protocol)
        back = safe_loads(data, source="stat.npy")
        assert len(back) == 1000
        for a, b in zip(back[::100], stat[::100], strict=True):
            assert a.keys() == b.keys() and a["med"] == b["med"] and a["imerge"] == []
            np.testing.assert_array_equal(a["neuropil_mask"], b["neuropil_mask"])


REAL = Path("/work/shared/data/suite2p_pynapple_a0662/suite2p/plane0")


@pytest.mark.skipif(not REAL.is_dir(), reason="the shared suite2p recording is not on this machine")
def test_real_suite2p_stat_and_ops_pass_the_prescan():
    for name in ("ops.npy", "stat.npy"):
        ours = load_npy(REAL / name)
        ref = np.load(REAL / name, allow_pickle=True)  # a known public file
        assert ours.shape == ref.shape
    buf = io.BytesIO()
    np.save(buf, np.load(REAL / "stat.npy", allow_pickle=True), allow_pickle=True)
    assert len(load_npy(io.BytesIO(buf.getvalue()))) == len(ref)
