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
    text = (REPO / "README.md").read_text()
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


def _row(text: str, first_cells: tuple[str, ...], after: str) -> list[str]:
    """The cells of the first table row after ``after`` whose first cells are ``first_cells``."""
    start = text.index(after)
    for line in text[start:].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if tuple(cells[:len(first_cells)]) == first_cells:
            return cells
    raise AssertionError(f"no row {first_cells} after {after!r}")


def test_table_1_agrees_with_its_measurement_file():
    """The README's Table 1 (momentum protocol) is the rounding of its file's max, mean and std."""
    import json

    text = (REPO / "README.md").read_text()
    groups = json.loads((REPO / "docs/measurements/mnist-table1-shift2-e15-2026-11-29.json").read_text())
    for g in groups:
        cells = _row(text, (g["gradient"],), "| gradient | seeds | max | mean ± std | paper (20 runs)")
        assert cells[2] == f"{g['max']:.2f} %"
        assert cells[3].replace("**", "") == f"{g['mean']:.2f} ± {g['std']:.2f} %"
        assert len(cells[1].split(",")) == g["seeds"]


def test_table_1_under_algorithm_3_agrees_with_its_measurement_file():
    import json

    text = (REPO / "README.md").read_text()
    res = json.loads((REPO / "docs/measurements/mnist-table1-sgd-2026-12-01.json").read_text())
    for g in ("spike", "float"):
        cells = _row(text, ("Algorithm 3, lr 2e-4", g), "| protocol | gradient | seeds | max | mean ± std |")
        r = res[g]
        assert cells[2] == f"{min(r['seeds'])}-{max(r['seeds'])}" and len(r["seeds"]) == max(r["seeds"]) + 1
        assert cells[3] == f"{r['max']:.2f} %" and cells[4] == f"{r['mean']:.2f} ± {r['std']:.2f} %"
