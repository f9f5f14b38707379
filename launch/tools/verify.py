"""``spikegrad verify --checkpoint RUN_DIR``: the spiking network against its equivalent ANN on real data.

For test images of the run's dataset, one training step (forward, backward, increments)
runs twice on the checkpoint's weights, in float64: as the equivalent ANN
(:mod:`cluster.network`) and as the event-driven spiking network (:mod:`cluster.events`).
Reported per layer: the share of S, E and ω values that agree exactly (ω as the simulator
accumulates it event by event, Eq. (8): each δ adds δ ⊗ x(T) as it leaves), the largest
|SDE| when the residual phases are left out (Eqs. (10), (13): must stay < 1), spikes
emitted n against the best case n_min = Σ|S| (Eq. (21)), synaptic events, wall time.

Exactness needs every sum to be exact in float64: the inputs are dyadic (pixel/256),
and float32 weights usually are fine; weights kept on a 2⁻ᴷ grid (``spikegrad train
--weight-frac-bits K``) make it certain.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from cluster.events import ORDERS, max_sde_without_residual, simulate
from cluster.network import backward, export_layer, forward

from ..data import load_dataset
from ..run.runs import check_fit, load_run


def verify(run_dir: str, samples: int = 1000, data_dir: str | None = None, chunk: int = 100,
           residual: bool = True, order: str = "waves", seed: int = 0, progress: bool = True,
           input_steps: int = 1) -> dict[str, Any]:
    driver = load_run(run_dir, backend="numpy")
    cfg, topo = driver.cfg, driver.topo
    host = driver.host_params()
    driver.close()
    data = load_dataset(cfg.dataset, data_dir or cfg.data_dir, progress=progress)
    check_fit(topo, data)
    x, y = data.x_test[:samples].astype(np.float64), data.y_test[:samples]
    params = {l: (np.asarray(W, np.float64), np.asarray(b, np.float64)) for l, (W, b) in host.items()}
    step = cfg.step
    L = len(topo.layers) - 1
    agree = np.zeros((L + 1, 3))    # equal values of S, E, ω per layer
    total = np.zeros((L + 1, 3))
    n = np.zeros(L + 1)
    n_min = np.zeros(L + 1)
    ev_f = np.zeros(L + 1)
    ev_b = np.zeros(L + 1)
    sde = np.zeros(L)
    t_ann = t_snn = 0.0
    from tqdm import tqdm  # noqa: PLC0415

    for i in tqdm(range(0, len(x), chunk), desc="verify", unit="chunk", disable=not progress, file=sys.stderr):
        xc, yc = x[i:i + chunk], y[i:i + chunk]
        t0 = time.perf_counter()
        fp = forward(np, topo, params, xc, step)
        S_ann = [export_layer(np, lf.S).copy() for lf in fp.layers[:-1]]
        bp = backward(np, topo, params, fp, yc, step)
        t_ann += time.perf_counter() - t0
        t0 = time.perf_counter()
        ev = simulate(topo, params, xc, yc, step, residual=residual, order=order, seed=seed + i,
                      input_steps=input_steps)
        t_snn += time.perf_counter() - t0
        for l in range(L + 1):
            if l < L:
                agree[l, 0] += np.sum(ev.S[l] == S_ann[l])
                total[l, 0] += S_ann[l].size
            E_ann = export_layer(np, bp.E[l])
            agree[l, 1] += np.sum(ev.E[l] == E_ann)
            total[l, 1] += E_ann.size
            if l in bp.sums:
                for a, b in zip(ev.sums[l], bp.sums[l]):
                    agree[l, 2] += np.sum(a == b)
                    total[l, 2] += a.size
        n += ev.counts.spikes
        n_min += ev.counts.spikes_min
        ev_f += ev.counts.events_forward
        ev_b += ev.counts.events_backward
        sde = np.maximum(sde, max_sde_without_residual(topo, params, xc, yc, step, order=order, seed=seed + i,
                                                       input_steps=input_steps))
    rows = []
    for l, layer in enumerate(topo.layers):
        share = [agree[l, k] / total[l, k] if total[l, k] else float("nan") for k in range(3)]
        rows.append(dict(layer=l, token=layer.token(), S_exact=share[0], E_exact=share[1], omega_exact=share[2],
                         max_abs_sde_no_residual=float(sde[l]) if l < L else float("nan"),
                         spikes=float(n[l]), spikes_min=float(n_min[l]),
                         redundancy=float((n[l] - n_min[l]) / n_min[l]) if n_min[l] else float("nan"),
                         synaptic_events_forward=float(ev_f[l]), synaptic_events_backward=float(ev_b[l])))
    spikes, spikes_min = float(n[:L].sum()), float(n_min[:L].sum())
    return dict(samples=int(len(x)), residual=residual, exact_fraction=float(agree.sum() / total.sum()),
                max_abs_sde_no_residual=float(sde.max(initial=0.0)), spikes=spikes, spikes_min=spikes_min,
                redundancy=(spikes - spikes_min) / spikes_min if spikes_min else float("nan"),
                synaptic_events=float(ev_f.sum() + ev_b.sum()),
                seconds_ann=round(t_ann, 3), seconds_snn=round(t_snn, 3),
                order=order, order_policy=ORDERS[order] + (f" (seed {seed})" if order == "random" else ""),
                input="whole" if input_steps == 1 else f"continuous, {input_steps} steps",
                run_dir=str(run_dir), layers=rows)


def format_verify(res: dict[str, Any]) -> str:
    lines = [f"{'layer':>5} {'token':>8} {'S exact':>8} {'E exact':>8} {'ω exact':>8} {'max|SDE|':>9}  "
             f"{'n':>11} {'n_min':>11} {'(n-nmin)/nmin':>13} {'syn. events':>12}"]
    for r in res["layers"]:
        pct = lambda v: "-" if v != v else f"{100 * v:.3f}%"  # noqa: E731  (NaN: not applicable)
        sde_max = r["max_abs_sde_no_residual"]
        sde = "-" if sde_max != sde_max else f"{sde_max:.6f}"
        red = "-" if r["redundancy"] != r["redundancy"] else f"{r['redundancy']:.4f}"
        lines.append(f"{r['layer']:>5} {r['token']:>8} {pct(r['S_exact']):>8} {pct(r['E_exact']):>8} "
                     f"{pct(r['omega_exact']):>8} {sde:>9} {r['spikes']:>11.4g} {r['spikes_min']:>11.4g} "
                     f"{red:>13} {r['synaptic_events_forward'] + r['synaptic_events_backward']:>12.4g}")
    lines.append(f"{res['samples']} samples, input {res.get('input', 'whole')}, order {res['order']}: "
                 f"exact agreement {100 * res['exact_fraction']:.4f} % of all S, E, ω values; "
                 f"max |SDE| without residual phases {res['max_abs_sde_no_residual']:.6f}; "
                 f"spikes n = {res['spikes']:.6g}, n_min = {res['spikes_min']:.6g}, (n - n_min)/n_min = "
                 f"{res['redundancy']:.4f}; ANN {res['seconds_ann']:.2f} s, SNN {res['seconds_snn']:.2f} s")
    return "\n".join(lines)
