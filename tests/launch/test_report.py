"""spikegrad report on real runs: the figures are PNGs with content, the summary has Table 1."""

import json

from launch.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_from_two_runs(tmp_path, capsys):
    runs = []
    for name, extra in (("a50", ["--alpha", "50"]), ("a100", ["--alpha", "100"]),
                        ("a100s1", ["--alpha", "100", "--seed", "1"]), ("shifted", ["--shift", "1"]),
                        ("a100again", ["--alpha", "100"])):
        run = tmp_path / name
        assert main(["train", "--engine", "local", "--epochs", "2", "--limit-train", "200", "--limit-test", "60",
                     *extra, "--quiet", "--out", str(run)]) == 0
        runs.append(str(run))
    out = tmp_path / "report"
    assert main(["report", *runs, "--out", str(out)]) == 0
    capsys.readouterr()
    for name in ("fig1_backward_synops.png", "fig2_layers_a50.png", "fig2_layers_a100.png", "accuracy.png",
                 "loss.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000, name
    summary = (out / "summary.md").read_text()
    assert "| a50 | digits | spike | 50 | 0 | 2 |" in summary and "Table 1" in summary
    t1 = json.loads((out / "table1.json").read_text())
    # runs that differ only in the seed are one protocol; another --shift is another one; a run that
    # repeats seed 0 of its protocol is reported, not counted as a third seed
    assert sorted((g["alpha"], g["shift"], g["seeds"], g["runs"]) for g in t1) == \
        [(50.0, 0, 1, 1), (100.0, 0, 2, 3), (100.0, 1, 1, 1)]
    group = next(g for g in t1 if g["alpha"] == 100.0 and g["shift"] == 0)
    assert group["seed_list"] == [0, 1] and [r["run"] for r in group["repeated"]] == ["a100again"]
    assert group["repeated"][0]["counted"] == "a100"
    assert "a100again: seed 0" in summary and "not counted as more seeds" in summary
    assert main(["report", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "config.json is missing" in capsys.readouterr().err
