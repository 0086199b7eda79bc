"""The code examples of README.md and docs/: every fenced block, with its page and title.

A runnable example is a fenced block whose info string names a file, as mkdocs-material shows
it: ```` ```python title="app.py" ````. The tests write each titled block to a directory under
its title and run it; a block whose title appears on several pages must be the same text on
each, so the README's copy cannot drift from the docs' copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
TITLE = re.compile(r'title="([^"]+)"')


@dataclass(frozen=True)
class Block:
    page: str
    language: str
    title: str | None
    text: str


UPSTREAM = REPO / "docs" / "upstream"  # bug reports to send, not pages (mkdocs.yml excludes it)


def pages() -> list[Path]:
    """README.md and the site's pages."""
    site = [page for page in (REPO / "docs").rglob("*.md") if UPSTREAM not in page.parents]
    return [REPO / "README.md", *sorted(site)]


def blocks_of(path: Path) -> list[Block]:
    page = str(path.relative_to(REPO))
    found = []
    for match in FENCE.finditer(path.read_text()):
        title = TITLE.search(match.group(2))
        found.append(Block(page, match.group(1), title and title.group(1), match.group(3)))
    return found


def all_blocks() -> list[Block]:
    return [block for path in pages() for block in blocks_of(path)]


def write_examples(directory: Path) -> dict[str, Path]:
    """Write every titled block to ``directory``; return the files by title."""
    written: dict[str, Path] = {}
    for block in all_blocks():
        if block.title is None:
            continue
        target = directory / block.title
        target.write_text(block.text)
        written[block.title] = target
    return written


PUBLISH = re.compile(r"PUBLISH (ch:\S+) '([^']*)'")


def shell_publishes(page: str | None = None) -> list[tuple[str, str, str]]:
    """Every ``PUBLISH ch:... '{json}'`` of the pages' shell blocks: (page, channel, body)."""
    return [
        (block.page, match.group(1), match.group(2))
        for block in all_blocks()
        if block.language == "sh" and (page is None or block.page == page)
        for match in PUBLISH.finditer(block.text)
    ]
