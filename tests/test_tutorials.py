"""Execute every tutorial notebook (raise on error) and check what it prints."""

from __future__ import annotations

import os
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

TUTORIALS = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "tutorials"))

# notebook -> (needs ../shared/data, strings its outputs must contain)
NOTEBOOKS = {
    "01_record_a_model.ipynb": (
        False,
        ["frames recorded: 3996", "('time', 'unit') (3996, 2048)"],
    ),
    "02_population_analyses.ipynb": (True, []),
    "03_paths_and_concepts.ipynb": (False, []),
    "04_model_versus_mouse.ipynb": (True, ["identical F: True", "suite2p round trip exact: True"]),
    "05_continual_learning.ipynb": (
        False,
        ["finetune  task-1 accuracy per session", "['kept' 'changed' 'lost']"],
    ),
}


def _read(name: str):
    return nbformat.read(os.path.join(TUTORIALS, name), as_version=4)


def test_every_tutorial_is_listed():
    assert sorted(f for f in os.listdir(TUTORIALS) if f.endswith(".ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_has_no_outputs(name):
    for cell in _read(name).cells:
        if cell.cell_type == "code":
            assert not cell.outputs
            assert cell.execution_count is None


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_tutorial_runs(name, request, monkeypatch):
    needs_data, expected = NOTEBOOKS[name]
    if needs_data:
        request.getfixturevalue("shared_data")
    # the kernel runs in tutorials/; make the checkout importable without `pip install -e .`
    root = os.path.dirname(TUTORIALS)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    )
    nb = _read(name)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": TUTORIALS}}
    ).execute()
    text = "".join(
        out.get("text", "") for c in nb.cells if c.cell_type == "code" for out in c.outputs
    )
    for snippet in expected:
        assert snippet in text, f"{name}: {snippet!r} not in the output"
    if name.startswith("01_"):
        accs = [float(a) for a in re.findall(r"accuracy ([0-9.]+),", text)]
        assert accs[0] < 0.3, accs  # untrained digits CNN: chance level
        assert accs[1] > 0.85, accs  # after 3 epochs
