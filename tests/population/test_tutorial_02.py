"""Execute tutorials/02_population_analyses.ipynb (raise on error)."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))
TUTORIALS = os.path.normpath(os.path.join(HERE, "..", "..", "tutorials"))


@pytest.mark.slow
def test_tutorial_02_runs(monkeypatch, shared_data):
    # the kernel runs in tutorials/; make the checkout importable even without `pip install -e .`
    root = os.path.dirname(TUTORIALS)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    )
    path = os.path.join(TUTORIALS, "02_population_analyses.ipynb")
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs committed"
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": TUTORIALS}}
    ).execute()
