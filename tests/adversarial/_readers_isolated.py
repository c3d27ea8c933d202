"""Run a snippet in a fresh interpreter, so that a crash (SIGSEGV) fails a test, not pytest."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_isolated(code: str, *, timeout: float = 120) -> str:
    """Run ``code`` with this checkout importable; return its stdout, failing on any crash."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, (
        f"the reader crashed or failed in a fresh interpreter (exit {proc.returncode}; "
        f"-11 is SIGSEGV):\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout
