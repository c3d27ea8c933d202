"""Execute tutorials/05_continual_learning.ipynb (no committed outputs, < 1 min)."""

from __future__ import annotations

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("torch")

TUTORIALS = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "tutorials"))
NOTEBOOK = os.path.join(TUTORIALS, "05_continual_learning.ipynb")


def test_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs
            assert cell.execution_count is None


@pytest.mark.slow
def test_tutorial_05_runs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": TUTORIALS}}
    )
    client.execute()
    text = "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )
    assert "finetune  task-1 accuracy per session" in text
    assert "['kept' 'changed' 'lost']" in text
