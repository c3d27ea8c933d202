"""The tutorials: committed executed with their figures, and they still run.

Refresh the committed outputs with ``python tutorials/execute.py`` (see its docstring).
"""

from __future__ import annotations

import os
import re
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

TUTORIALS = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "tutorials"))

# notebook -> (needs the example data (netphys.io.data_dir), strings its outputs must contain)
NOTEBOOKS = {
    "01_record_a_model.ipynb": (
        False,
        ["frames recorded: 3996", "('time', 'unit') (3996, 2048)", "labels: [0 1 2 3 4 5 6 7 8 9]"],
    ),
    "02_population_analyses.ipynb": (True, []),
    "03_paths_and_concepts.ipynb": (False, []),
    "04_model_versus_mouse.ipynb": (True, ["identical F: True", "suite2p round trip exact: True"]),
    "05_continual_learning.ipynb": (
        False,
        ["finetune  task-1 accuracy per session", "['kept' 'changed' 'lost']"],
    ),
    "06_scaling.ipynb": (False, ["solver: gram"]),
}

#: Most a committed notebook may weigh (figures are small PNGs).
MAX_BYTES = 600_000


def _read(name: str):
    return nbformat.read(os.path.join(TUTORIALS, name), as_version=4)


def _figure_cells(nb) -> list:
    """Cells that draw: they call pyplot's show() or end with a ``plot_*`` call (a Figure)."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = [ln for ln in cell.source.strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else ""
        if "plt.show()" in cell.source or re.match(r"^[\w.]*plot_\w+\(", last):
            cells.append(cell)
    return cells


def _check_figures(name: str, nb) -> None:
    figures = _figure_cells(nb)
    assert figures, f"{name}: no figure cell found"
    for cell in figures:
        kinds = [k for out in cell.outputs for k in out.get("data", {})]
        assert "image/png" in kinds, f"{name}: figure cell without an image:\n{cell.source}"
    # a figure shown as its text repr only means the inline backend was not active
    bare = [
        c.source
        for c in figures
        for out in c.outputs
        if "text/plain" in out.get("data", {})
        and "<Figure size" in str(out["data"]["text/plain"])
        and "image/png" not in out["data"]
    ]
    assert not bare, f"{name}: figures shown as text only: {bare}"


def test_every_tutorial_is_listed():
    assert sorted(f for f in os.listdir(TUTORIALS) if f.endswith(".ipynb")) == sorted(NOTEBOOKS)


def test_figure_cell_detection():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1\nplots.plot_spectra(spec)"),
        nbformat.v4.new_code_cell("fig, ax = plt.subplots()\nax.plot(x)\nplt.show()"),
        nbformat.v4.new_code_cell("fig = plots.plot_raster(a)\nprint(fig)"),
        nbformat.v4.new_markdown_cell("plot_spectra(x)"),
    ]
    assert [c.source for c in _figure_cells(nb)] == [nb.cells[0].source, nb.cells[1].source]


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_committed_notebook_is_executed_with_its_figures(name):
    nb = _read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), (
        f"{name} is committed unexecuted; run `python tutorials/execute.py {name[:2]}`"
    )
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{name} was committed with an error output"
    _check_figures(name, nb)
    size = os.path.getsize(os.path.join(TUTORIALS, name))
    assert size < MAX_BYTES, f"{name} weighs {size} bytes; keep figures small (dpi 72)"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_tutorial_runs(name, request, monkeypatch):
    needs_data, expected = NOTEBOOKS[name]
    if needs_data:
        request.getfixturevalue("shared_data")
    sys.path.insert(0, TUTORIALS)
    try:
        from execute import execute  # tutorials/execute.py: the same runner as for committing
    finally:
        sys.path.remove(TUTORIALS)
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb, _ = execute(os.path.join(TUTORIALS, name), timeout=300)
    text = "".join(
        out.get("text", "") for c in nb.cells if c.cell_type == "code" for out in c.outputs
    )
    for snippet in expected:
        assert snippet in text, f"{name}: {snippet!r} not in the output"
    _check_figures(name, nb)
    if name.startswith("01_"):
        accs = [float(a) for a in re.findall(r"accuracy ([0-9.]+),", text)]
        assert accs[0] < 0.3, accs  # untrained digits CNN: chance level
        assert accs[1] > 0.85, accs  # after 3 epochs
