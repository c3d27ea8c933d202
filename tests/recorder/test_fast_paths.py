"""The recorder's fast paths: behaviour derived per block, staging, activity codec, O_DIRECT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
import zarr
from torch import nn

import netphys
from netphys.io import _chunks
from tests.recorder.models import CNN, mlp


def _slow_behaviour(logits: torch.Tensor, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per frame, one at a time: what the behaviour arrays must hold."""
    out: dict[str, list[float]] = {"prediction": [], "confidence": [], "loss": []}
    for row, lab in zip(logits, labels, strict=True):
        if row.numel() == 1:
            out["prediction"].append(float(row[0] > 0))
            out["confidence"].append(float(torch.sigmoid(row[0])))
            out["loss"].append(float("nan"))
            continue
        prob = torch.softmax(row, 0)
        out["prediction"].append(float(torch.argmax(row)))
        out["confidence"].append(float(prob.max()))
        ok = 0 <= lab < row.numel()
        loss = F.cross_entropy(row[None], torch.tensor([lab])) if ok else float("nan")
        out["loss"].append(float(loss))
    return {k: np.asarray(v) for k, v in out.items()}


@pytest.mark.parametrize("width", [3, 1])
def test_behaviour_derived_per_block_equals_per_frame_computation(tmp_path, width):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, width))
    x = torch.randn(23, 6)
    labels = np.array([0, 1, 2, -1, 5] * 4 + [2, 0, 1])  # -1: none; 5: out of range
    path = tmp_path / "b.zarr"
    with torch.no_grad(), netphys.Recorder(model, path, layers=["1"], chunk_frames=8) as rec:
        for s in (0, 5, 14):  # batches crossing the 8-frame blocks
            e = {0: 5, 5: 14, 14: 23}[s]
            rec.annotate(label=labels[s:e])
            model(x[s:e])
    with torch.no_grad():
        want = _slow_behaviour(model(x), labels)
    beh = xr.open_datatree(path, engine="zarr")["behaviour"]
    np.testing.assert_array_equal(beh["prediction"].values, want["prediction"])
    np.testing.assert_allclose(beh["confidence"].values, want["confidence"], rtol=1e-6)
    np.testing.assert_allclose(beh["loss"].values, want["loss"], rtol=1e-5, equal_nan=True)
    assert np.isnan(beh["loss"].values[labels == -1]).all()
    assert np.isnan(beh["loss"].values[labels == 5]).all()


def test_torch_threads_restored_and_values_exact(tmp_path):
    threads = torch.get_num_threads()
    torch.manual_seed(1)
    model = CNN().eval()
    x = torch.randn(40, 1, 8, 8)
    got: dict[str, torch.Tensor] = {}
    handle = model.act1.register_forward_hook(lambda m, a, o: got.__setitem__("act1", o.clone()))
    path = tmp_path / "t.zarr"
    rec = netphys.Recorder(model, path, layers=["act1"], chunk_frames=16, store_weights=False)
    with torch.no_grad(), rec:
        model(x)
        assert torch.get_num_threads() == threads
    handle.remove()
    assert torch.get_num_threads() == threads
    layer = netphys.open_recording(path)["layers/act1"]
    want = got["act1"]
    np.testing.assert_array_equal(layer["activity"].values, want.reshape(40, -1).numpy())
    np.testing.assert_array_equal(layer["nodes"].values, want.mean((2, 3)).numpy())


@pytest.mark.parametrize(
    ("compression", "cname", "shuffle"), [("lz4", "lz4", "noshuffle"), ("zstd", "zstd", "shuffle")]
)
def test_activity_codec(tmp_path, compression, cname, shuffle):
    path = tmp_path / "c.zarr"
    netphys.record(mlp(), torch.randn(9, 6), path, layers=["1"], compression=compression,
                   progress=False)  # fmt: skip
    codecs = zarr.open_array(path / "layers/1/activity", mode="r").metadata.codecs
    blosc = codecs[-1].to_dict()["configuration"]
    assert (blosc["cname"], blosc["shuffle"]) == (cname, shuffle)
    nodes = zarr.open_array(path / "layers/1/nodes", mode="r").metadata.codecs
    assert nodes[-1].to_dict()["configuration"]["shuffle"] == "shuffle"


class _TwoOutputs(nn.Module):
    """One sparse layer (mostly exact zeros: lz4 packs it) and one dense layer (it does not)."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(6, 256)
        self.sparse = nn.Identity()
        self.head = nn.Linear(256, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dense(x)
        s = self.sparse(torch.where(d > 2.5, d, torch.zeros_like(d)))  # ~1% non-zero
        return self.head(d + s)


def _codec(path, layer: str) -> str:
    codecs = zarr.open_array(path / f"layers/{layer}/activity", mode="r").metadata.codecs
    return codecs[-1].to_dict()["configuration"]["cname"] if len(codecs) > 1 else "none"


def test_auto_compression_packs_only_layers_that_shrink_and_keeps_values(tmp_path):
    torch.manual_seed(3)
    model = _TwoOutputs().eval()
    x = torch.randn(70, 6)
    seen: dict[str, list[torch.Tensor]] = {"dense": [], "sparse": []}
    hooks = [  # an independent capture of what the recorder sees, batch by batch
        getattr(model, k).register_forward_hook(lambda m, a, o, k=k: seen[k].append(o.clone()))
        for k in seen
    ]
    path = tmp_path / "auto.zarr"
    rec = netphys.Recorder(model, path, layers=["dense", "sparse"], dtype="float32",
                           chunk_frames=32, store_weights=False)  # fmt: skip
    with torch.no_grad(), rec:
        for s in range(0, len(x), 32):
            model(x[s : s + 32])
    for h in hooks:
        h.remove()
    want = {k: torch.cat(v) for k, v in seen.items()}
    assert (_codec(path, "sparse"), _codec(path, "dense")) == ("lz4", "none")
    tree = netphys.open_recording(path)
    attrs = {k: tree[f"layers/{k}"].attrs for k in ("dense", "sparse")}
    assert attrs["sparse"]["compression"] == "lz4"
    assert attrs["sparse"]["lz4_ratio_first_batch"] >= 1.5 > attrs["dense"]["lz4_ratio_first_batch"]
    for k in ("dense", "sparse"):  # float32 bit-exact through either codec
        np.testing.assert_array_equal(tree[f"layers/{k}"]["activity"].values, want[k].numpy())
    plain = xr.open_datatree(path, engine="zarr")  # and plain xarray reads both
    np.testing.assert_array_equal(plain["layers/dense"]["activity"].values, want["dense"].numpy())


def test_choose_compression_against_measured_ratio():
    from numcodecs import Blosc

    from netphys.io._recording_layout import AUTO_MIN_RATIO, choose_compression

    rng = np.random.default_rng(0)
    codec = Blosc("lz4", 1, Blosc.NOSHUFFLE)
    for zeros in (0.0, 0.3, 0.6, 0.9, 0.99):
        a = rng.standard_normal((64, 500)).astype("float16")
        a[rng.random(a.shape) < zeros] = 0
        ratio = a.nbytes / len(codec.encode(a))  # the slow obvious measurement
        name, got = choose_compression(a)
        assert got == pytest.approx(ratio)
        assert name == ("lz4" if ratio >= AUTO_MIN_RATIO else "none")
    assert choose_compression(np.zeros((0, 5), "float16"))[0] == "lz4"


def test_bad_compression_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"compression.*'auto'.*'lz4'.*'zstd'.*'none'.*'gzip'"):
        netphys.Recorder(mlp(), tmp_path / "x.zarr", layers=["1"], compression="gzip")


@pytest.mark.parametrize("direct_io", [True, False])
def test_direct_io_recording_is_exact_and_stated(tmp_path, monkeypatch, direct_io):
    monkeypatch.setattr(_chunks, "DIRECT_MIN", 1)  # every activity chunk, not only >= 1 MiB
    tried: list[int] = []
    real = _chunks.write_direct
    monkeypatch.setattr(
        _chunks, "write_direct", lambda *a, **k: tried.append(a[2]) or real(*a, **k)
    )
    torch.manual_seed(2)
    model = CNN().eval()
    x = torch.randn(40, 1, 8, 8)
    got: list[torch.Tensor] = []
    handle = model.act1.register_forward_hook(lambda m, a, o: got.append(o.clone()))
    path = tmp_path / "d.zarr"
    with torch.no_grad(), netphys.Recorder(
        model, path, layers=["act1"], chunk_frames=16, store_weights=False,
        compression="none", direct_io=direct_io,
    ):  # fmt: skip
        model(x[:25])
        model(x[25:])
    handle.remove()
    rec = netphys.open_recording(path)
    assert rec.attrs["recorder_args"]["direct_io"] is direct_io
    np.testing.assert_array_equal(  # float32, bit for bit, with and without O_DIRECT
        rec["layers/act1/activity"].values, torch.cat(got).reshape(40, -1).numpy()
    )
    assert (len(tried) > 0) is direct_io  # 3 time chunks of activity and nodes went that way
    assert not list(path.rglob("*.partial"))


def test_direct_io_must_be_a_bool(tmp_path):
    with pytest.raises(TypeError, match=r"Recorder\(\): `direct_io` must be True or False.*'yes'"):
        netphys.Recorder(mlp(), tmp_path / "x.zarr", layers=["1"], direct_io="yes")


@pytest.mark.parametrize("direct_io", [True, False])
def test_auto_writer_is_a_thread_with_o_direct_and_inline_on_a_busy_cpu_without(
    tmp_path, monkeypatch, direct_io
):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1 << 10)  # every core runs the model
    model = mlp()
    with torch.no_grad(), netphys.Recorder(
        model, tmp_path / "w.zarr", layers=["1"], store_weights=False, direct_io=direct_io
    ) as rec:
        model(torch.randn(4, 6))
        inline = rec._writer.inline
    assert inline is not (direct_io and _chunks.O_DIRECT_AVAILABLE)
