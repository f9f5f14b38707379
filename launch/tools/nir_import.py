"""NIR import: a NIR graph (HDF5) as a SpikeGrad topology with initial weights.

Used by ``spikegrad train --topology FILE.nir`` / ``--init-from FILE.nir`` and ``spikegrad eval
--checkpoint FILE.nir``. A chain Input → (Conv2d | Affine | Linear | SumPool2d | AvgPool2d, each
optionally followed by IF, with Flatten where needed) → Output becomes a topology string and, per
trainable layer, (W, b) with b = NIR bias − Θff/2 for a hidden layer with an IF: the inverse of the
export (:mod:`launch.tools.nir`), and for a foreign graph the same one-step function
(floor(v/Θ) = round((v − Θ/2)/Θ), Eq. (15), except at ties). The export's pooling form (a stride-k
Conv2d with Θff/k² on the channel diagonal and bias Θff/2, then IF) is read back as ``Pk``.
Leak, recurrence, delays, branches and nested graphs are refused naming the node and why. Before
``nir.read`` the HDF5 file is walked with h5py: every array's claimed size is checked before it is read.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cluster.errors import SpikeGradError
from cluster.network import quantize
from cluster.topology import Topology, parse_topology

from ..run.config import make_config
from ..run.driver import Driver
from ..run.runs import evaluate_driver
from .nir import require_nir

MAX_ELEMENTS = 2 ** 28  # per array and per layer's neurons: above the cifar10 preset's largest (2^26)
NODE_TYPES = ("Input", "Output", "Affine", "Linear", "Scale", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d",
              "Flatten", "Delay", "I", "IF", "LI", "LIF", "CubaLI", "CubaLIF", "Threshold", "NIRGraph")
# Nodes SpikeGrad cannot train, and why (the error names the node and gives the reason).
REFUSED = {
    "LIF": "a leaky neuron (tau, v_leak): SpikeGrad's IF neurons integrate without leak",
    "LI": "a leaky integrator (tau, v_leak): SpikeGrad's neurons integrate without leak",
    "CubaLIF": "a current-based leaky neuron (tau_syn, tau_mem): SpikeGrad's IF neurons have no synaptic "
               "current and no leak",
    "CubaLI": "a current-based leaky integrator: SpikeGrad's neurons have no synaptic current and no leak",
    "Delay": "a delay: SpikeGrad's layers receive a step's spikes in the same step",
    "Threshold": "a threshold without a membrane: SpikeGrad's neurons are IF neurons",
    "Scale": "a per-neuron scale: fold it into the weights of the layer before",
    "Conv1d": "a 1-D convolution: SpikeGrad's convolutions are 2-D",
    "NIRGraph": "a nested graph: flatten it into one chain first",
    "I": "an integrator outside the output layer",
}


@dataclass(frozen=True)
class Imported:
    """A NIR graph read as a SpikeGrad network.

    topology: the parsed topology; params: {layer l: (W, b)} (float64, SpikeGrad's bias convention);
    theta_ff: the IF threshold (None when the graph has no IF); metadata: the graph's metadata
    (``dataset``, ``theta_bp``, ... when our exporter wrote it); notes: what the import assumed.
    """

    topology: Topology
    params: dict[int, tuple[np.ndarray, np.ndarray]]
    theta_ff: float | None
    metadata: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def theta_bp(self) -> float | None:
        v = self.metadata.get("theta_bp")
        return float(np.asarray(v).reshape(-1)[0]) if v is not None and np.asarray(v).size else None

    def dataset(self) -> str | None:
        v = self.metadata.get("dataset")
        return v if isinstance(v, str) else None


def _check_hdf5(path: Path) -> None:
    """Walk the HDF5 file before ``nir.read`` reads it: a NIR graph at ``/node``, every node of a known
    type, every array of numbers or text no larger than :data:`MAX_ELEMENTS` (a header may claim any
    shape; an unwritten chunked dataset costs nothing on disk)."""
    import h5py  # noqa: PLC0415  (h5py: comes with the optional nir extra)

    if not path.is_file():
        raise SpikeGradError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            node = f.get("node")
            if not isinstance(node, h5py.Group) or "type" not in node:
                raise SpikeGradError(f"{path}: expected a NIR graph (HDF5 with a group /node), got groups "
                                     f"{sorted(f.keys())[:10]}")

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset):
                    if obj.size > MAX_ELEMENTS:
                        raise SpikeGradError(f"{path}: {name} claims shape {obj.shape} ({obj.size:.3g} elements), "
                                             f"more than {MAX_ELEMENTS:,} per array")
                    if obj.dtype.kind not in "biufSOU":
                        raise SpikeGradError(f"{path}: {name} expected numbers or text, got dtype {obj.dtype}")
                    if (name.endswith("/type") or name == "type") and "metadata" not in name.split("/"):
                        kind = obj[()]
                        kind = kind.decode("utf8", "replace") if isinstance(kind, bytes) else str(kind)
                        if kind not in NODE_TYPES:
                            raise SpikeGradError(f"{path}: node {name.rsplit('/', 1)[0] or '/'} has unknown type "
                                                 f"{kind[:40]!r}; NIR 1.0.8 knows {', '.join(NODE_TYPES)}")
            node.visititems(visit)
            if isinstance(node.get("type"), h5py.Dataset):
                visit("type", node["type"])
    except SpikeGradError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise SpikeGradError(f"{path} is not a readable NIR (HDF5) file ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]})") from None


def read_graph(path: str | Path) -> Any:
    """The NIR graph in ``path``, checked by :func:`_check_hdf5` first."""
    nir = require_nir()
    path = Path(path)
    _check_hdf5(path)
    try:
        return nir.read(path, type_check=False)  # shapes are checked below, node by node, with their names
    except Exception as exc:  # nir raises ValueError, KeyError, TypeError, AssertionError for malformed nodes
        raise SpikeGradError(f"{path}: nir cannot read it ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]})") from None


def _array(node_name: str, what: str, value: Any) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype.kind not in "biuf":
        raise SpikeGradError(f"node {node_name}: {what} expected numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise SpikeGradError(f"node {node_name}: {what} has {int((~np.isfinite(a)).sum())} NaN or infinite values")
    return a


def _bias(node_name: str, value: Any, n: int) -> np.ndarray:
    """A bias of n values; a single value (scalar or (1,)) is taken for all n."""
    b = _array(node_name, "bias", value)
    if b.shape not in ((), (1,), (n,)):
        raise SpikeGradError(f"node {node_name}: bias shape {b.shape}, expected ({n},)")
    return np.broadcast_to(b.reshape(-1), (n,)).copy() if b.size == 1 else b


def _pair(node_name: str, what: str, value: Any) -> tuple[int, int]:
    a = np.asarray(value).reshape(-1)
    if a.dtype.kind not in "iu" or a.size not in (1, 2):
        raise SpikeGradError(f"node {node_name}: {what} expected one or two integers, got {a.tolist()[:4]}")
    return (int(a[0]), int(a[-1]))


def _chain(graph: Any) -> list[str]:
    """The node names from the Input to the Output; anything but one chain is refused."""
    nodes, edges = graph.nodes, [(str(a), str(b)) for a, b in graph.edges]
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    pred: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a not in nodes or b not in nodes:
            raise SpikeGradError(f"edge ({a[:40]}, {b[:40]}) names a node the graph does not have")
        succ[a].append(b)
        pred[b].append(a)
    for n in nodes:
        kind = type(nodes[n]).__name__
        if len(succ[n]) > 1 or len(pred[n]) > 1:
            raise SpikeGradError(f"node {n} ({kind}) has {len(pred[n])} inputs and {len(succ[n])} outputs: "
                                 f"SpikeGrad trains a chain of layers (no branches, no recurrence)")
    inputs = [n for n in nodes if type(nodes[n]).__name__ == "Input"]
    if len(inputs) != 1:
        raise SpikeGradError(f"expected one Input node, got {len(inputs)}")
    order, seen = [inputs[0]], {inputs[0]}
    while succ[order[-1]]:
        nxt = succ[order[-1]][0]
        if nxt in seen:
            raise SpikeGradError(f"node {nxt} ({type(nodes[nxt]).__name__}) closes a loop: SpikeGrad has no "
                                 f"recurrence")
        order.append(nxt)
        seen.add(nxt)
    if type(nodes[order[-1]]).__name__ != "Output":
        raise SpikeGradError(f"the chain from the Input ends at node {order[-1]} "
                             f"({type(nodes[order[-1]]).__name__}), not at an Output")
    left = sorted(set(nodes) - seen)
    if left:
        raise SpikeGradError(f"nodes {', '.join(left[:5])} are not on the chain from Input to Output: "
                             f"SpikeGrad trains one chain of layers")
    return order


@dataclass
class _Layer:
    node: str                      # the node that starts the layer
    kind: str                      # conv, pool, dense
    token: str
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    neuron: str | None = None      # the IF node after it
    strided: bool = False          # a Conv2d of stride k read as pooling (our export's form)


def _input_shape(name: str, node: Any) -> tuple[int, int, int]:
    shape = [int(v) for v in np.asarray(node.input_type["input"]).reshape(-1)]
    if len(shape) == 1:
        shape = [1, 1, shape[0]]
    elif len(shape) == 2:
        shape = [1, *shape]
    if len(shape) != 3 or min(shape) < 1:
        raise SpikeGradError(f"node {name} (Input): expected a shape (C, H, W), (H, W) or (N,) of positive sizes, "
                             f"got {shape[:6]}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise SpikeGradError(f"node {name} (Input): shape {shape} has more than {MAX_ELEMENTS:,} elements")
    return shape[0], shape[1], shape[2]


def _conv_layer(name: str, node: Any, shape: tuple[int, int, int]) -> _Layer:
    W = _array(name, "weight", node.weight)
    if W.ndim != 4 or W.shape[2] != W.shape[3]:
        raise SpikeGradError(f"node {name} (Conv2d): expected a weight (C_out, C_in, k, k), got shape {W.shape}")
    co, ci, k, _ = W.shape
    groups = int(np.asarray(node.groups).reshape(-1)[0])
    if ci != shape[0] or groups != 1:
        raise SpikeGradError(f"node {name} (Conv2d): weight {W.shape} with groups {groups} does not fit the "
                             f"{shape[0]}-channel input (SpikeGrad's convolutions have groups 1)")
    if _pair(name, "dilation", node.dilation) != (1, 1):
        raise SpikeGradError(f"node {name} (Conv2d): dilation {node.dilation} is not trainable here (1 only)")
    if isinstance(node.padding, str):
        if node.padding == "same" and k % 2 == 0:
            raise SpikeGradError(f"node {name} (Conv2d): padding 'same' with the even kernel {k} is asymmetric")
        pad = 0 if node.padding == "valid" else (k - 1) // 2
    else:
        ph, pw = _pair(name, "padding", node.padding)
        if ph != pw:
            raise SpikeGradError(f"node {name} (Conv2d): padding ({ph}, {pw}) is not square")
        pad = ph
    bias = _bias(name, node.bias, co)
    stride = _pair(name, "stride", node.stride)
    if node.input_shape is not None and tuple(_pair(name, "input_shape", node.input_shape)) != shape[1:]:
        raise SpikeGradError(f"node {name} (Conv2d): input_shape {np.asarray(node.input_shape).tolist()} but the "
                             f"layer below gives {shape[1]}x{shape[2]}")
    if stride == (1, 1):
        return _Layer(name, "conv", f"{co}C{k}" + (f"p{pad}" if pad else ""), W, bias)
    if stride == (k, k) and pad == 0 and co == ci:
        return _Layer(name, "pool", f"P{k}", W, bias, strided=True)
    raise SpikeGradError(f"node {name} (Conv2d): stride {stride} with kernel {k}: SpikeGrad's convolutions have "
                         f"stride 1 (a stride-k k×k convolution is read only as pooling)")


def _pool_layer(name: str, node: Any) -> _Layer:
    kind = type(node).__name__
    k = _pair(name, "kernel_size", node.kernel_size)
    if k[0] != k[1] or _pair(name, "stride", node.stride) != k or _pair(name, "padding", node.padding) != (0, 0):
        raise SpikeGradError(f"node {name} ({kind}): kernel {k}, stride {np.asarray(node.stride).tolist()}, "
                             f"padding {np.asarray(node.padding).tolist()}: SpikeGrad pools k×k windows with stride "
                             f"k and no padding")
    return _Layer(name, "pool", f"P{k[0]}")


def _threshold(name: str, node: Any) -> float:
    r, thr = _array(name, "r", node.r), _array(name, "v_threshold", node.v_threshold)
    reset = _array(name, "v_reset", node.v_reset if node.v_reset is not None else np.zeros_like(thr))
    if r.size == 0 or thr.size == 0 or not (r == 1).all():
        raise SpikeGradError(f"node {name} (IF): r must be 1 (importers disagree on r != 1: Lava multiplies the "
                             f"threshold by r, SpiNNaker 2 divides)")
    if not (reset == 0).all():
        raise SpikeGradError(f"node {name} (IF): v_reset must be 0 (SpikeGrad's neurons keep their residue), got "
                             f"values in [{reset.min():g}, {reset.max():g}]")
    if not (thr == thr.reshape(-1)[0]).all() or not thr.reshape(-1)[0] > 0:
        raise SpikeGradError(f"node {name} (IF): one positive v_threshold for all neurons expected (SpikeGrad's "
                             f"theta_ff), got values in [{thr.min():g}, {thr.max():g}]")
    return float(thr.reshape(-1)[0])


def import_graph(graph: Any, where: str = "the graph") -> Imported:
    """A NIR graph as a SpikeGrad network (module docstring); raises naming the node it cannot take."""
    nodes = graph.nodes
    order = _chain(graph)
    shape = _input_shape(order[0], nodes[order[0]])
    c, h, w = shape
    layers: list[_Layer] = []
    notes: list[str] = []
    flat = False  # a Flatten (or a dense layer) came: the shape is a vector now
    for name in order[1:-1]:
        node = nodes[name]
        kind = type(node).__name__
        if kind in REFUSED and not (kind == "I" and name == order[-2]):
            raise SpikeGradError(f"node {name} ({kind}) is {REFUSED[kind]}")
        if kind == "Conv2d":
            if flat:
                raise SpikeGradError(f"node {name} (Conv2d) follows a flattened vector: a convolution needs a map")
            layer = _conv_layer(name, node, shape)
            layers.append(layer)
            co, k = layer.weight.shape[0], layer.weight.shape[2]  # type: ignore[union-attr]
            if layer.kind == "pool":
                shape = (co, shape[1] // k, shape[2] // k)
            else:
                pad = int(layer.token.partition("p")[2] or 0)
                shape = (co, shape[1] + 2 * pad - k + 1, shape[2] + 2 * pad - k + 1)
        elif kind in ("SumPool2d", "AvgPool2d"):
            layer = _pool_layer(name, node)
            layers.append(layer)
            k = int(layer.token[1:])
            shape = (shape[0], shape[1] // k, shape[2] // k)
            if kind == "SumPool2d":
                notes.append(f"{name}: SumPool2d read as SpikeGrad's average pooling (a linear IF layer with "
                             f"weights theta_ff/k^2); the sum's scale is not kept")
        elif kind in ("Affine", "Linear"):
            W = _array(name, "weight", node.weight)
            n_in = math.prod(shape)
            if W.ndim != 2 or W.shape[1] != n_in:
                raise SpikeGradError(f"node {name} ({kind}): weight shape {W.shape}, expected (N_out, {n_in}) for "
                                     f"the {'x'.join(map(str, shape))} input")
            bias = _bias(name, node.bias, W.shape[0]) if kind == "Affine" else np.zeros(W.shape[0])
            layers.append(_Layer(name, "dense", str(W.shape[0]), W, bias))
            shape, flat = (W.shape[0], 1, 1), True
        elif kind == "Flatten":
            flat = True
        elif kind in ("IF", "I"):
            if not layers or layers[-1].neuron is not None:
                raise SpikeGradError(f"node {name} ({kind}) follows no linear layer: SpikeGrad's neurons sit after "
                                     f"a convolution, pooling or dense layer")
            layers[-1].neuron = name
            size = np.asarray(node.r).size
            if size not in (1, math.prod(shape)):
                raise SpikeGradError(f"node {name} ({kind}): {size} neurons after a layer of "
                                     f"{'x'.join(map(str, shape))} = {math.prod(shape)} outputs")
        else:
            raise SpikeGradError(f"node {name} ({kind}): not a node SpikeGrad can train")
        if math.prod(shape) > MAX_ELEMENTS or min(shape) < 1:
            raise SpikeGradError(f"node {name} ({kind}): its output {shape} is empty or has more than "
                                 f"{MAX_ELEMENTS:,} neurons")
    if not layers or layers[-1].kind != "dense":
        raise SpikeGradError(f"{where}: the last layer must be Affine or Linear (the output layer), got "
                             f"{layers[-1].node if layers else 'no layer'}")
    thresholds = {layer.neuron: _threshold(layer.neuron, nodes[layer.neuron])
                  for layer in layers if layer.neuron is not None and type(nodes[layer.neuron]).__name__ == "IF"}
    if len(set(thresholds.values())) > 1:
        shown = ", ".join(f"{n} {v:g}" for n, v in list(thresholds.items())[:4])
        raise SpikeGradError(f"{where}: IF thresholds differ ({shown}); SpikeGrad has one theta_ff: scale each "
                             f"layer's weights and bias by theta/threshold first")
    theta = next(iter(thresholds.values()), None)
    for i, layer in enumerate(layers):
        last = i == len(layers) - 1
        if last and layer.neuron is not None:
            notes.append(f"{layer.neuron}: the output layer's neuron is dropped: SpikeGrad's output layer integrates "
                         f"(V^L) and predicts with its argmax")
        elif not last and layer.kind != "pool" and layer.neuron is None:
            raise SpikeGradError(f"node {layer.node}: a hidden {layer.kind} layer without an IF neuron after it; "
                                 f"SpikeGrad's hidden layers are IF neurons")
        if layer.strided:
            pw, pb = layer.weight, layer.bias
            assert pw is not None and pb is not None
            k, C = pw.shape[2], pw.shape[0]
            want = np.zeros_like(pw)
            if theta is not None:
                want[np.arange(C), np.arange(C)] = theta / k ** 2
            if theta is None or not np.array_equal(pw, want) or not bool(np.all(pb == theta / 2)):
                raise SpikeGradError(f"node {layer.node} (Conv2d): stride {k} with kernel {k}; SpikeGrad's "
                                     f"convolutions have stride 1, and it is read as pooling only with weights "
                                     f"theta_ff/k^2 on the channel diagonal and bias theta_ff/2")
    text = "-".join([f"{h}x{w}" + (f"x{c}" if c != 1 else "")] + [layer.token for layer in layers])
    topo = parse_topology(text)
    params: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for l, layer in enumerate(layers):
        if layer.kind == "pool":
            continue
        lw, lb = layer.weight, layer.bias
        assert lw is not None and lb is not None
        if lw.shape != topo.weight_shape(l):
            raise SpikeGradError(f"node {layer.node}: weight shape {lw.shape}, topology {text!r} expects "
                                 f"{topo.weight_shape(l)} for layer {l}")
        if layer.neuron is not None and l < len(layers) - 1 and theta is not None:
            lb = lb - theta / 2  # the export's rounding offset (module docstring)
        params[l] = (lw, lb)
    meta = dict(getattr(graph, "metadata", None) or {})
    return Imported(topo, params, theta, meta, tuple(notes))


def load_nir(path: str | Path) -> Imported:
    """Read and import a NIR file (bad files are refused with one error naming what is wrong)."""
    graph = read_graph(path)
    try:
        return import_graph(graph, str(path))
    except SpikeGradError as exc:
        raise SpikeGradError(f"{path}: {exc}") from None


def initial_weights(imp: Imported, dtype: str, frac_bits: int | None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The imported (W, b) in the run's dtype, on its 2⁻ᴷ grid with ``--weight-frac-bits`` (an exported
    fixed-point run is already on it: unchanged)."""

    out = {}
    for l, (W, b) in imp.params.items():
        Wd, bd = W.astype(dtype), b.astype(dtype)
        if frac_bits is not None:
            quantize(np, Wd, frac_bits)
            quantize(np, bd, frac_bits)
        out[l] = (Wd, bd)
    return out


def load_graph(path: str, dataset: str | None = None, backend: str | None = None) -> Any:
    """A driver on a local engine holding a NIR graph's weights: the topology and Θff from the graph,
    the dataset from ``dataset``, else the graph's metadata (our export), else digits."""

    imp = load_nir(path)
    for note in imp.notes:  # what the import assumed
        print(f"spikegrad: {path}: {note}", file=sys.stderr)
    cfg = make_config(dataset or imp.dataset() or "digits", topology=imp.topology.text, theta_ff=imp.theta_ff,
                      theta_bp=imp.theta_bp(), engine="local", backend=backend, init_from=str(path))
    driver = Driver(cfg, imp.topology)
    driver.set_weights(initial_weights(imp, cfg.dtype, None))
    epochs = imp.metadata.get("epochs_done")  # our export's; a foreign graph's training is unknown here
    driver.epochs_done = int(epochs) if isinstance(epochs, (int, np.integer)) and epochs >= 0 else 0
    return driver


def evaluate_graph(path: str, dataset: str | None = None, data_dir: str | None = None,
                   limit_test: int | None = None, backend: str | None = None) -> dict[str, Any]:
    """``spikegrad eval --checkpoint FILE.nir``: the graph's test accuracy (:func:`load_graph`)."""

    return evaluate_driver(load_graph(path, dataset, backend), str(path), data_dir, limit_test)
