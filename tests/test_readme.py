"""The README's evidence exists: every file under docs/ it names (globs and {a,b} alternatives
expanded) is in the repository, so a number's source can always be opened."""

import itertools
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CITED = re.compile(r"docs/[A-Za-z0-9_./{},*-]*[A-Za-z0-9_/}*]")


def expand(path: str) -> list[str]:
    """``a{b,c}d`` -> [abd, acd] (several groups multiply)."""
    parts = re.split(r"(\{[^}]*\})", path)
    choices = [p[1:-1].split(",") if p.startswith("{") else [p] for p in parts]
    return ["".join(c) for c in itertools.product(*choices)]


def test_every_file_the_readme_cites_exists():
    """The README's and the docs' own pages (docs/*.md) alike."""
    text = "\n".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    cited = sorted(set(CITED.findall(text)))
    assert len(cited) > 20  # the README cites its measurements
    missing = []
    for path in cited:
        for one in expand(path):
            if "*" in one:
                if not list(REPO.glob(one)):
                    missing.append(one)
            elif not (REPO / one).exists():
                missing.append(one)
    assert not missing, f"README cites files that are not in the repository: {missing}"


def test_citations_are_expanded_and_a_missing_one_is_found(tmp_path):
    assert expand("docs/m/run{1,2}.{json,txt}") == ["docs/m/run1.json", "docs/m/run1.txt", "docs/m/run2.json",
                                                    "docs/m/run2.txt"]
    assert CITED.findall("see docs/measurements/x-2026.md, and (docs/figures/a.png).") == \
        ["docs/measurements/x-2026.md", "docs/figures/a.png"]
    assert not (REPO / "docs/measurements/no-such-file.md").exists()


def test_every_generated_table_agrees_with_its_measurement_files():
    """The README's result tables are exactly what launch.tools.readme_tables makes from the files in
    docs/measurements they come from (run it without --check to rewrite them)."""
    from launch.tools.readme_tables import TABLES, update

    text = (REPO / "README.md").read_text()
    named = set(re.findall(r"<!-- table ([\w-]+) -->", text))
    assert named == set(TABLES), f"README's generated tables {sorted(named)} vs known {sorted(TABLES)}"
    _, changed = update(text)
    assert not changed, f"tables that differ from their files: {changed}; run python -m launch.tools.readme_tables"


def test_a_table_edited_by_hand_is_found():
    from launch.tools.readme_tables import update

    text = (REPO / "README.md").read_text()
    block = text.index("<!-- table table1-momentum -->")
    edited = text[:block] + text[block:].replace("99.44 %", "99.54 %", 1)
    assert edited != text
    fixed, changed = update(edited)
    assert changed == ["table1-momentum"] and fixed == text


def test_every_module_is_named_in_the_layout():
    """The README's Layout block names every module of the three packages (by file name)."""
    text = (REPO / "README.md").read_text()
    start = text.index("## Layout")
    block = text[start:text.index("```", text.index("```", start) + 3)]
    named = set(re.findall(r"(?<![\w.])(\w+\.py)\b", block))  # whole names: ray_chip.py does not name chip.py
    missing = [str(p.relative_to(REPO)) for package in ("cluster", "actors", "launch")
               for p in sorted((REPO / package).rglob("*.py")) if p.name != "__init__.py" and p.name not in named]
    assert not missing, f"modules the README's Layout does not name: {missing}"
