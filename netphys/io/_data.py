"""Where the example recordings used by the tutorials and tests live (one mechanism)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir"]

#: Environment variable naming the folder of the example recordings.
DATA_ENV = "NETPHYS_DATA"


def _default_dir() -> Path:
    # a source checkout: <repo>/netphys/io/_data.py -> <repo>/../shared/data
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def data_dir(*parts: str) -> Path:
    """Return the folder of the example recordings (or a path inside it), checking it exists.

    The folder is ``$NETPHYS_DATA`` when that environment variable is set, otherwise
    ``../shared/data`` beside the source checkout. It holds small public recordings (suite2p,
    spike-sorted units, NWB), each with a README giving its origin and licence.

    Parameters
    ----------
    *parts : str
        Path components inside the folder, e.g. ``"ibl_brainbox_289units", "spikes.npz"``.

    Returns
    -------
    pathlib.Path
        The existing folder or file.

    Raises
    ------
    FileNotFoundError
        If the folder (or the requested file in it) does not exist; the message says how
        to point ``NETPHYS_DATA`` at a copy.

    Examples
    --------
    >>> from netphys.io import data_dir
    >>> data_dir("ibl_brainbox_289units").name  # doctest: +SKIP
    'ibl_brainbox_289units'
    """
    env = os.environ.get(DATA_ENV)
    base = Path(env).expanduser() if env else _default_dir()
    where = f"${DATA_ENV}={env!r}" if env else f"the default {str(base)!r} ($NETPHYS_DATA unset)"
    if not base.is_dir():
        raise FileNotFoundError(
            f"data_dir(): the example data folder was not found at {where}. Set the "
            f"environment variable {DATA_ENV} to the folder holding the example recordings "
            "(e.g. `export NETPHYS_DATA=/path/to/shared/data`); see README.md, 'Example data'."
        )
    path = base.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"data_dir(): {str(path)!r} does not exist in the example data folder "
            f"{str(base)!r}; available: {sorted(p.name for p in base.iterdir())}."
        )
    return path
