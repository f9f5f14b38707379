"""The same equivalent ANN written in PyTorch, for speed comparisons only.

PyTorch is not a dependency: this module imports it lazily and is used by
``spikegrad bench train --torch`` and the GPU check when torch is installed.
The step mirrors :mod:`cluster.network` (integer activations, rounded errors,
increments Σ E ⊗ S, SGD with momentum) with PyTorch's own kernels (oneDNN on a
CPU, cuDNN/cuBLAS on a GPU), written by hand rather than through autograd so
that both sides do the same work.

``python -m launch.tools.torch_ref JOB.npz`` times the step in a process of its own (the way
``bench train --torch`` runs it: PyTorch's thread pool and allocator then never share a process
with the engine it is compared with) and prints one JSON line of images/s per window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np

from cluster.topology import Conv, Dense, Pool, Topology


def torch_available() -> tuple[bool, str]:
    try:
        import torch  # noqa: PLC0415  (torch: the benchmark's, not a dependency)
    except Exception as exc:
        return False, f"torch is not importable ({type(exc).__name__})"
    return True, torch.__version__


def make_torch_step(topo: Topology, params: dict[int, tuple[np.ndarray, np.ndarray]], device: str,
                    dtype: str, theta_ff: float, theta_bp: float, alpha: float, eta: float,
                    momentum: float) -> Callable[[Any, Any], Any]:
    """A function step(x, y) doing forward, backward and the update in place; returns the loss sum.

    ``step.params`` holds {layer l: [W, b]} as torch tensors (updated in place).
    """
    import torch  # noqa: PLC0415  (torch: the benchmark's, not a dependency)
    import torch.nn.functional as F  # noqa: PLC0415  (torch: the benchmark's, not a dependency)
    from torch.nn.grad import conv2d_input, conv2d_weight  # noqa: PLC0415  (torch: the benchmark's, not a dependency)

    tdtype = getattr(torch, dtype)
    P = {l: [torch.tensor(W, dtype=tdtype, device=device), torch.tensor(b, dtype=tdtype, device=device)]
         for l, (W, b) in params.items()}
    Vel = {l: [torch.zeros_like(W), torch.zeros_like(b)] for l, (W, b) in P.items()}
    L = len(topo.layers) - 1

    def rnd(t: Any) -> Any:  # round half away from zero (torch.round is half-to-even)
        return torch.sign(t) * torch.floor(torch.abs(t) + 0.5)

    @torch.no_grad()
    def step(x: Any, y: Any) -> Any:
        S = x
        ins: list[Any] = []
        masks: list[torch.Tensor | None] = []
        for l, layer in enumerate(topo.layers):
            if isinstance(layer, Dense) and S.dim() == 4:
                S = S.reshape(S.shape[0], -1)
            ins.append(S)
            if isinstance(layer, Pool):
                S = rnd(F.avg_pool2d(S, layer.size))
                masks.append(None)
                continue
            W, b = P[l]
            pre = F.conv2d(S, W, b, padding=layer.padding) if isinstance(layer, Conv) else F.linear(S, W, b)
            if l == L:
                S = pre
                masks.append(None)
                break
            pre = pre / theta_ff
            masks.append((pre > 0).to(tdtype))
            S = torch.floor(torch.relu(pre) + 0.5)
        V = S
        p = torch.softmax(V, dim=1)
        loss = -torch.log(p.gather(1, y[:, None]).clamp_min(1e-30)).sum()
        U = p
        U[torch.arange(V.shape[0], device=V.device), y] -= 1
        E = rnd(U * alpha / theta_bp)
        for l in range(L, -1, -1):
            layer = topo.layers[l]
            S_prev = ins[l]
            if not isinstance(layer, Pool):
                W, b = P[l]
                if isinstance(layer, Conv):
                    gW = conv2d_weight(S_prev, W.shape, E, padding=layer.padding)
                    gb = E.sum(dim=(0, 2, 3))
                else:
                    gW, gb = E.T @ S_prev, E.sum(dim=0)
            if l > 0:
                if isinstance(layer, Pool):
                    k = layer.size
                    Z = F.interpolate(E, scale_factor=k, mode="nearest") * (theta_ff / k / k)
                    if Z.shape[2:] != S_prev.shape[2:]:
                        Z = F.pad(Z, (0, S_prev.shape[3] - Z.shape[3], 0, S_prev.shape[2] - Z.shape[2]))
                elif isinstance(layer, Conv):
                    Z = conv2d_input(S_prev.shape, W, E, padding=layer.padding)
                else:
                    Z = E @ W
                Z = Z / theta_bp
                below_shape = topo.layers[l - 1].out_shape
                if Z.dim() == 2 and not isinstance(topo.layers[l - 1], Dense):
                    Z = Z.reshape(Z.shape[0], *below_shape)
                m = masks[l - 1]
                E_next = rnd(Z) if m is None else rnd(Z) * m
            if not isinstance(layer, Pool):
                vW, vb = Vel[l]
                vW.mul_(momentum).sub_(eta * gW)
                vb.mul_(momentum).sub_(eta * gb)
                W.add_(vW)
                b.add_(vb)
            if l > 0:
                E = E_next
        return loss

    # {layer: [W, b]} torch tensors, updated in place; cast: without torch installed, step is Any
    cast(Any, step).params = P
    return step


def time_in_subprocess(topo: Topology, params: dict[int, tuple[np.ndarray, np.ndarray]], x: np.ndarray,
                       y: np.ndarray, step: dict[str, float], dtype: str, device: str, seconds: float,
                       repeats: int, batch: int | None = None) -> list[float]:
    """Images/s of ``repeats`` windows of ``seconds`` each (after two warm-up steps) of the PyTorch
    step, timed in a fresh Python process. step: theta_ff, theta_bp, alpha, eta, momentum.
    batch: step through x in consecutive batches of this size, round and round (None: x is one batch)."""
    import json  # noqa: PLC0415  (imported in the subprocess that times torch)
    import subprocess  # noqa: PLC0415  (imported in the subprocess that times torch)
    import sys  # noqa: PLC0415  (imported in the subprocess that times torch)
    import tempfile  # noqa: PLC0415  (imported in the subprocess that times torch)
    from pathlib import Path  # noqa: PLC0415  (imported in the subprocess that times torch)

    arrays: dict[str, Any] = {f"W{l}": W for l, (W, _) in params.items()}
    arrays.update({f"b{l}": b for l, (_, b) in params.items()})
    meta = dict(topology=topo.text, dtype=dtype, device=device, seconds=seconds, repeats=repeats,
                batch=batch or len(x), **step)
    with tempfile.TemporaryDirectory(prefix="spikegrad-torch-") as tmp:
        job = Path(tmp) / "job.npz"
        np.savez(job, x=x, y=y, meta=np.asarray(json.dumps(meta)), **arrays)
        proc = subprocess.run([sys.executable, "-m", "launch.tools.torch_ref", str(job)], capture_output=True,
                              text=True, timeout=max(120.0, 10 * seconds * repeats))
    if proc.returncode != 0:
        raise RuntimeError(f"the PyTorch timing process failed: {proc.stderr.strip()[-500:]}")
    rates: list[float] = json.loads(proc.stdout.strip().splitlines()[-1])["images_per_second"]
    return rates


def main(argv: list[str] | None = None) -> int:
    """Time the job file's step (see :func:`time_in_subprocess`); prints {"images_per_second": [...]}."""
    import json  # noqa: PLC0415  (imported in the subprocess that times torch)
    import sys  # noqa: PLC0415  (imported in the subprocess that times torch)

    import torch  # noqa: PLC0415  (torch: the benchmark's, not a dependency)

    from cluster.topology import parse_topology  # noqa: PLC0415  (imported in the subprocess that times torch)

    from .timing import rate  # noqa: PLC0415  (beside torch, which this process imports)

    args = sys.argv[1:] if argv is None else argv
    with np.load(args[0], allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        x, y = z["x"], z["y"]
        params = {int(k[1:]): (z[k], z[f"b{k[1:]}"]) for k in z.files if k.startswith("W")}
    topo = parse_topology(meta["topology"])
    dev = meta["device"]
    tstep = make_torch_step(topo, params, dev, meta["dtype"], meta["theta_ff"], meta["theta_bp"], meta["alpha"],
                            meta["eta"], meta["momentum"])
    B = int(meta["batch"])
    batches = [(torch.tensor(x[i:i + B], device=dev, dtype=getattr(torch, meta["dtype"])),
                torch.tensor(y[i:i + B], device=dev)) for i in range(0, len(x) - B + 1, B)]
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    turn = [0]

    def one() -> None:
        tx, ty = batches[turn[0] % len(batches)]
        turn[0] += 1
        float(tstep(tx, ty))  # one host sync per step, as the engine's step returns its loss

    rates = rate(one, B, meta["seconds"], meta["repeats"], sync)
    print(json.dumps({"images_per_second": rates, "torch": torch.__version__, "threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
