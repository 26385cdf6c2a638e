"""Fenced code blocks of a markdown file (README or a docs page), for the tests that run them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def section(path: Path, heading: str) -> str:
    """The text under ``heading`` (a full ``#``-line) up to the next heading of the same or a higher level."""
    text = path.read_text()
    if heading + "\n" not in text:
        raise AssertionError(f"{path.relative_to(ROOT)} has no section {heading!r}")
    level = len(heading) - len(heading.lstrip("#"))
    body = text.split(heading + "\n", 1)[1].splitlines(keepends=True)
    kept, fenced = [], False
    for line in body:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(rf"#{{1,{level}}} ", line):
            break
        kept.append(line)
    return "".join(kept)


def blocks(path: Path, heading: str, language: str) -> list[str]:
    """The ``language`` fenced code blocks under ``heading`` in ``path``, in order."""
    return re.findall(rf"```{language}\n(.*?)```", section(path, heading), flags=re.DOTALL)
