"""The README and docs/ are what a newcomer, an auditor and a client writer read from a clone:
every relative link must lead to a file of the repository (and to a heading there, when it names
one), the README must not point outside the repository, and the way the pages cite each other in
prose (`CONFIG.md "Edits"`, `PROTOCOL.md §6`) must name a page and a heading that exist.

Anchors are GitHub's: the heading in lower case, without punctuation, spaces as hyphens, a
repeated heading suffixed -1, -2 … (github/cmark-gfm's anchor rule, as github.com renders it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

_FENCE_RE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN_RE = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
_LINK_RE = re.compile(r"(?<!\\)!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REF_DEF_RE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_HEADING_RE = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_HTML_ANCHOR_RE = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)


def prose(text: str) -> str:
    """The text without fenced code blocks (links there are examples, not links)."""
    return _FENCE_RE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation removed (letters,
    digits, '-', '_' and spaces kept), each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text)
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in "-_ ")
    return text.replace(" ", "-")


def headings(path: Path) -> list[str]:
    return [h for _level, h in _HEADING_RE.findall(prose(path.read_text()))]


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for h in headings(path):
        s = slug(h)
        n = seen.get(s, 0)
        out.add(s if n == 0 else f"{s}-{n}")
        seen[s] = n + 1
    out.update(_HTML_ANCHOR_RE.findall(path.read_text()))
    return out


def links(path: Path) -> list[str]:
    text = prose(path.read_text())
    spans = _CODE_SPAN_RE.sub("", text)  # `[x](y)` in a code span is an example too
    return _LINK_RE.findall(spans) + _REF_DEF_RE.findall(spans)


def _is_external(target: str) -> bool:
    return re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) is not None  # https:, mailto: …


def check_link(page: Path, target: str) -> str | None:
    """Why ``target`` (a link in ``page``) is broken, or None."""
    if _is_external(target):
        return None
    path_part, _, anchor = target.partition("#")
    dest = (page.parent / path_part).resolve() if path_part else page
    try:
        dest.relative_to(ROOT)
    except ValueError:
        return f"{target}: outside the repository"
    if not dest.exists():
        return f"{target}: no such file"
    if anchor:
        if dest.suffix != ".md" or dest.is_dir():
            return f"{target}: an anchor into a file that is not a Markdown page"
        if anchor not in anchors(dest):
            return f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_of_the_repository(page):
    broken = [why for target in links(page) if (why := check_link(page, target))]
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n  " + "\n  ".join(broken)


def test_the_readme_links_nothing_outside_the_repository():
    text = (ROOT / "README.md").read_text()
    outside = [t for t in links(ROOT / "README.md") if t.startswith("../") or t.startswith("/")]
    assert not outside, f"README.md links outside the repository: {outside}"
    # Not even as a path written out in the text: a clone has no ../shared.
    assert "../" not in prose(text).replace("```", ""), "README.md names a path outside the repository"


def test_docs_has_an_index_that_links_every_page():
    index = DOCS / "README.md"
    assert index.exists(), "docs/README.md (the index) is missing"
    linked = {(index.parent / t.partition("#")[0]).resolve() for t in links(index) if not _is_external(t)}
    missing = [p.name for p in DOCS.glob("*.md") if p != index and p.resolve() not in linked]
    assert not missing, f"docs/README.md does not link {missing}"


# Prose citations: `CONFIG.md "Edits"`, `PROTOCOL §4 "Link health"`, `PROTOCOL.md §6`.
_PAGE_NAMES = "|".join(sorted(p.stem for p in DOCS.glob("*.md") if p.stem != "README"))
_CITE_RE = re.compile(rf"\b({_PAGE_NAMES})(?:\.md)?(?:\s+(§\d+))?(?:\s+\"([^\"\n]+)\")?")


def citations(page: Path) -> list[tuple[str, str, str]]:
    text = prose(page.read_text())
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets are checked above
    return [m for m in _CITE_RE.findall(text) if m[1] or m[2]]


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.replace("`", "")).strip().lower()


def check_citation(name: str, section: str, title: str) -> str | None:
    dest = DOCS / f"{name}.md"
    hs = [_norm(h) for h in headings(dest)]
    if section and not any(h.startswith(f"{section[1:]}.") for h in hs):
        return f"{name} {section}: no section {section[1:]}. in docs/{name}.md"
    if title and not any(h.startswith(_norm(title)) or _norm(title) in h for h in hs):
        return f'{name} "{title}": no such heading in docs/{name}.md'
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cited_page_and_section_exists(page):
    broken = sorted({why for c in citations(page) if (why := check_citation(*c))})
    assert not broken, f"{page.relative_to(ROOT)} cites what is not there:\n  " + "\n  ".join(broken)


# The checker itself, on inputs of each kind: a test that cannot fail proves nothing.
@pytest.mark.parametrize("heading, anchor", [
    ("6. Reject codes", "6-reject-codes"),
    ("Who runs an `msc` command", "who-runs-an-msc-command"),
    ("Edits (message-key edits)", "edits-message-key-edits"),
    ("Authentication: one service, no way around it", "authentication-one-service-no-way-around-it"),
    ("One request, several answers", "one-request-several-answers"),
    ("Hit confirmation — 24 × 7", "hit-confirmation--24--7"),
    ("msc.toml", "msctoml"),
    ("The `[[unsolicited]]` table", "the-unsolicited-table"),
    ("Start-up self-check", "start-up-self-check"),
    ("users_file and data_dir", "users_file-and-data_dir"),
])
def test_slug(heading, anchor):
    assert slug(heading) == anchor


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "A.md").write_text("# A\n\n## Two words\n\n## Two words\n\n```\n## not a heading\n```\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "x.toml").write_text("")
    return tmp_path


@pytest.mark.parametrize("target, ok", [
    ("docs/A.md", True),
    ("docs/A.md#two-words", True),
    ("docs/A.md#two-words-1", True),            # the second heading of the same name
    ("docs/A.md#two-words-2", False),
    ("docs/A.md#not-a-heading", False),          # inside a code block
    ("docs/B.md", False),
    ("config/x.toml", True),
    ("config/x.toml#x", False),
    ("config/", True),
    ("../shared/spec/PROTOCOL.md", False),       # outside the repository
    ("docs/../../elsewhere.md", False),
    ("https://example.org/x.md", True),          # external: not checked here
    ("#a", True),
    ("#nope", False),
])
def test_check_link(tree, target, ok):
    page = tree / "README.md"
    page.write_text("# A\n")
    assert (check_link(page, target) is None) == ok


def test_links_found_and_ignored(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "See [one](a.md) and [two](b.md#x 'title') and ![img](c.png).\n"
        "Not `[code](d.md)`, nor\n```\n[fenced](e.md)\n```\n"
        "[ref]: f.md\n"
        "A [link with [brackets]](g.md).\n")
    assert sorted(links(page)) == ["a.md", "b.md#x", "c.png", "f.md", "g.md"]
