"""The HTML report: well-formed, self-contained (figures embedded), every figure listed."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from netphys.experiments._html import ReportFigure, ReportSection, write_report_html

_VOID = {"meta", "img", "br", "hr", "link", "input"}


class _Checker(HTMLParser):
    """Collect tag balance errors, external references and figures."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.external: list[str] = []
        self.figures: list[str] = []
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("src", "href"):
            value = a.get(key)
            if value is not None and not value.startswith(("data:", "#")):
                self.external.append(value)
        if tag == "img":
            self.images += 1
        if tag == "figure":
            self.figures.append(a.get("id") or "")
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()


def check_report(path: Path) -> _Checker:
    """Parse a report page; assert it is balanced and references nothing outside itself."""
    checker = _Checker()
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    checker.feed(text)
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, f"unclosed tags: {checker.stack}"
    assert not checker.external, f"external references: {checker.external}"
    assert checker.images == len(checker.figures)
    return checker


def _png(path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1])
    fig.savefig(path, dpi=40)


def test_report_is_well_formed_and_self_contained(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _png(tmp_path / "a.png")
    _png(tmp_path / "sub" / "b.png")
    page = write_report_html(
        tmp_path / "r.html",
        title="A <title> & more",
        intro="intro",
        sections=[
            ReportSection("one", "text", [ReportFigure("a.png", "fig a", "shows a", "look")]),
            ReportSection(
                "two",
                table=[{"x": 1.23456, "y": None, "z": float("nan")}],
                figures=[ReportFigure("sub/b.png", "fig b", "shows b")],
            ),
        ],
    )
    checker = check_report(page)
    assert checker.figures == ["a.png", "sub/b.png"]
    text = page.read_text()
    assert "A &lt;title&gt; &amp; more" in text
    assert "<td>1.23</td><td></td><td></td>" in text  # None and NaN are blank
    assert "What to look for:</i> look" in text


def test_missing_figure_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_report_html(tmp_path / "r.html", title="t", intro="i",
                          sections=[ReportSection("s", figures=[ReportFigure("no.png", "t", "")])])  # fmt: skip


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    _chromium() is None, reason="chromium is not installed (apt-get install chromium)"
)
def test_chromium_renders_the_report(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    page = write_report_html(tmp_path / "r.html", title="t", intro="i",
                             sections=[ReportSection("s", figures=[ReportFigure("a.png", "t", "c")])])  # fmt: skip
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--screenshot={shot}", "--window-size=800,600", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.stat().st_size > 2000
