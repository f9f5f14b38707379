"""An exported SpikeGrad network run in Sinabs, a simulator this project did not write (issue 29).

    BENCH_PY nir-sinabs.py RUN_DIR MODEL.nir MNIST_DIR [--steps 1 8 32] [--images 10000] [--json OUT]

BENCH_PY is the Python of an environment of its own holding torch and sinabs (never the project's
dependencies): ``python3 -m venv /tmp/sinabs-venv && /tmp/sinabs-venv/bin/pip install torch sinabs``
(Sinabs 3.1.3 brings nir 1.0.4 and nirtorch 2.0.2). The project itself is imported from the checkout
this file lies in, without installing it: its pure math (``cluster``) and the MNIST loader.

For each T in --steps, the graph (``spikegrad export RUN_DIR --to MODEL.nir``) is loaded with
``sinabs.from_nir(graph, batch_size=B, num_timesteps=T)``, each image x is given as x/T at each of T
steps and every bias as bias/T per step (the graph's metadata: biases are per input), and the spikes
of every IAF layer are summed over the T steps. Our side is the equivalent ANN of the run's checkpoint
(``cluster.network.forward``, float64: exact on the fixed-point grid). Reported per T: the share of
images whose prediction (argmax of the output layer's summed values) agrees, and per hidden layer the
share of (image, neuron) pairs whose spike count equals the ANN's. Every disagreement is classified:
"inherited" (the image already disagrees in a layer below: the layer's input differs) or "arises here"
(all of the layer's input counts agree), split by sign (Sinabs above or below the ANN).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from cluster.network import StepConfig, forward  # noqa: E402
from cluster.topology import parse_topology  # noqa: E402
from launch.data.mnist import load as load_mnist  # noqa: E402
from launch.run.rundir import read_npz  # noqa: E402


def ann_counts(run_dir: Path, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Our equivalent ANN on x (B, C, H, W): per hidden layer its counts (B, neurons) in (C, H, W)
    order, and V (B, classes)."""
    cfg = json.loads((run_dir / "config.json").read_text())
    topo = parse_topology(cfg["topology"])
    ckpt = read_npz(run_dir / "checkpoint.npz")
    params = {l: (ckpt[f"W{t}"].astype(np.float64), ckpt[f"b{t}"].astype(np.float64))
              for t, l in enumerate(topo.trainable)}
    fp = forward(np, topo, params, x.astype(np.float64), StepConfig(theta_ff=cfg["theta_ff"]))
    out = []
    for lf in fp.layers[:-1]:
        S = lf.S
        out.append(S.reshape(-1, S.shape[-1]).T if S.ndim == 4 else S)  # CHWB -> (B, C·H·W)
    return out, fp.V


class SinabsNet:
    """The graph loaded once with ``sinabs.from_nir`` for batches of ``batch`` images over ``steps`` steps."""

    def __init__(self, graph_path: Path, batch: int, steps: int, hidden: list[str], clip: bool = True) -> None:
        """``clip=False`` removes the lower bound -threshold that ``from_nir`` puts on every membrane."""
        import nir  # noqa: PLC0415
        import sinabs  # noqa: PLC0415

        graph = nir.read(graph_path)
        for node in graph.nodes.values():
            if isinstance(node, (nir.Affine, nir.Conv2d)):
                node.bias = node.bias / steps  # exact: steps is a power of two
        self.batch, self.steps, self.hidden = batch, steps, hidden
        self.model = sinabs.from_nir(graph, batch_size=batch, num_timesteps=steps)
        self.model.eval()
        self.seen: dict[str, object] = {}
        modules = dict(self.model.named_modules())
        for name in hidden:
            if not clip:
                modules[name].min_v_mem = None
            modules[name].register_forward_hook(lambda m, i, o, name=name: self.seen.__setitem__(name, o.detach()))

    def counts(self, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Per IAF layer its spikes summed over the steps (B, neurons), and the output layer's values
        summed over the steps (B, classes), for x (B, C, H, W) given as x/T at each step."""
        import sinabs  # noqa: PLC0415
        import torch  # noqa: PLC0415

        B, T = x.shape[0], self.steps
        assert B == self.batch, (B, self.batch)
        xt = torch.from_numpy((x / T).astype(np.float32))
        xt = xt[:, None].expand(B, T, *x.shape[1:]).reshape(B * T, *x.shape[1:])  # batch-major (B·T)
        sinabs.reset_states(self.model)
        with torch.no_grad():
            out = self.model(xt)
        if isinstance(out, tuple):  # nirtorch's executor returns (output, state)
            out = out[0]
        counts = [self.seen[n].reshape(B, T, -1).sum(1).double().numpy() for n in self.hidden]  # type: ignore
        return counts, out.reshape(B, T, -1).sum(1).double().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("model", type=Path)
    ap.add_argument("mnist_dir", type=Path)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=100, help="images per batch (divides --images)")
    ap.add_argument("--unclipped", action="store_true",
                    help="also run each T > 1 without Sinabs' membrane floor (min_v_mem = -threshold)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    import nir  # noqa: PLC0415
    import nirtorch  # noqa: PLC0415
    import sinabs  # noqa: PLC0415
    import torch  # noqa: PLC0415

    torch.set_num_threads(2)
    data = load_mnist(a.mnist_dir)
    x, y = data.x_test[:a.images], data.y_test[:a.images]
    graph = nir.read(a.model)
    hidden = [n for n, node in graph.nodes.items() if isinstance(node, nir.IF)]
    result = {"versions": {"sinabs": sinabs.__version__, "nir": nir.version, "nirtorch": nirtorch.__version__
                           if hasattr(nirtorch, "__version__") else "?", "torch": torch.__version__,
                           "numpy": np.__version__, "python": platform.python_version()},
              "machine": f"{platform.machine()}, {platform.processor() or '?'}, {len(__import__('os').sched_getaffinity(0))} cores",
              "run_dir": str(a.run_dir), "model": str(a.model), "images": len(x), "layers": hidden, "steps": {}}
    variants = [(t, True) for t in a.steps] + [(t, False) for t in a.steps if t > 1 and a.unclipped]
    for steps, clip in variants:
        key = f"{steps}" + ("" if clip else "-unclipped")
        t0 = time.perf_counter()
        batch = a.batch
        if len(x) % batch:
            raise SystemExit(f"--images {len(x)} must be a multiple of --batch {batch}")
        net = SinabsNet(a.model, batch, steps, hidden, clip)
        agree_pred, ann_correct, snn_correct = 0, 0, 0
        equal = np.zeros(len(hidden))
        total = np.zeros(len(hidden))
        arises_up = np.zeros(len(hidden))
        arises_down = np.zeros(len(hidden))
        inherited = np.zeros(len(hidden))
        for lo in range(0, len(x), batch):
            xb, yb = x[lo:lo + batch], y[lo:lo + batch]
            ours, V = ann_counts(a.run_dir, xb)
            theirs, out = net.counts(xb)
            pred_ours, pred_theirs = V.argmax(1), out.argmax(1)
            agree_pred += int((pred_ours == pred_theirs).sum())
            ann_correct += int((pred_ours == yb).sum())
            snn_correct += int((pred_theirs == yb).sum())
            below_ok = np.ones(len(xb), dtype=bool)  # the image agrees in every layer below
            for i, (s_ours, s_theirs) in enumerate(zip(ours, theirs)):
                diff = s_theirs - s_ours
                equal[i] += (diff == 0).sum()
                total[i] += diff.size
                inherited[i] += (diff[~below_ok] != 0).sum()
                arises_up[i] += (diff[below_ok] > 0).sum()
                arises_down[i] += (diff[below_ok] < 0).sum()
                below_ok &= (diff == 0).all(axis=1)
        result["steps"][key] = {
            "prediction_agreement": agree_pred / len(x),
            "ann_accuracy": ann_correct / len(x), "sinabs_accuracy": snn_correct / len(x),
            "layers": [{"layer": n, "equal_share": equal[i] / total[i], "pairs": int(total[i]),
                        "inherited": int(inherited[i]), "arises_here_above": int(arises_up[i]),
                        "arises_here_below": int(arises_down[i])} for i, n in enumerate(hidden)],
            "seconds": round(time.perf_counter() - t0, 1), "batch": batch}
        r = result["steps"][key]
        print(f"T={key}: predictions agree {100 * r['prediction_agreement']:.2f} % (ANN {100 * r['ann_accuracy']:.2f} %,"
              f" Sinabs {100 * r['sinabs_accuracy']:.2f} %), {r['seconds']} s", flush=True)
        for row in r["layers"]:
            print(f"  {row['layer']}: equal {100 * row['equal_share']:.4f} %; differing: inherited {row['inherited']}, "
                  f"arising here above {row['arises_here_above']}, below {row['arises_here_below']}", flush=True)
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
