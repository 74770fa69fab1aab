"""The documentation holds together (issue 15, item 5).

- Every relative link in README.md and docs/*.md reaches an existing file or directory, and a
  ``#fragment`` names a heading of the target (GitHub's anchors: lower case, punctuation other
  than ``-`` and ``_`` dropped, spaces as ``-``, ``-1``, ``-2`` for repeats). Links inside code
  blocks and code spans are not links; web links are not followed.
- README.md links every document in docs/ and stays under 12 KB (12,288 bytes).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_LIMIT = 12 * 1024

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans (their brackets are not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(path: Path) -> list[str]:
    return _LINK.findall(prose(path.read_text(encoding="utf-8")))


def slug(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link in a heading: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, title in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken(path: Path) -> list[str]:
    problems = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):   # http:, https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            problems.append(f"{target}: no heading #{fragment} in {dest.name}")
    return problems


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_reach_a_file_and_heading(path: Path) -> None:
    assert broken(path) == []


def test_readme_links_every_document() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(README)}
    assert [d.name for d in DOCS if d.resolve() not in linked] == []


def test_readme_is_a_front_door() -> None:
    assert README.stat().st_size < README_LIMIT


def test_the_checker_finds_a_broken_link_and_anchor(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# Title\n## Chaos harness (`bench/chaos.py`)\n## Usage\n"
                                   "## Usage\n", encoding="utf-8")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#chaos-harness-benchchaospy) [ok](b.md#usage-1) [ok](#top)\n"
                    "# Top\n[bad](c.md) [bad](b.md#nope) `[code](x.md)` [web](https://x.org/y)\n"
                    "```\n[fenced](y.md)\n```\n", encoding="utf-8")
    assert broken(page) == ["c.md: no such file", "b.md#nope: no heading #nope in b.md"]
