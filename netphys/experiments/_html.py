"""A self-contained HTML page for a report: figures embedded as base64 PNG, with captions."""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ReportFigure", "ReportSection", "write_report_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.92em; color: #333; } figcaption b { color: #000; }
table { border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }
.scroll { overflow-x: auto; max-width: 100%; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } .note { font-size: 0.9em; color: #555; }
"""


@dataclass
class ReportFigure:
    """One figure of a report: a PNG file (relative to the report folder) and its caption."""

    path: str
    title: str
    shows: str
    look_for: str = ""


@dataclass
class ReportSection:
    """A heading, an explanatory paragraph, an optional table and figures."""

    heading: str
    text: str = ""
    figures: list[ReportFigure] = field(default_factory=list)
    table: Sequence[Mapping[str, Any]] | None = None


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
    body = ""
    for row in rows:
        cells = []
        for k in keys:
            v = row.get(k)
            if isinstance(v, float):
                text = f"{v:.3g}" if math.isfinite(v) else ""  # NaN (e.g. no training yet)
            else:
                text = "" if v is None else str(v)
            cells.append(f"<td>{html.escape(text)}</td>")
        body += "<tr>" + "".join(cells) + "</tr>"
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def _figure(base: Path, fig: ReportFigure) -> str:
    data = base64.b64encode((base / fig.path).read_bytes()).decode("ascii")
    look = f" <i>What to look for:</i> {html.escape(fig.look_for)}" if fig.look_for else ""
    return (
        f'<figure id="{html.escape(fig.path)}"><img alt="{html.escape(fig.title)}" '
        f'src="data:image/png;base64,{data}"><figcaption><b>{html.escape(fig.title)}.</b> '
        f"{html.escape(fig.shows)}{look} <span class='note'>({html.escape(fig.path)})</span>"
        "</figcaption></figure>"
    )


def write_report_html(
    path: str | os.PathLike[str], *, title: str, intro: str, sections: Sequence[ReportSection]
) -> Path:
    """Write one HTML file with every figure embedded (it opens anywhere, offline).

    Parameters
    ----------
    path : path-like
        The ``.html`` file; figure paths are relative to its folder.
    title : str
        Page title.
    intro : str
        First paragraph (plain text).
    sections : sequence of ReportSection
        The sections in order.

    Returns
    -------
    pathlib.Path
        The file written.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> page = write_report_html(d / "r.html", title="t", intro="i",
    ...                          sections=[ReportSection("numbers", table=[{"a": 1.5}])])
    >>> "<td>1.5</td>" in page.read_text()
    True
    """
    out = Path(path)
    base = out.parent
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>",
    ]
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.heading)}</h2>")
        if sec.text:
            parts.append(f"<p>{html.escape(sec.text)}</p>")
        if sec.table:
            parts.append(_table(sec.table))
        parts += [_figure(base, fig) for fig in sec.figures]
    parts.append("</body></html>")
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
