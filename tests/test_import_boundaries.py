"""The package's layering, checked on the source with ``ast`` (DESIGN.md section 2).

recorder -> io only; io -> nothing above it; population -> no torch, matplotlib, io, recorder,
plot or experiments; plot is the only matplotlib user besides the command line; torch only in
recorder and experiments. experiments and cli may import anything.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "netphys"

# subpackage -> top-level names (or netphys.<sub> prefixes) it must not import
FORBIDDEN = {
    "recorder": ("netphys.population", "netphys.plot", "netphys.experiments", "matplotlib"),
    "io": (
        "torch",
        "netphys.population",
        "netphys.plot",
        "netphys.experiments",
        "netphys.recorder",
        "matplotlib",
    ),
    "population": (
        "torch",
        "matplotlib",
        "netphys.io",
        "netphys.recorder",
        "netphys.plot",
        "netphys.experiments",
    ),
    "plot": ("torch", "netphys.io", "netphys.recorder", "netphys.experiments"),
    "_validation": (
        "torch",
        "matplotlib",
        "netphys.io",
        "netphys.population",
        "netphys.plot",
        "netphys.recorder",
        "netphys.experiments",
    ),
    "errors": (
        "torch",
        "matplotlib",
        "netphys.io",
        "netphys.population",
        "netphys.plot",
        "netphys.recorder",
        "netphys.experiments",
    ),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module an ``import`` or ``from ... import`` statement of ``path`` names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return out


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _matches(module: str, forbidden: str) -> bool:
    return module == forbidden or module.startswith(forbidden + ".")


def _violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for rule in FORBIDDEN.get(_part(path), ()):
            for line, module in _imports(path):
                if _matches(module, rule):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return found


def test_layers_import_only_downwards():
    assert _violations() == []


def _importers_outside(allowed: set[str], module: str) -> list[str]:
    """Every ``file:line`` that imports ``module`` from a part of the package not in ``allowed``."""
    return [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if _part(path) not in allowed
        for line, name in _imports(path)
        if _matches(name, module)
    ]


def test_matplotlib_only_in_plot_and_cli():
    assert _importers_outside({"plot", "cli"}, "matplotlib") == []


def test_torch_only_in_recorder_and_experiments():
    assert _importers_outside({"recorder", "experiments"}, "torch") == []


def test_checker_sees_a_planted_violation(tmp_path):
    """The checker itself: a forbidden import in a population-like file is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy\nfrom torch import nn\nif True:\n    import matplotlib.pyplot\n")
    names = [m for _, m in _imports(bad)]
    assert any(_matches(m, "torch") for m in names)
    assert any(_matches(m, "matplotlib") for m in names)


@pytest.mark.parametrize("module", ["netphys", "netphys.population", "netphys.io",
                                    "netphys.population.paths"])  # fmt: skip
def test_importing_loads_neither_torch_nor_matplotlib(module):
    code = (
        f"import sys, {module}\n"
        "bad = [m for m in ('torch', 'matplotlib') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
