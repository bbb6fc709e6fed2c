"""The documentation: README.md, docs/*.md and the model card.

Every relative link must reach a file of the repository, every in-page anchor a heading of its target,
every contents list must name every section, and the README's test command must be the one CI runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "weights" / "README.md"]

#: ``[text](target)`` and ``![alt](target)``; the target ends at the first space or closing parenthesis.
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked out of links' way."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else line)
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text without markup, lower case, punctuation dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(path: Path) -> list[tuple[int, str]]:
    found = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match:
            found.append((len(match.group(1)), match.group(2)))
    return found


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, text in headings(path):
        base = slug(text)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in enumerate(prose_lines(path.read_text(encoding="utf-8")), 1):
        line = re.sub(r"`[^`]*`(?![^\[]*\]\()", "", line)  # code spans, except inside a link's text
        found += [(number, match.group(1)) for match in LINK.finditer(line)]
    return found


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if root not in dest.parents and dest != root:
            problems.append(f"{where} leaves the repository")
        elif not dest.exists():
            problems.append(f"{where}: no such file")
        elif anchor:
            if dest.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not Markdown")
            elif anchor not in anchors(dest):
                problems.append(f"{where}: no heading with this anchor")
    return problems


def test_the_documents_exist() -> None:
    assert len(DOCS) > 3
    assert all(path.is_file() for path in DOCS)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    assert broken_links(path) == []


def test_the_checker_sees_a_broken_link_and_a_broken_anchor(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Top\n\n## Time use: `go`\n", encoding="utf-8")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#time-use-go) [bad](a.md#time) [gone](c.md) [web](https://x.org/y)\n"
                    "```\n[in code](nowhere.md)\n```\n`[span](nowhere.md)`\n", encoding="utf-8")
    assert broken_links(page, tmp_path) == ["b.md:1: a.md#time: no heading with this anchor", "b.md:1: c.md: no such file"]


def contents_section(path: Path) -> list[str] | None:
    """The anchors linked from the ``## Contents`` section, or None without one."""
    lines = prose_lines(path.read_text(encoding="utf-8"))
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "## Contents")
    except StopIteration:
        return None
    body = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        body.append(line)
    return re.findall(r"\]\(#([^)]+)\)", "\n".join(body))


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_a_long_document_lists_every_section_in_its_contents(path: Path) -> None:
    listed = contents_section(path)
    if listed is None:
        assert path.name != "README.md" or path.parent != REPO, "the README needs a contents list"
        assert len(path.read_text(encoding="utf-8").splitlines()) < 120 or path.parent == REPO / "weights", (
            f"{path.name} is long and has no '## Contents'")
        return
    sections = [slug(text) for level, text in headings(path) if level == 2 and text != "Contents"]
    assert [s for s in sections if s not in listed] == []
    assert [s for s in listed if s not in anchors(path)] == []


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    command = [line for line in ci.splitlines() if line.startswith("pip install") and "pytest" in line]
    assert len(command) == 1
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"```sh\n{command[0]}\n```" in readme


def code_blocks(path: Path) -> list[str]:
    """The fenced code blocks of a document, backslash continuations joined."""
    blocks, current, fenced = [], [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            if fenced:
                blocks.append("\n".join(current).replace("\\\n", " "))
            current, fenced = [], not fenced
        elif fenced:
            current.append(line)
    return blocks


def commands(path: Path, program: str) -> list[str]:
    """The command lines of the code blocks that run ``program``, without trailing comments."""
    found = []
    for block in code_blocks(path):
        for line in block.splitlines():
            words = line.split("#")[0].split()
            if program in words[:1] or (words[:1] == ["torchrun"] and program == "torchrun"):
                found.append(" ".join(words))
    return found


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_examples_name_files_a_clone_has(path: Path) -> None:
    """A command that reads the repository's own files must find them in a fresh clone: no paths into a
    data folder beside the checkout, and every ``tests/``, ``weights/``, ``docs/`` or ``lichess/`` path exists."""
    missing = []
    for block in code_blocks(path):
        assert "../shared" not in block, block
        for word in re.findall(r"(?<![\w./-])((?:tests|weights|docs|lichess)/[\w./-]+)", block):
            if word.startswith("weights/") and not word.startswith("weights/neuralengine."):
                continue  # an output folder of the example (``--out weights/``)
            if not (REPO / word.rstrip(".")).exists():
                missing.append(word)
    assert missing == []


def test_cpu_torchrun_examples_are_short() -> None:
    """A set-up check on CPUs runs a few steps, not the default 10,000."""
    runs = [c for p in DOCS for c in commands(p, "torchrun") if "--device cuda" not in c]
    assert runs
    assert [c for c in runs if "--steps" not in c] == []


def test_the_recipe_trains_the_shipped_model_kind() -> None:
    """The pipeline that says it made the shipped model trains with the model card's layout and ranking loss."""
    card = " ".join(commands(REPO / "weights" / "README.md", "neuralengine"))
    assert "--attention board_head" in card and "--rank-weight" in card
    recipe = [c for c in commands(REPO / "docs" / "training.md", "neuralengine") if c.split()[1:2] == ["train"]]
    assert recipe
    for command in recipe[:2]:
        assert "--attention board_head" in command or "--init" in command, command
        assert "--rank-weight 1" in command, command
