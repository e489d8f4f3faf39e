"""Every page's code runs, in order, and prints what the page says it prints."""

from __future__ import annotations

from pathlib import Path

import pytest
from flowsdoc import blocks

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "docs" / "pages"
RUNNABLE = sorted(
    path.relative_to(PAGES).as_posix()
    for path in PAGES.rglob("*.md")
    if blocks.extract(path.read_text())
)
# The READMEs' examples are the first code a user copies: they run too.
READMES = sorted(
    path.relative_to(ROOT).as_posix()
    for path in [ROOT / "README.md", *ROOT.glob("packages/*/README.md")]
    if blocks.extract(path.read_text())
)


@pytest.mark.parametrize("page", RUNNABLE)
def test_page_runs(page: str, tmp_path: Path) -> None:
    blocks.run_page((PAGES / page).read_text(), tmp_path, page)


@pytest.mark.parametrize("readme", READMES)
def test_readme_runs(readme: str, tmp_path: Path) -> None:
    blocks.run_page((ROOT / readme).read_text(), tmp_path, readme)


def test_every_package_readme_has_code_that_runs() -> None:
    readmes = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("packages/*/README.md"))
    assert [readme for readme in readmes if readme not in READMES] == []


def test_every_tutorial_has_code_that_runs() -> None:
    tutorials = sorted(p.relative_to(PAGES).as_posix() for p in (PAGES / "tutorials").glob("*.md"))
    tutorials.remove("tutorials/index.md")
    assert len(tutorials) == 9
    missing = [page for page in tutorials if page not in RUNNABLE]
    assert missing == []
    for page in tutorials:
        kinds = [block.kind for block in blocks.extract((PAGES / page).read_text())]
        assert "python" in kinds, page
