"""NIR export and import (launch/tools/nir.py, nir_import.py): the round trip, a graph built with the nir package's own
constructors, graphs SpikeGrad cannot train, and damaged files, all through real HDF5 files and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from launch.cli import main
from launch.run.rundir import RunDir

nir = pytest.importorskip("nir", reason="the nir package (extra [nir], in [test]) is not installed")
h5py = pytest.importorskip("h5py", reason="h5py comes with nir")

from launch.tools.nir_import import MAX_ELEMENTS, load_nir  # noqa: E402

TRAIN = ["train", "--engine", "local", "--epochs", "1", "--weight-frac-bits", "12", "--quiet"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """A short digits run on the fixed-point grid and its NIR export: (run dir, model.nir)."""
    d = tmp_path_factory.mktemp("nir")
    assert main([*TRAIN, "--limit-train", "300", "--out", str(d / "run")]) == 0
    assert main(["export", str(d / "run"), "--to", str(d / "model.nir")]) == 0
    return d / "run", d / "model.nir"


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if line.startswith("spikegrad: error: ")]
    assert len(lines) == 1 and "Traceback" not in "\n".join(err), err
    return lines[0]


def test_round_trip_same_topology_bit_identical_weights_same_accuracy(exported, capsys):
    run_dir, model = exported
    run = RunDir(run_dir)
    topo = run.read_config().topo
    ckpt = run.read_checkpoint()
    imp = load_nir(model)
    assert imp.topology.text == topo.text and imp.theta_ff == run.read_config().theta_ff
    for t, l in enumerate(topo.trainable):
        for key, got in (("W", imp.params[l][0]), ("b", imp.params[l][1])):
            want = ckpt[f"{key}{t}"]
            assert np.array_equal(got.astype(want.dtype), want) and got.astype(want.dtype).tobytes() == want.tobytes()
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run_dir), "--json"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(["eval", "--checkpoint", str(model), "--json"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert a["test_accuracy"] == b["test_accuracy"] and a["images"] == b["images"] == 360
    assert b["dataset"] == "digits" and b["epochs_done"] == 1


def test_export_graph_says_what_it_assumes(exported):
    _, model = exported
    g = nir.read(model)
    assert [type(n).__name__ for n in g.nodes.values()].count("IF") == 3  # conv, pool, dense; not the output
    assert g.metadata["topology"] == "8x8-16C3p1-P2-64-10" and g.metadata["format"] == "spikegrad-nir/1"
    assert g.metadata["exact_arithmetic"] == 1 and g.metadata["weight_frac_bits"] == 12
    for key in ("reset", "bias", "not_representable", "exact_when", "producer"):
        assert isinstance(g.metadata[key], str) and g.metadata[key]
    assert np.asarray(g.metadata["theta_ff"]).shape == (4,)
    pool = g.nodes["l1_pool"]  # the paper's linear IF layer: Θff/k² on the channel diagonal, bias Θff/2
    assert tuple(pool.stride) == (2, 2) and pool.weight[3, 3, 0, 0] == 0.25 / 4 and pool.weight[3, 4].sum() == 0
    assert (pool.bias == 0.125).all()
    with h5py.File(model) as f:  # no v_reset: nir <= 1.0.5 (Sinabs 3.1.3) reads the subtractive-reset IF
        assert all("v_reset" not in f[f"node/nodes/{n}"] for n in ("l0_if", "l1_if", "l2_if"))
    assert (g.nodes["l0_if"].v_reset == 0).all()  # and nir 1.0.8 reads it as 0


def test_train_from_a_nir_graph_starts_from_its_weights(exported, tmp_path):
    _, model = exported
    out = tmp_path / "again"
    # a learning rate far below the 2⁻¹² grid: every update rounds away, so the run ends where it started
    assert main([*TRAIN, "--topology", str(model), "--limit-train", "64", "--lr", "1e-30", "--out", str(out)]) == 0
    cfg = RunDir(out).read_config()
    assert cfg.topology == "8x8-16C3p1-P2-64-10" and cfg.init_from == str(model.resolve())
    imp, ckpt = load_nir(model), RunDir(out).read_checkpoint()
    for t, l in enumerate(cfg.topo.trainable):
        assert np.array_equal(ckpt[f"W{t}"], imp.params[l][0]) and np.array_equal(ckpt[f"b{t}"], imp.params[l][1])


def test_init_from_refuses_a_different_topology_or_threshold(exported, tmp_path, capsys):
    _, model = exported
    assert main([*TRAIN, "--init-from", str(model), "--topology", "8x8-16C3-10", "--out", str(tmp_path / "a")]) == 2
    assert "differs from the topology" in _error(capsys)
    assert main([*TRAIN, "--init-from", str(model), "--theta-ff", "1", "--out", str(tmp_path / "b")]) == 2
    assert "differs from the IF threshold" in _error(capsys)


def _foreign(path: Path, *, leak: bool = False, delay: bool = False, branch: bool = False) -> dict:
    """A graph written with the nir package's own constructors (not our exporter): Conv2d → IF →
    SumPool2d → Flatten → Affine → IF → Affine, threshold 0.5, weights on the 2⁻¹² grid."""
    rng = np.random.default_rng(1)
    conv_w = np.round(rng.normal(0, 0.5, (4, 1, 3, 3)) * 4096) / 4096
    hid_w = np.round(rng.normal(0, 0.2, (12, 64)) * 4096) / 4096
    out_w = np.round(rng.normal(0, 0.3, (10, 12)) * 4096) / 4096
    thr = 0.5
    neuron = (lambda shape: nir.LIF(tau=np.full(shape, 0.02), r=np.ones(shape), v_leak=np.zeros(shape),
                                    v_threshold=np.full(shape, thr))) if leak else \
        (lambda shape: nir.IF(r=np.ones(shape), v_threshold=np.full(shape, thr)))
    nodes = {
        "in": nir.Input(input_type={"input": np.array([1, 8, 8])}),
        "conv": nir.Conv2d(input_shape=(8, 8), weight=conv_w, stride=1, padding=1, dilation=1, groups=1,
                           bias=np.full(4, 0.25)),
        "spk1": neuron((4, 8, 8)),
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=0),
        "fc": nir.Affine(weight=hid_w, bias=np.zeros(12)),
        "spk2": nir.IF(r=np.ones(12), v_threshold=np.full(12, thr)),
        "fc_out": nir.Affine(weight=out_w, bias=np.zeros(10)),
        "out": nir.Output(output_type={"output": np.array([10])}),
    }
    chain = list(nodes)
    if delay:
        nodes["wait"] = nir.Delay(delay=np.ones(12))
        chain.insert(chain.index("spk2") + 1, "wait")
    edges = list(zip(chain[:-1], chain[1:]))
    if branch:  # a recurrent hidden layer: its spikes come back through a 12×12 Linear
        nodes["rec"] = nir.Linear(weight=np.eye(12))
        edges += [("spk2", "rec"), ("rec", "spk2")]
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges))
    return {"conv": conv_w, "fc": hid_w, "fc_out": out_w}


def test_foreign_graph_written_with_nir_constructors_trains(tmp_path, capsys):
    path = tmp_path / "foreign.nir"
    weights = _foreign(path)
    imp = load_nir(path)
    assert imp.topology.text == "8x8-4C3p1-P2-12-10" and imp.theta_ff == 0.5
    assert np.array_equal(imp.params[0][0], weights["conv"]) and (imp.params[0][1] == 0.25 - 0.25).all()
    assert np.array_equal(imp.params[3][1], np.zeros(10))  # the output layer's bias carries no offset
    assert any("SumPool2d" in n for n in imp.notes)
    out = tmp_path / "run"
    assert main([*TRAIN, "--topology", str(path), "--lr", "1e-30", "--limit-train", "64", "--out", str(out)]) == 0
    assert "SumPool2d read as SpikeGrad's average pooling" in capsys.readouterr().err
    ckpt = RunDir(out).read_checkpoint()
    assert np.array_equal(ckpt["W2"], weights["fc_out"]) and np.array_equal(ckpt["b1"], np.full(12, -0.25))
    assert RunDir(out).read_config().theta_ff == 0.5


@pytest.mark.parametrize("kind, message", [
    (dict(leak=True), "node spk1 (LIF) is a leaky neuron"),
    (dict(delay=True), "node wait (Delay) is a delay"),
    (dict(branch=True), "SpikeGrad trains a chain of layers (no branches, no recurrence)"),
])
def test_graphs_spikegrad_cannot_train_are_refused_naming_the_node(tmp_path, capsys, kind, message):
    path = tmp_path / "g.nir"
    _foreign(path, **kind)
    assert main([*TRAIN, "--topology", str(path), "--out", str(tmp_path / "r")]) == 2
    assert message in _error(capsys)
    assert not (tmp_path / "r").exists()


def _damaged(exported: Path, tmp_path: Path, how: str) -> Path:
    path = tmp_path / f"{how}.nir"
    shutil.copy(exported, path)
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
        return path
    with h5py.File(path, "r+") as f:
        nodes = f["node/nodes"]
        if how == "unknown":
            del nodes["l2_if/type"]
            nodes["l2_if"].create_dataset("type", data="Spiky", dtype=h5py.string_dtype())
        elif how == "shapes":
            del nodes["l3_affine/weight"]
            nodes["l3_affine"].create_dataset("weight", data=np.zeros((10, 63), np.float32))
        elif how == "nan":
            w = nodes["l2_affine/weight"][()]
            w[5, 7] = np.nan
            nodes["l2_affine/weight"][...] = w
        elif how == "huge":  # a header claiming 10⁹ elements; never written, so the file stays small
            del nodes["l2_affine/weight"]
            nodes["l2_affine"].create_dataset("weight", shape=(1000, 1_000_000), dtype=np.float32,
                                              chunks=(1, 1024), compression="gzip")
        elif how == "huge-input":  # an Input claiming a 40000×25000 map: refused before any layer is built
            del nodes["input/shape"]
            nodes["input"].create_dataset("shape", data=np.array([1, 40000, 25000]))
    return path


@pytest.mark.parametrize("how, message", [
    ("truncated", "is not a readable NIR (HDF5) file"),
    ("unknown", "has unknown type 'Spiky'"),
    ("shapes", "node l3_affine (Affine): weight shape (10, 63), expected (N_out, 64)"),
    ("nan", "node l2_affine: weight has 1 NaN or infinite values"),
    ("huge", f"claims shape (1000, 1000000) (1e+09 elements), more than {MAX_ELEMENTS:,} per array"),
    ("huge-input", f"node input (Input): shape [1, 40000, 25000] has more than {MAX_ELEMENTS:,} elements"),
])
def test_bad_nir_files_are_refused_with_one_error_line(exported, tmp_path, capsys, how, message):
    path = _damaged(exported[1], tmp_path, how)
    assert path.stat().st_size < 1_000_000
    for args in (["eval", "--checkpoint", str(path)], [*TRAIN, "--topology", str(path), "--out", str(tmp_path / "r")]):
        assert main(args) == 2
        assert message in _error(capsys)


def test_export_refuses_what_it_cannot_read_or_write(exported, tmp_path, capsys):
    run_dir, _ = exported
    assert main(["export", str(tmp_path / "none"), "--to", str(tmp_path / "x.nir")]) == 2
    assert "is not a run directory" in _error(capsys)
    assert main(["export", str(run_dir), "--to", str(tmp_path / "x.h5")]) == 2
    assert "ending in .nir" in _error(capsys)
    assert main(["export", str(run_dir), "--to", str(tmp_path / "missing" / "x.nir")]) == 2
    assert "cannot write" in _error(capsys)
