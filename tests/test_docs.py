"""Every reference into the repository's docs resolves, and nothing points outside the repository.

- A reference ``docs/<file>.md`` or ``docs/<file>.md#<anchor>`` anywhere in ``fbhelpers/``, ``notebooks/`` (cell
  sources), ``benchmarks/``, ``tests/``, the README, ``docs/`` and the top-level files names a file that exists and,
  with an anchor, a heading of that file whose GitHub-style anchor is exactly that.
- Every relative Markdown link of the README and of ``docs/`` resolves (a file or folder, and the heading for
  ``#anchor``).
- The library, the notebooks, the README and the docs never cite documents that are not in the repository
  (``METHOD.md``, ``DESIGN.md``, ``REFERENCE.md``) nor issue numbers, which no clone can read.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".md", ".csv", ".yaml", ".yml", ".txt", ".json", ".toml", ".cfg", ".ini", ".sh"}
SCANNED = ("fbhelpers", "notebooks", "benchmarks", "tests", "docs")
TOP_FILES = ("README.md", "Makefile", "pyproject.toml", "data_manifest.yaml", "environment.yml")
REFERENCE = re.compile(r"docs/([\w.-]+?\.md)(?:#([\w-]+))?")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
FORBIDDEN = re.compile(r"METHOD\.md|DESIGN\.md|REFERENCE\.md|[Ii]ssue [0-9]")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: link and code markup dropped, lower case, every character that is not a
    letter, digit, underscore, hyphen or space removed, spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _outside_fences(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def anchors(path: Path) -> set[str]:
    """The GitHub anchors of a Markdown file's headings (a repeated heading gets -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in _outside_fences(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = github_anchor(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def _text_of(path: Path) -> str:
    """A file's text; for a notebook, its cells' sources only (outputs are not documentation)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        return "\n".join("".join(cell["source"]) for cell in json.loads(text)["cells"])
    return text


def scanned_files(root: Path, folders=SCANNED, top=TOP_FILES) -> list[Path]:
    files = [root / name for name in top if (root / name).is_file()]
    for folder in folders:
        files += sorted(p for p in (root / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts
                        and (p.suffix in TEXT_SUFFIXES or p.suffix == ".ipynb"))
    return [p for p in files if p != Path(__file__).resolve()]  # this file's examples are meant to fail


def _target_problem(root: Path, file: Path, anchor: str | None, cache: dict[Path, set[str]]) -> str | None:
    if not file.exists():
        return f"{file.relative_to(root) if file.is_relative_to(root) else file} does not exist"
    if anchor is None:
        return None
    if file.suffix != ".md":
        return f"an anchor into {file.name}, which is not Markdown"
    if file not in cache:
        cache[file] = anchors(file)
    if anchor not in cache[file]:
        return f"{file.relative_to(root)} has no heading with anchor #{anchor}"
    return None


def reference_problems(root: Path, files: list[Path]) -> list[str]:
    """Every ``docs/<file>.md[#anchor]`` reference in ``files`` that does not resolve, as 'path:line: reference: why'."""
    problems, cache = [], {}
    for path in files:
        for number, line in enumerate(_text_of(path).splitlines(), 1):
            for m in REFERENCE.finditer(line):
                why = _target_problem(root, root / "docs" / m.group(1), m.group(2), cache)
                if why:
                    problems.append(f"{path.relative_to(root)}:{number}: {m.group(0)}: {why}")
    return problems


def link_problems(root: Path, files: list[Path]) -> list[str]:
    """Every relative Markdown link of ``files`` (outside code blocks) that does not resolve."""
    problems, cache = [], {}
    for path in files:
        for number, line in _outside_fences(path.read_text(encoding="utf-8")):
            for m in LINK.finditer(line):
                target = m.group(1)
                if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                name, _, anchor = target.partition("#")
                file = (path.parent / name).resolve() if name else path
                why = _target_problem(root, file, anchor or None, cache)
                if why:
                    problems.append(f"{path.relative_to(root)}:{number}: ({target}): {why}")
    return problems


def forbidden_problems(root: Path, files: list[Path]) -> list[str]:
    """Every line of ``files`` that cites a document outside the repository or an issue number."""
    return [f"{path.relative_to(root)}:{number}: {line.strip()[:120]}"
            for path in files for number, line in enumerate(_text_of(path).splitlines(), 1)
            if FORBIDDEN.search(line)]


def _markdown_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# ------------------------------------------------------------------------------------------- the repository
def test_the_docs_exist():
    for name in ("method", "design", "datasets", "results", "performance"):
        assert (ROOT / "docs" / f"{name}.md").is_file()


def test_every_docs_reference_resolves():
    files = scanned_files(ROOT)
    assert len(files) > 100  # the whole tree, not one folder
    assert reference_problems(ROOT, files) == []


def test_every_relative_link_of_the_readme_and_docs_resolves():
    assert link_problems(ROOT, _markdown_files(ROOT)) == []


def test_nothing_cites_a_document_outside_the_repository_or_an_issue():
    files = scanned_files(ROOT, folders=("fbhelpers", "notebooks", "docs"), top=("README.md",))
    assert forbidden_problems(ROOT, files) == []


# ------------------------------------------------------------------------------------------- the checks themselves
def test_github_anchor_of_headings():
    assert github_anchor("Zero-shot and few-shot") == "zero-shot-and-few-shot"
    assert github_anchor("Aff-Wild2 (ABAW)") == "aff-wild2-abaw"
    assert github_anchor("Distribution matching, class to attributes") == "distribution-matching-class-to-attributes"
    assert github_anchor("`fit`'s options: [see](x.md)") == "fits-options-see"
    assert github_anchor("Multi-label task: masked BCE") == "multi-label-task-masked-bce"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A tiny repository: docs/a.md with two headings (one repeated) and a fenced block that looks like one."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Real heading\n\n```bash\n# not a heading\n```\n\n"
                                            "## Real heading\n\nSee [b](b.md) and [here](#real-heading-1).\n")
    (tmp_path / "fbhelpers").mkdir()
    return tmp_path


def test_a_good_reference_passes(tree):
    (tree / "fbhelpers" / "m.py").write_text('"""See docs/a.md#real-heading and docs/a.md#real-heading-1."""\n')
    assert reference_problems(tree, scanned_files(tree, folders=("fbhelpers",), top=())) == []


def test_a_reference_to_a_missing_heading_or_file_fails(tree):
    (tree / "fbhelpers" / "m.py").write_text('"""docs/a.md#not-a-heading, docs/a.md#not-a-heading.\n'
                                             'docs/missing.md, and docs/a.md#a."""\n')
    problems = reference_problems(tree, scanned_files(tree, folders=("fbhelpers",), top=()))
    assert problems == ["fbhelpers/m.py:1: docs/a.md#not-a-heading: docs/a.md has no heading with anchor #not-a-heading",
                        "fbhelpers/m.py:1: docs/a.md#not-a-heading: docs/a.md has no heading with anchor #not-a-heading",
                        "fbhelpers/m.py:2: docs/missing.md: docs/missing.md does not exist"]


def test_a_heading_inside_a_code_block_is_no_anchor(tree):
    assert anchors(tree / "docs" / "a.md") == {"a", "real-heading", "real-heading-1"}


def test_a_notebook_reference_is_read_from_its_cells(tree):
    (tree / "notebooks").mkdir()
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["Read docs/a.md#gone.\n"]}]
    (tree / "notebooks" / "n.ipynb").write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                                            "nbformat_minor": 5}))
    problems = reference_problems(tree, scanned_files(tree, folders=("notebooks",), top=()))
    assert problems == ["notebooks/n.ipynb:1: docs/a.md#gone: docs/a.md has no heading with anchor #gone"]


def test_a_broken_relative_link_fails(tree):
    assert link_problems(tree, [tree / "docs" / "a.md"]) == ["docs/a.md:11: (b.md): docs/b.md does not exist"]
    (tree / "docs" / "b.md").write_text("# B\n")
    assert link_problems(tree, [tree / "docs" / "a.md"]) == []
    (tree / "docs" / "a.md").write_text("[x](b.md#nowhere) [y](#nowhere)\n")
    assert link_problems(tree, [tree / "docs" / "a.md"]) == [
        "docs/a.md:1: (b.md#nowhere): docs/b.md has no heading with anchor #nowhere",
        "docs/a.md:1: (#nowhere): docs/a.md has no heading with anchor #nowhere"]


def test_an_outside_document_or_an_issue_number_fails(tree):
    (tree / "fbhelpers" / "m.py").write_text('"""Loss (METHOD.md §3).\nFixed in issue 12.\nREFERENCE.md\nfine"""\n')
    problems = forbidden_problems(tree, scanned_files(tree, folders=("fbhelpers",), top=()))
    assert [p.split(":")[1] for p in problems] == ["1", "2", "3"]
