"""Re-execute the tutorials in place so that they are committed with their outputs (figures).

Usage (from the repository root)::

    python tutorials/execute.py                 # every tutorial
    python tutorials/execute.py 01 04           # tutorials whose file name starts with 01 or 04

Each notebook runs in a fresh kernel with ``tutorials/`` as its working directory and the
checkout on ``PYTHONPATH``; the first cell selects the inline backend with small PNG figures.
Real data are found through ``netphys.io.data_dir`` (``$NETPHYS_DATA`` or ``../shared/data``).
The run time of each notebook is printed; keep each under about a minute.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def notebooks(prefixes: list[str]) -> list[Path]:
    """Return the tutorial notebooks whose names start with one of ``prefixes`` (all if none)."""
    found = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if prefixes:
        found = [p for p in found if any(p.name.startswith(x) for x in prefixes)]
    return found


def execute(path: Path, *, timeout: int = 600) -> tuple[nbformat.NotebookNode, float]:
    """Run one notebook in a fresh kernel; return it with its outputs and the seconds taken."""
    env_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    os.environ["PYTHONPATH"] = env_path
    os.environ.pop("MPLBACKEND", None)  # a non-interactive backend here would hide the figures
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
    ).execute()
    for cell in nb.cells:  # timing metadata only makes diffs noisy
        cell.metadata.pop("execution", None)
    return nb, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Execute the selected tutorials and write them back with their outputs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="e.g. 01 04 (default: all)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = notebooks(args.prefixes)
    if not paths:
        print(f"no tutorial matches {args.prefixes}", file=sys.stderr)
        return 2
    for path in paths:
        nb, seconds = execute(path, timeout=args.timeout)
        nbformat.write(nb, path)
        print(f"{path.name}: {seconds:.1f} s, {path.stat().st_size / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
