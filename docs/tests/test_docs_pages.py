"""Every page's code runs, in order, and prints what the page says it prints."""

from __future__ import annotations

from pathlib import Path

import pytest
from flowsdoc import blocks

PAGES = Path(__file__).resolve().parents[1] / "pages"
RUNNABLE = sorted(
    path.relative_to(PAGES).as_posix()
    for path in PAGES.rglob("*.md")
    if blocks.extract(path.read_text())
)


@pytest.mark.parametrize("page", RUNNABLE)
def test_page_runs(page: str, tmp_path: Path) -> None:
    blocks.run_page((PAGES / page).read_text(), tmp_path, page)


def test_every_tutorial_has_code_that_runs() -> None:
    tutorials = sorted(p.relative_to(PAGES).as_posix() for p in (PAGES / "tutorials").glob("*.md"))
    tutorials.remove("tutorials/index.md")
    assert len(tutorials) == 9
    missing = [page for page in tutorials if page not in RUNNABLE]
    assert missing == []
    for page in tutorials:
        kinds = [block.kind for block in blocks.extract((PAGES / page).read_text())]
        assert "python" in kinds, page
