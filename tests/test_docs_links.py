"""Every relative link and picture of the README and of docs/ leads somewhere.

A link resolves when its file or folder exists inside the repository, and a ``#section`` when the
target Markdown file has a heading with that anchor by GitHub's rules (lower case, punctuation
dropped, spaces to hyphens, ``-1``, ``-2`` for repeats) or an HTML ``id``/``name``. Links to other
sites are not fetched (no network in tests); code blocks and code spans are not links. The
checker is tested first on pages made for it, so a checker that finds nothing cannot pass.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

from helpers import REPO_ROOT

PAGES = sorted([REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md")])

FENCE = re.compile(r"^ {0,3}(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:.+?)\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+[\"'(][^)]*)?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_TARGET = re.compile(r"<(?:a|img|source)\b[^>]*?\s(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
HTML_ANCHOR = re.compile(r"<[a-z][^>]*?\s(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")
LINE_ANCHOR = re.compile(r"L\d+(?:C\d+)?(?:-L\d+(?:C\d+)?)?")
"""GitHub's anchors into a source file: #L10, #L10-L20."""


@dataclass(frozen=True)
class Link:
    page: Path
    line: int
    target: str


def markdown_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the Markdown outside front matter and fenced code."""
    lines = text.splitlines()
    start = 0
    if lines and lines[0].strip() == "---":  # YAML front matter (the Space's configuration)
        start = next((i + 1 for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), 0)
    kept, fence = [], None
    for number, line in enumerate(lines[start:], start + 1):
        if match := FENCE.match(line):
            marker = match[1]
            fence = None if fence == marker else (fence or marker)
            continue
        if fence is None:
            kept.append((number, line))
    return kept


def links(page: Path) -> list[Link]:
    found = []
    for number, line in markdown_lines(page.read_text(encoding="utf-8")):
        line = CODE_SPAN.sub(lambda span: " " * len(span[0]), line)  # code is not a link
        matches = sorted([*INLINE_LINK.finditer(line), *HTML_TARGET.finditer(line)], key=lambda m: m.start())
        targets = [m[1] for m in matches]
        if definition := REFERENCE_DEFINITION.match(line):
            targets.append(definition[1])
        found += [Link(page, number, target.strip("<>")) for target in targets]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text: its rendered words, lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link or picture: its text
    text = re.sub(r"<[^>]+>", "", text)                          # HTML tags
    text = re.sub(r"(^|\W)_+(\S.*?)_+(?=\W|$)", r"\1\2", text)   # _emphasis_, not snake_case
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page has: heading slugs (repeats numbered as GitHub numbers them) and HTML ids."""
    seen: dict[str, int] = {}
    result = set()
    previous = ""
    for number, line in markdown_lines(page.read_text(encoding="utf-8")):
        heading = None
        if match := ATX_HEADING.match(line):
            heading = match[2]
        elif SETEXT_UNDERLINE.match(line) and previous.strip() and not previous.lstrip().startswith(("|", "-", "*")):
            heading = previous.strip()
        if heading is not None:
            base = slug(heading)
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
        result.update(m[1] for m in HTML_ANCHOR.finditer(line))
        previous = line
    return result


def problem(link: Link, root: Path) -> str | None:
    """Why ``link`` does not resolve, or None when it does (or leads to another site)."""
    if EXTERNAL.match(link.target):
        return None
    path_part, _, fragment = link.target.partition("#")
    target = (link.page.parent / unquote(path_part)).resolve() if path_part else link.page.resolve()
    if not target.is_relative_to(root.resolve()):
        return "leads outside the repository"
    if not target.exists():
        return "no such file or folder"
    if not fragment:
        return None
    if target.suffix.lower() == ".md":
        return None if unquote(fragment) in anchors(target) else f"no heading with the anchor #{fragment} in {target.name}"
    return None if LINE_ANCHOR.fullmatch(fragment) else f"#{fragment} is not a section of a Markdown file or a line"


def broken(pages: list[Path], root: Path) -> list[str]:
    return [f"{link.page.relative_to(root)}:{link.line}: ({link.target}) {why}"
            for page in pages for link in links(page) if (why := problem(link, root))]


# ----------------------------------------------------------------------------- the checker itself


def test_the_checker_finds_what_is_broken_and_nothing_else(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "shot.png").write_bytes(b"\x89PNG")
    (tmp_path / "tool.py").write_text("print()\n")
    (tmp_path / "docs" / "page.md").write_text(
        "# The page\n\n## Speed and memory of `iggt-1b`\n\n## Which model: the `--checkpoint` forms\n\n"
        "## Ask questions (grounding)\n\n## Notes\n\n## Notes\n\nOther title\n-----------\n\n"
        "<a id=\"custom-spot\"></a>\n")
    (tmp_path / "README.md").write_text("""---
title: x
---
# Title

[ok](docs/page.md) [ok](docs/page.md#speed-and-memory-of-iggt-1b) [ok](docs/page.md#notes-1)
[ok](docs/page.md#which-model-the---checkpoint-forms) [ok](<docs/page.md#ask-questions-grounding> "title")
![ok](assets/shot.png) <img src="assets/shot.png" width="50%"> [ok](docs/) [ok](#title)
[ok](docs/page.md#other-title) [ok](docs/page.md#custom-spot) [ok](https://example.org/missing.md)
[ok][ref] [ok](tool.py#L3-L5)

[ref]: docs/page.md

`[not a link](missing-in-code-span.md)`

```markdown
[not a link](missing-in-code-block.md)
```

[broken](docs/missing.md) ![broken](assets/missing.png) [broken](docs/page.md#notes-2)
[broken](#nowhere) <a href="docs/gone.md">broken</a> [broken](../outside.md) [broken](assets/shot.png#frag)
""")
    problems = broken([tmp_path / "README.md", tmp_path / "docs" / "page.md"], tmp_path)
    assert [p.split(": (", 1)[1].split(")")[0] for p in problems] == [
        "docs/missing.md", "assets/missing.png", "docs/page.md#notes-2", "#nowhere", "docs/gone.md",
        "../outside.md", "assets/shot.png#frag"], problems
    assert problems[0].startswith("README.md:20: ")


def test_slugs_follow_githubs_rules():
    assert slug("IGGT: photos → 3D scene with consistent instances → answers") == \
        "iggt-photos--3d-scene-with-consistent-instances--answers"
    assert slug("The model and its checkpoints") == "the-model-and-its-checkpoints"
    assert slug("From Python (`gradio_client`)") == "from-python-gradio_client"
    assert slug("**Bold** and _em_ and [a link](x.md)") == "bold-and-em-and-a-link"


# ----------------------------------------------------------------------------- the real pages


def test_there_are_pages_to_check():
    assert REPO_ROOT / "README.md" in PAGES and len(PAGES) > 1
    assert sum(len(links(page)) for page in PAGES) > 20


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_resolves(page):
    problems = broken([page], REPO_ROOT)
    assert not problems, "broken links:\n" + "\n".join(problems)
