"""The allow-list unpickler: real suite2p object arrays load, code-running pickles are refused."""

from __future__ import annotations

import datetime
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from netphys.errors import RecordingFormatError, UnsafeFileError
from netphys.io._safe_pickle import SafeUnpickler, load_npy, safe_loads
from netphys.io.suite2p import read_suite2p


class _RunsCode:
    """Unpickling this calls os.system: the classic pickle exploit."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


class _Evaluates:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (eval, ("__import__('os').getcwd()",))


def test_crafted_npy_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "stat.npy"
    np.save(path, np.array([{"med": [1, 2]}, _RunsCode(str(marker))], dtype=object))
    with pytest.raises(UnsafeFileError, match=r"stat\.npy.*(posix|os)\.system"):
        load_npy(path)
    assert not marker.exists()


def test_crafted_stat_in_suite2p_folder_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    plane = tmp_path / "suite2p" / "plane0"
    plane.mkdir(parents=True)
    np.save(plane / "F.npy", np.zeros((2, 10), np.float32))
    np.save(plane / "ops.npy", {"fs": 10.0})
    np.save(plane / "stat.npy", np.array([_RunsCode(str(marker)), {}], dtype=object))
    with pytest.raises(UnsafeFileError, match=r"stat\.npy"):
        read_suite2p(tmp_path)
    assert not marker.exists()


def test_crafted_ops_is_refused(tmp_path):
    plane = tmp_path / "plane0"
    plane.mkdir()
    np.save(plane / "F.npy", np.zeros((2, 10), np.float32))
    np.save(plane / "ops.npy", np.array({"fs": _Evaluates()}, dtype=object))
    with pytest.raises(UnsafeFileError, match=r"ops\.npy.*builtins\.eval"):
        read_suite2p(plane)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_raw_pickles_refused_at_every_protocol(protocol):
    data = pickle.dumps(_Evaluates(), protocol=protocol)
    with pytest.raises(UnsafeFileError, match=r"x\.pkl.*(__builtin__|builtins)\.eval"):
        safe_loads(data, source="x.pkl")


def test_persistent_ids_refused():
    class P(pickle.Pickler):
        def persistent_id(self, obj):  # type: ignore[no-untyped-def]
            return "x" if obj == "secret" else None

    buf = io.BytesIO()
    P(buf, protocol=3).dump(["secret"])
    with pytest.raises(UnsafeFileError, match="persistent"):
        SafeUnpickler(io.BytesIO(buf.getvalue()), source="y").load()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_allowed_values_round_trip(protocol):
    value = {
        "arr": np.arange(6, dtype=np.int16).reshape(2, 3),
        "f32": np.float32(1.5),
        "obj": np.array([{"a": 1}, [1, 2]], dtype=object),
        "rec": np.zeros(2, dtype=[("x", "<u4"), ("w", "<f4")]),
        "date": datetime.datetime(2022, 8, 8, 12, 0),
        "t": (1, 2.0, "s", b"b", None, True, complex(1, 2)),
        "s": {1, 2},
        "bigint": 2**70,
    }
    out = safe_loads(pickle.dumps(value, protocol=protocol))
    assert out["date"] == value["date"]
    assert out["t"] == value["t"]
    assert out["s"] == value["s"]
    assert out["bigint"] == value["bigint"]
    np.testing.assert_array_equal(out["arr"], value["arr"])
    assert out["arr"].dtype == np.int16
    assert out["obj"][0] == {"a": 1}
    assert out["rec"].dtype == value["rec"].dtype


def test_real_suite2p_object_arrays_match_numpy(shared_data):
    plane = os.path.join(shared_data, "suite2p_pynapple_a0662", "suite2p", "plane0")
    stat = load_npy(os.path.join(plane, "stat.npy"))
    ref = np.load(os.path.join(plane, "stat.npy"), allow_pickle=True)  # trusted test data
    assert len(stat) == len(ref) == 219
    for a, b in zip(stat[:5], ref[:5], strict=True):
        assert a.keys() == b.keys()
        np.testing.assert_array_equal(a["ypix"], b["ypix"])
        assert a["med"] == b["med"]
    ops = load_npy(os.path.join(plane, "ops.npy")).item()
    assert ops["fs"] == 10.0
    assert isinstance(ops["date_proc"], datetime.datetime)


def test_plain_npy_and_truncation(tmp_path, shared_data):
    src = os.path.join(shared_data, "suite2p_pynapple_a0662", "suite2p", "plane0")
    for name in ("F.npy", "stat.npy"):
        good = load_npy(os.path.join(src, name))
        assert len(good) == 219
        data = Path(src, name).read_bytes()
        for cut in (10, len(data) // 2):
            bad = tmp_path / f"cut{cut}_{name}"
            bad.write_bytes(data[:cut])
            with pytest.raises(RecordingFormatError, match=bad.name):
                load_npy(bad)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not a numpy file at all")
    with pytest.raises(RecordingFormatError, match=r"not a readable \.npy"):
        load_npy(garbage)
