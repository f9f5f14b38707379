"""Training end to end: digits, a real MNIST slice, determinism, run directory, eval."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from launch.cli import main
from launch.run.config import make_config
from launch.run.runs import evaluate_run, train


def test_digits_default_learns(tmp_path):
    summary = train(make_config("digits", engine="local", out=str(tmp_path / "run")), progress=False,
                    log=lambda s: None)
    assert summary["test_accuracy"] >= 95.0
    run = tmp_path / "run"
    for name in ("config.json", "metrics.parquet", "layers.parquet", "checkpoint.npz", "summary.json"):
        assert (run / name).is_file(), name
    metrics = pq.read_table(run / "metrics.parquet").to_pylist()
    assert [m["epoch"] for m in metrics] == list(range(1, 11))
    layers = pq.read_table(run / "layers.parquet").to_pylist()
    assert {r["layer"] for r in layers} == {0, 1, 2, 3}
    # the backward pass is sparse: fewer accumulations than the ANN's MACs
    assert 0 < metrics[-1]["rel_synops_backward"] < 1
    with np.load(run / "checkpoint.npz", allow_pickle=False) as z:
        assert {"W0", "b0", "W1", "b1", "W2", "b2"} <= set(z.files)
    again = evaluate_run(str(run), progress=False)
    assert again["test_accuracy"] == pytest.approx(summary["test_accuracy"])


def test_same_seed_same_weights_bit_for_bit(tmp_path):
    kw = dict(epochs=2, limit_train=400, engine="local")
    train(make_config("digits", out=str(tmp_path / "a"), **kw), progress=False, log=lambda s: None)
    train(make_config("digits", out=str(tmp_path / "b"), **kw), progress=False, log=lambda s: None)
    train(make_config("digits", out=str(tmp_path / "c"), seed=1, **kw), progress=False, log=lambda s: None)
    with np.load(tmp_path / "a" / "checkpoint.npz") as a, np.load(tmp_path / "b" / "checkpoint.npz") as b, \
            np.load(tmp_path / "c" / "checkpoint.npz") as c:
        for k in a.files:
            assert np.array_equal(a[k], b[k]), k
        assert not np.array_equal(a["W0"], c["W0"])


def test_float_gradient_baseline_learns(tmp_path):
    s = train(make_config("digits", engine="local", out=str(tmp_path / "f"), gradient="float", epochs=5),
              progress=False, log=lambda s: None)
    assert s["test_accuracy"] >= 90.0


def test_mnist_slice_real_data(mnist_dir, tmp_path):
    """The whole path on real MNIST: 3000 training images, 1 epoch, 1000 test images."""
    s = train(make_config("mnist", engine="local", data_dir=str(mnist_dir), epochs=1, limit_train=3000, limit_test=1000,
                          out=str(tmp_path / "m")), progress=False, log=lambda s: None)
    assert s["test_accuracy"] >= 80.0  # 84 % measured; chance is 10 %


def test_cli_json_line(tmp_path, capsys):
    assert main(["train", "--engine", "local", "--epochs", "1", "--limit-train", "200", "--limit-test", "50",
                 "--quiet", "--json", "--out", str(tmp_path / "j")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    d = json.loads(out[0])
    for key in ("test_accuracy", "train_seconds", "images_per_second", "engine", "run_dir"):
        assert key in d
    assert d["engine"] == "local"


def test_run_dir_is_not_overwritten(tmp_path, capsys):
    args = ["train", "--engine", "local", "--epochs", "1", "--limit-train", "64", "--quiet", "--out",
            str(tmp_path / "r")]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_eval_cli(tmp_path, capsys):
    assert main(["train", "--engine", "local", "--epochs", "1", "--limit-train", "200", "--quiet", "--out",
                 str(tmp_path / "e")]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "e"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["images"] == 360 and 0 <= d["test_accuracy"] <= 100
    assert main(["eval", "--checkpoint", str(tmp_path / "nothing")]) == 2


def test_fixed_point_weights_stay_on_the_grid(tmp_path):
    s = train(make_config("digits", engine="local", epochs=2, limit_train=300, weight_frac_bits=10,
                          out=str(tmp_path / "fx")), progress=False, log=lambda s: None)
    assert s["test_accuracy"] > 50
    with np.load(tmp_path / "fx" / "checkpoint.npz") as z:
        for t in range(3):
            for k in (f"W{t}", f"b{t}"):
                scaled = z[k].astype(np.float64) * 2 ** 10
                assert np.array_equal(scaled, np.round(scaled)), k


def test_validation_split_and_shift_augmentation(tmp_path):
    """--validation holds out the last N training images (scored every epoch, never trained on);
    --shift moves training images, so it changes the weights, and the same seed repeats them."""
    kw = dict(engine="local", epochs=2, limit_train=600, validation=100, limit_test=60)
    runs = {}
    for name, shift in (("a", 1), ("b", 1), ("plain", 0)):
        runs[name] = train(make_config("digits", out=str(tmp_path / name), shift=shift, **kw), progress=False,
                           log=lambda s: None)
    metrics = pq.read_table(tmp_path / "a" / "metrics.parquet").to_pylist()
    assert [m["images"] for m in metrics] == [500, 500]
    assert all(0 <= m["val_accuracy"] <= 100 for m in metrics)
    assert runs["a"]["val_accuracy"] == metrics[-1]["val_accuracy"]
    with np.load(tmp_path / "a" / "checkpoint.npz") as a, np.load(tmp_path / "b" / "checkpoint.npz") as b, \
            np.load(tmp_path / "plain" / "checkpoint.npz") as p:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
        assert not np.array_equal(a["W0"], p["W0"])
    plain = train(make_config("digits", engine="local", epochs=1, limit_train=100, out=str(tmp_path / "n")),
                  progress=False, log=lambda s: None)
    assert plain["val_accuracy"] is None


@pytest.mark.parametrize("args, message", [
    (["--validation", "600", "--limit-train", "600"], "validation (600) must be smaller than limit_train (600)"),
    (["--shift", "-1"], "expected an integer >= 0, got -1"),
    (["--validation", "x"], "expected an integer >= 0, got 'x'"),
])
def test_validation_and_shift_errors(tmp_path, capsys, args, message):
    assert main(["train", "--engine", "local", *args, "--out", str(tmp_path / "e")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_local_engine_runs_where_ray_cannot_be_imported(tmp_path):
    """The GPU machine has no Ray: --engine local (and the GPU check) must never import it."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['ray'] = None\n"
            "from launch.cli import main\n"
            f"sys.exit(main(['train', '--engine', 'local', '--epochs', '1', '--limit-train', '64', '--quiet', "
            f"'--out', {str(tmp_path / 'r')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "r" / "checkpoint.npz").is_file()


def test_a_run_that_never_starts_leaves_no_folder(tmp_path, monkeypatch, capsys):
    """Bad data: one error line, and neither the default run directory nor its runs/ parent stays
    behind; a folder that existed before is left as it was."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "none"), "--quiet"]) == 2
    assert "expected an existing data directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "none"), "--quiet",
                 "--out", str(tmp_path / "mine" / "a" / "b")]) == 2
    assert [p.name for p in tmp_path.rglob("*")] == ["mine"]


def test_epoch_cosine_changes_the_learning_rate_once_per_epoch():
    """--schedule epoch-cosine (the accumulate-only protocol): one factor per epoch, the cosine's value at
    the epoch's start; cosine changes every batch."""
    from launch.run.config import make_config
    from launch.run.driver import lr_factor

    cfg = make_config("digits", engine="local", epochs=4, schedule="epoch-cosine", momentum=0.0)
    per_epoch = [{lr_factor(cfg, e, s, 10) for s in range(10)} for e in range(4)]
    assert all(len(f) == 1 for f in per_epoch)
    assert [f.pop() for f in per_epoch] == pytest.approx([1.0, 0.8535533905932737, 0.5, 0.14644660940672627])
    cos = make_config("digits", engine="local", epochs=4)
    assert len({lr_factor(cos, 0, s, 10) for s in range(10)}) == 10
