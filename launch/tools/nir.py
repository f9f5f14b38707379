"""Networks that travel: a run's checkpoint as a NIR graph (export), and what both directions share.

NIR (the Neuromorphic Intermediate Representation, package ``nir``, the ``[nir]`` extra) is the
HDF5 format Sinabs, Norse, snnTorch, Spyx, Lava and SpiNNaker 2 read and write.

**Export** (:func:`export_run`, ``spikegrad export RUN_DIR --to model.nir``). The graph is chosen so
that a simulator whose IF neuron resets by *subtraction* and may emit *several spikes per step*
(Sinabs' ``IAF``: ``MembraneSubtract`` + ``MultiSpike``), run for **one time step with the whole
input**, gives exactly the equivalent ANN's integer counts:

==============  ===========================================================================
layer           nodes
==============  ===========================================================================
input           ``Input`` (C, H, W): the float input x as the dataset loader scales it
conv ``NCk``    ``Conv2d`` (stride 1, padding p, bias b + Θff/2) → ``IF`` (r 1, threshold Θff, no v_reset)
pool ``Pk``     ``Conv2d`` (stride k, weights Θff/k² on the channel diagonal, bias Θff/2) → ``IF``:
                the paper's linear IF layer (Algorithm 1), so that its rounding happens there
dense ``N``     ``Flatten`` (after a map) → ``Affine`` (bias b + Θff/2) → ``IF``
output          ``Affine`` (bias b), no neuron: its output is Vᴸ, the potentials; argmax predicts
==============  ===========================================================================

Why Θff/2: in one step an IF neuron with subtractive reset and several spikes per step emits
floor(v / Θff) spikes for v ≥ 0 and none below, and floor((W S + b + Θff/2) / Θff) =
max(0, round(Ŝ)) with round half away from zero, Eq. (15) (Ŝ = (W S + b)/Θff; at Ŝ = n − ½ both give n).
NIR ≥ 1.0.6's IF resets *to* ``v_reset``; the IF nodes are written without it, which nir ≤ 1.0.5
reads as the subtractive reset assumed here (:func:`write_graph`). NIR biases are added at *every* step: for
T steps a reader gives x/T and bias/T per step; the counts then differ where SpikeGrad would
send a −1 spike (README, *Using a trained network elsewhere*). All of this is written into the
graph's metadata (:func:`graph_metadata`).

**Import** (``spikegrad train --topology model.nir``, ``--init-from``, ``eval``): the graph as a
topology with initial weights, in :mod:`launch.tools.nir_import`.
"""

from __future__ import annotations

import io
import math
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from cluster.errors import SpikeGradError
from cluster.topology import Conv, Dense, Pool, Topology

from ..files import write_atomic
from ..run.driver import check_progress, check_state_arrays
from ..run.rundir import RunDir

FORMAT = "spikegrad-nir/1"


def require_nir() -> Any:
    """The ``nir`` module, or an error naming the extra that installs it."""
    try:
        import nir  # noqa: PLC0415  (nir: an optional extra)
    except ImportError:
        raise SpikeGradError("NIR files need the 'nir' package: pip install -e '.[nir]'") from None
    return nir


def project_version() -> str:

    try:
        return version("spikegrad-cluster")
    except PackageNotFoundError:
        return "unknown"


# -- export --------------------------------------------------------------------------------------

def _offset_bias(b: np.ndarray, theta_ff: float, node: str) -> np.ndarray:
    """b + Θff/2 in float64, checked to give b back exactly on import (else NIR cannot carry it)."""
    out = b.astype(np.float64) + theta_ff / 2
    if not np.array_equal((out - theta_ff / 2).astype(b.dtype), b):
        raise SpikeGradError(f"{node}: the bias plus the rounding offset theta_ff/2 = {theta_ff / 2:g} cannot be "
                             f"held exactly in float64 (|b| up to {float(np.abs(b).max()):.3g}); NIR cannot carry "
                             f"this checkpoint's biases bit for bit")
    return out


def _if_node(nir: Any, shape: tuple[int, ...], theta_ff: float) -> Any:
    return nir.IF(r=np.ones(shape), v_threshold=np.full(shape, float(theta_ff)), v_reset=np.zeros(shape))


def graph_metadata(topo: Topology, theta_ff: float, theta_bp: float, extra: dict[str, Any]) -> dict[str, Any]:
    """What a reader needs to run the graph as SpikeGrad does, and what NIR cannot say."""
    L = len(topo.layers) - 1
    meta: dict[str, Any] = {
        "format": FORMAT,
        "producer": f"spikegrad-cluster {project_version()}",
        "topology": topo.text,
        "theta_ff": np.full(L + 1, float(theta_ff)),
        "theta_bp": np.full(L + 1, float(theta_bp)),
        "time_steps": 1,
        "exact_when": "one time step with the whole input x; IF with subtractive reset (v -= v_threshold per "
                      "spike) and several spikes per step (e.g. Sinabs IAF: MembraneSubtract + MultiSpike); "
                      "arithmetic exact (fixed-point weights, --weight-frac-bits, and a power-of-two theta_ff)",
        "reset": "subtractive (assumed): the IF nodes carry no v_reset, which nir <= 1.0.5 reads as v -= v_threshold "
                 "per spike; nir >= 1.0.6 reads v_reset = 0 (reset to zero), which gives other counts",
        "bias": "hidden layers: NIR bias = b + theta_ff/2 (Eq. (15)'s round half away from zero as "
                "floor(v/theta_ff)); output layer: b; given once per input: over T steps give bias/T per step",
        "pooling": "Pk as Conv2d with stride k, weights theta_ff/k^2 on the channel diagonal, bias theta_ff/2, "
                   "then IF: the paper's linear IF layer",
        "output": "the last Affine has no neuron: its output is V^L (potentials); the prediction is its argmax",
        "not_representable": "signed spikes (a ReLU neuron's -1 spike, Eq. (4)), the residual phases "
                             "(Eqs. (16), (17), (19), (20)), the backward pass (error spikes, theta_bp)",
    }
    meta.update(extra)
    return meta


def graph_of(topo: Topology, params: dict[int, tuple[np.ndarray, np.ndarray]], theta_ff: float,
             metadata: dict[str, Any]) -> Any:
    """The NIR graph of a network (the module docstring's table). params: {layer l: (W, b)} for the
    trainable layers (conv (Co, Ci, k, k), dense (N_out, N_in)). Raises for a layer NIR cannot carry."""
    nir = require_nir()
    c, h, w = topo.input_shape
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array([c, h, w])})}
    chain = ["input"]
    L = len(topo.layers) - 1
    for l, layer in enumerate(topo.layers):
        if isinstance(layer, Conv):
            W, b = params[l]
            nodes[f"l{l}_conv"] = nir.Conv2d(input_shape=layer.in_shape[1:], weight=W, stride=1,
                                            padding=layer.padding, dilation=1, groups=1,
                                            bias=_offset_bias(b, theta_ff, f"layer {l} ({layer.token()})"))
            chain.append(f"l{l}_conv")
        elif isinstance(layer, Pool):
            k, C = layer.size, layer.in_shape[0]
            weight = np.zeros((C, C, k, k))
            weight[np.arange(C), np.arange(C)] = theta_ff / k ** 2
            nodes[f"l{l}_pool"] = nir.Conv2d(input_shape=layer.in_shape[1:], weight=weight, stride=k, padding=0,
                                            dilation=1, groups=1, bias=np.full(C, theta_ff / 2))
            chain.append(f"l{l}_pool")
        elif isinstance(layer, Dense):
            if l == 0 or topo.layers[l - 1].is_map:
                nodes[f"l{l}_flatten"] = nir.Flatten(input_type={"input": np.array(layer.in_shape)}, start_dim=0)
                chain.append(f"l{l}_flatten")
            W, b = params[l]
            bias = b if l == L else _offset_bias(b, theta_ff, f"layer {l} ({layer.token()})")
            nodes[f"l{l}_affine"] = nir.Affine(weight=W, bias=bias)
            chain.append(f"l{l}_affine")
        else:
            raise SpikeGradError(f"layer {l} ({layer.token()}, kind {layer.kind}): NIR export knows conv, pool and "
                                 f"dense layers only")
        if l < L:
            shape = layer.out_shape if layer.is_map else (layer.out_shape[0],)
            nodes[f"l{l}_if"] = _if_node(nir, shape, theta_ff)
            chain.append(f"l{l}_if")
    nodes["output"] = nir.Output(output_type={"output": np.array([topo.num_classes])})
    chain.append("output")
    return nir.NIRGraph(nodes=nodes, edges=list(zip(chain[:-1], chain[1:])), metadata=metadata)


def write_graph(graph: Any, to: str | Path) -> None:
    """Write a NIR graph (HDF5) whole or not at all, its IF nodes without ``v_reset``: nir ≤ 1.0.5
    (Sinabs 3.1.3 requires 1.0.4, which refuses the field) reads such an IF as the subtractive-reset
    neuron this export assumes, and nir ≥ 1.0.6 as reset to 0 (its rule for files before the field)."""
    import h5py  # noqa: PLC0415  (h5py: comes with the optional nir extra)

    nir = require_nir()
    buf = io.BytesIO()
    nir.write(buf, graph)
    with h5py.File(buf, "r+") as f:
        for node in f["node/nodes"].values():
            if node["type"][()] in (b"IF", "IF") and "v_reset" in node:
                del node["v_reset"]
    try:
        write_atomic(Path(to), lambda f: f.write(buf.getvalue()))
    except OSError as exc:
        raise SpikeGradError(f"cannot write {to} ({exc.strerror or exc})") from None


def export_run(run_dir: str, to: str) -> dict[str, Any]:
    """Write a run directory's checkpoint as a NIR graph; returns a summary (layers, nodes, file)."""

    run = RunDir.fetch(run_dir)
    run.require(RunDir.CONFIG, RunDir.CHECKPOINT)
    cfg = run.read_config()
    topo = cfg.topo
    arrays = run.read_checkpoint()
    check_state_arrays(arrays, topo, str(run.checkpoint_path))
    check_progress(arrays, cfg, topo, str(run.checkpoint_path))  # as resume, eval and verify check it
    params = {l: (arrays[f"W{t}"], arrays[f"b{t}"]) for t, l in enumerate(topo.trainable)}
    epochs = arrays.get("epochs_done")
    extra = {"dataset": cfg.dataset, "dtype": cfg.dtype, "gradient": cfg.gradient,
             "weight_frac_bits": -1 if cfg.weight_frac_bits is None else cfg.weight_frac_bits,
             "epochs_done": int(epochs) if epochs is not None and epochs.shape == () else -1}
    # Sums exact in float32 (Sinabs) need weights on a fixed-point grid and a power-of-two threshold.
    grid = cfg.weight_frac_bits is not None and math.frexp(cfg.theta_ff)[0] == 0.5
    extra["exact_arithmetic"] = int(grid)
    meta = graph_metadata(topo, cfg.theta_ff, cfg.step.theta_bp, extra)
    graph = graph_of(topo, params, cfg.theta_ff, meta)
    write_graph(graph, to)
    return {"file": str(to), "topology": topo.text, "nodes": len(graph.nodes), "layers": len(topo.layers),
            "theta_ff": cfg.theta_ff, "run_dir": str(run), "exact_arithmetic": grid}


def is_nir_path(text: str | None) -> bool:
    """A command-line value naming a NIR file rather than a preset, topology string or run directory."""
    return bool(text) and str(text).lower().endswith(".nir")
