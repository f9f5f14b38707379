"""The command line: conformance over every shared case, and one clear error line for bad input."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from launch.cli import main
from launch.tools.conformance import compare, load_case

REPO = Path(__file__).resolve().parents[2]


def spikegrad(*args, cwd=None):
    """Run the installed entry point if there is one, else the module, as a user would."""
    exe = shutil.which("spikegrad")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "launch.cli", *args]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd or REPO, env=env, timeout=300)


def cases(shared):
    return sorted(p for p in (shared / "conformance").glob("*.npz") if not p.name.endswith(".expected.npz"))


def test_every_shared_conformance_case(shared_dir, tmp_path, capsys):
    found = cases(shared_dir)
    assert found, "no conformance cases found"
    for case in found:
        out = tmp_path / f"{case.stem}.out.npz"
        assert main(["conformance", str(case), "--out", str(out)]) == 0
        expected = case.with_name(case.stem + ".expected.npz")
        assert compare(load_case(out), load_case(expected), atol=0.0) == [], case.name  # exactly


def test_conformance_expected_flag_fails_on_difference(shared_dir, tmp_path, capsys):
    case = cases(shared_dir)[0]
    exp = load_case(case.with_name(case.stem + ".expected.npz"))
    exp["V"] = exp["V"] + 1e-6
    bad = tmp_path / "bad.expected.npz"
    np.savez(bad, **exp)
    assert main(["conformance", str(case), "--out", str(tmp_path / "o.npz"), "--expected", str(bad)]) == 2
    assert "V: max |difference|" in capsys.readouterr().err


def _one_error_line(r):
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert len(lines) == 1 and lines[0].startswith("spikegrad: error:"), r.stderr
    return lines[0]


def test_bad_topology_one_line():
    line = _one_error_line(spikegrad("train", "--topology", "8x8-16Q3-10", "--epochs", "1"))
    assert "[16Q3]" in line


def test_unknown_option_one_line():
    line = _one_error_line(spikegrad("train", "--epochz", "3"))
    assert "--epochz" in line


def test_missing_data_file_one_line(tmp_path):
    line = _one_error_line(spikegrad("train", "--dataset", "mnist", "--data-dir", str(tmp_path)))
    assert "train-images-idx3-ubyte" in line


def test_corrupted_data_file_one_line(mnist_dir, tmp_path):
    for f in mnist_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    p = tmp_path / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(p.read_bytes())
    data[100] ^= 0xFF
    p.write_bytes(bytes(data))
    line = _one_error_line(spikegrad("train", "--dataset", "mnist", "--data-dir", str(tmp_path)))
    assert "t10k-labels" in line


def test_wrong_shaped_case_one_line(shared_dir, tmp_path):
    case = load_case(cases(shared_dir)[0])
    case["W0"] = case["W0"][:, :, :2]
    bad = tmp_path / "bad.npz"
    np.savez(bad, **case)
    line = _one_error_line(spikegrad("conformance", str(bad), "--out", str(tmp_path / "o.npz")))
    assert "W0" in line and "shape" in line


def test_pickled_case_refused(tmp_path):
    bad = tmp_path / "pickled.npz"
    np.savez(bad, topology=np.array([{"evil": 1}], dtype=object))
    line = _one_error_line(spikegrad("conformance", str(bad), "--out", str(tmp_path / "o.npz")))
    assert "pickle" in line


def test_missing_case_one_line(tmp_path):
    line = _one_error_line(spikegrad("conformance", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "o.npz")))
    assert "does not exist" in line


def test_every_config_field_has_its_train_option_and_every_option_its_field():
    """One name per setting: the CLI's train options are TrainConfig's fields (plus the options that
    act on a run rather than configure it), and their choices are the config's own enumerations."""
    import dataclasses

    from launch.cli import build_parser
    from launch.run.config import TrainConfig

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    train = sub.choices["train"]
    options = {a.dest: a for a in train._actions if a.dest != "help"}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    not_config = {"resume", "address", "allow_no_auth", "json", "quiet"}
    assert fields - set(options) == set(), "config fields without a train option"
    assert set(options) - fields - not_config == set(), "train options without a config field"
    import launch.run.config as config
    from cluster.network import GRADIENT_MODES
    from launch.data import DATASETS

    enums = {"backend": config.BACKENDS, "dtype": config.DTYPES, "engine": config.ENGINES, "wire": config.WIRES,
             "placement": config.PLACEMENTS, "schedule": config.SCHEDULES, "gradient": GRADIENT_MODES,
             "dataset": DATASETS}
    for name, values in enums.items():
        assert tuple(options[name].choices) == tuple(values), name
    assert set(config.DATASET_DEFAULTS) == set(DATASETS)


@pytest.mark.parametrize("args", [
    ["map", "--topology", "mnist", "--chip-neuron", "2000", "--chip-synapses", "100000"],  # --chip-neurons
    ["train", "--epoch", "1"],                                                              # --epochs
    ["bench", "chips", "--round", "1"],                                                     # --rounds
])
def test_abbreviated_options_are_refused(args, capsys):
    """argparse would take a unique prefix for the option: a typo would silently mean another flag."""
    from launch.cli import main

    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unrecognized arguments" in err[0], err
