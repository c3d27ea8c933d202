"""netphys.io.data_dir: the one way tutorials and tests find the example recordings."""

from __future__ import annotations

from pathlib import Path

import pytest

from netphys.io import data_dir


def test_env_var_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "set_a").mkdir()
    monkeypatch.setenv("NETPHYS_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    assert data_dir("set_a") == tmp_path / "set_a"


def test_missing_folder_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETPHYS_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"NETPHYS_DATA.*export NETPHYS_DATA="):
        data_dir()


def test_missing_entry_lists_what_is_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "set_a").mkdir()
    monkeypatch.setenv("NETPHYS_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"does not exist.*\['set_a'\]"):
        data_dir("set_b")


def test_default_is_beside_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETPHYS_DATA", raising=False)
    expected = Path(__file__).resolve().parents[3] / "shared" / "data"
    if not expected.is_dir():
        pytest.skip(f"no shared data beside this checkout ({expected})")
    assert data_dir().resolve() == expected.resolve()
