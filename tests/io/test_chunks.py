"""Direct chunk writes produce exactly the chunks zarr writes, and zarr/xarray read them."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from netphys.io import _chunks
from netphys.io._recording_layout import compressor as _compressor


@pytest.mark.parametrize("dtype", ["float16", "float32", "int64"])
@pytest.mark.parametrize("compression", ["lz4", "zstd", "none"])
def test_direct_chunks_equal_zarr_chunks(tmp_path, dtype, compression):
    rng = np.random.default_rng(0)
    values = (rng.standard_normal((13, 37)) * 100).astype(dtype)  # edge chunks on both axes
    arrays = {}
    for name in ("zarr", "direct"):
        arrays[name] = zarr.create_array(
            tmp_path / f"{name}.zarr", shape=(13, 37), chunks=(5, 16), dtype=dtype,
            fill_value=0, compressors=_compressor(compression), zarr_format=3,
            config={"write_empty_chunks": True},
        )  # fmt: skip
    for t0 in range(0, 13, 5):
        arrays["zarr"][t0 : t0 + 5] = values[t0 : t0 + 5]
    writer = _chunks.ChunkWriter(tmp_path / "direct.zarr")
    _chunks.write_arrays(writer, [(arrays["direct"], values[:10])], 0)  # two chunks at once
    _chunks.write_arrays(writer, [(arrays["direct"], values[10:])], 10)  # a partial last one
    writer.close()
    got = zarr.open_array(tmp_path / "direct.zarr", mode="r")[:]
    np.testing.assert_array_equal(got, values)
    files = sorted(
        p.relative_to(tmp_path / "zarr.zarr") for p in (tmp_path / "zarr.zarr").rglob("c/*/*")
    )
    assert len(files) == 3 * 3
    for f in files:
        assert (tmp_path / "direct.zarr" / f).read_bytes() == (
            tmp_path / "zarr.zarr" / f
        ).read_bytes()


def test_unaligned_start_goes_through_zarr(tmp_path):
    a = zarr.create_array(
        tmp_path / "a.zarr", shape=(10,), chunks=(4,), dtype="float32", zarr_format=3
    )
    writer = _chunks.ChunkWriter(tmp_path / "a.zarr")
    _chunks.write_arrays(writer, [(a, np.arange(4, dtype="float32"))], 0)
    _chunks.write_arrays(writer, [(a, np.arange(4, 10, dtype="float32"))], 4)
    _chunks.write_arrays(writer, [(a, np.full(3, 7, "float32"))], 5)  # mid-chunk: zarr's path
    writer.close()
    np.testing.assert_array_equal(a[:], [0, 1, 2, 3, 4, 7, 7, 7, 8, 9])


def test_block_larger_than_a_chunk_is_refused(tmp_path):
    a = zarr.create_array(
        tmp_path / "a.zarr",
        shape=(8, 3),
        chunks=(4, 3),
        dtype="float32",
        zarr_format=3,
        compressors=None,
    )
    writer = _chunks.ChunkWriter(tmp_path / "a.zarr")
    spec = writer.spec(a)
    assert spec is not None
    with pytest.raises(ValueError, match="does not fit chunk"):
        writer.write([(spec, np.zeros((5, 3), "float32"), 0)])
    writer.close()


def test_other_codecs_keep_zarrs_write_path(tmp_path):
    a = zarr.create_array(tmp_path / "a.zarr", shape=(4,), chunks=(4,), dtype="float32")
    assert _chunks.direct_spec(tmp_path / "a.zarr", a) is None  # zarr's default zstd codec
