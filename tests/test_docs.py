"""The documentation stays a newcomer's path: a short README, links that resolve, no references a user cannot see."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_LIMIT = 15 * 1024
# written by other pieces of work; a link to one of them is only checked once the file exists
PENDING = {"docs/training-equivalence.md", "docs/distributed.md", "docs/app.md", "docs/precision-and-threads.md",
           "docs/errors.md"}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FORBIDDEN = re.compile(r"spec §|issue #|\bthe issue\b", re.IGNORECASE)


def _prose(text: str) -> str:
    """The text outside fenced code blocks (a shell example may contain anything)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped (not '-' or '_'), spaces to '-', repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(path: Path):
    for target in LINK.findall(_prose(path.read_text(encoding="utf-8"))):
        if not re.match(r"[a-z]+:", target):  # http:, https:, mailto: are not checked (no network)
            yield target


def test_readme_is_short():
    assert README.stat().st_size < README_LIMIT, f"README.md is {README.stat().st_size} bytes"


def test_docs_exist_and_the_readme_links_every_one():
    names = {p.name for p in DOCS}
    assert {"methods.md", "training.md", "testing.md", "performance.md", "synthesis.md", "development.md"} <= names
    linked = {t.split("#")[0] for t in _links(README)}
    assert {f"docs/{p.name}" for p in DOCS} <= linked


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = []
    for target in _links(path):
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        rel = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else str(dest)
        if not dest.exists():
            if rel not in PENDING:
                broken.append(f"{target}: no file {rel}")
            continue
        if anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading '#{anchor}' in {rel}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_references_a_user_cannot_see(path):
    text = path.read_text(encoding="utf-8")
    hits = [ln for ln in text.splitlines() if FORBIDDEN.search(ln)]
    assert not hits, "\n".join(hits)
    assert "../shared" not in text   # the developers' reference folder is not the user's: named by its variable


def test_the_link_checker_sees_a_broken_link(tmp_path):
    """The checks above can fail: a made-up page and anchor are reported."""
    page = tmp_path / "page.md"
    page.write_text("# Title\n[a](missing.md) [b](#title) [c](#nowhere) [d](https://example.org)\n"
                    "```\n[e](inside-code.md)\n```\n")
    assert list(_links(page)) == ["missing.md", "#title", "#nowhere"]
    assert _anchors(page) == {"title"}
