"""Execute tutorials/01_record_a_model.ipynb."""

from __future__ import annotations

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

TUTORIALS = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "tutorials"))
NOTEBOOK = os.path.join(TUTORIALS, "01_record_a_model.ipynb")


def test_tutorial_01_runs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": TUTORIALS}}
    )
    client.execute()
    text = "".join(
        out.get("text", "") for c in nb.cells if c.cell_type == "code" for out in c.outputs
    )
    assert "frames recorded: 3996" in text
    assert "('time', 'unit') (3996, 2048)" in text
    accs = [
        float(line.split("accuracy ")[1].split(",")[0])
        for line in text.splitlines()
        if "accuracy" in line
    ]
    assert accs[0] < 0.3 and accs[1] > 0.85, accs  # untrained vs trained digits CNN
