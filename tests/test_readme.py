"""The README as a first page: at most 300 lines, every link lands where it says (a
``file:function`` link on the line that defines that function), and every ``python -m
minispanbert.X`` command it or docs/ names exists."""
import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[([^\]]*)\]\(([^)#\s]+)(?:#L(\d+))?\)")
COMMAND = re.compile(r"python -m (minispanbert(?:\.[a-z_]\w*)+)")


def test_the_readme_is_a_first_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move detail to docs/"
    assert not [line for line in lines if "{{" in line], "an unfilled placeholder"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_land_on_what_they_name(page):
    for text, target, line in LINK.findall(page.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://")):
            continue
        path = (page.parent / target).resolve()
        assert path.exists(), f"{page.name}: {target} does not exist"
        if line:
            name = text.strip("`").rsplit(":", 1)[-1]
            source = path.read_text(encoding="utf-8").splitlines()
            defined = {node.name: node.lineno for node in ast.walk(ast.parse("\n".join(source)))
                       if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
            assert defined.get(name) == int(line), (
                f"{page.name}: {text} links to line {line}, but {name} is defined at line {defined.get(name)}")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_named_exists(page):
    for module in set(COMMAND.findall(page.read_text(encoding="utf-8"))):
        assert importlib.util.find_spec(module) is not None, f"{page.name}: python -m {module} does not exist"


def test_the_core_table_counts_the_lines_it_names():
    """The "lines (`wc -l`)" column of the core table: a file's lines, a folder's .py files (its
    ``__main__.py`` entry point aside), or the sum of the files a cell lists."""
    rows = re.findall(r"^\| \[`([^`]+)`\]\(([^)]+)\) \| (\d+) \|", (ROOT / "README.md").read_text(encoding="utf-8"),
                      flags=re.MULTILINE)
    assert len(rows) >= 10, "the core table moved: update this test"
    for text, target, count in rows:
        base = ROOT / target
        if base.is_dir():
            files = [p for p in base.glob("*.py") if p.name != "__main__.py"]
        else:
            files = [base.parent / name.strip().rsplit("/", 1)[-1] for name in text.split(",")]
        lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in files)
        assert lines == int(count), f"README core table: {text} has {lines} lines, the table says {count}"
