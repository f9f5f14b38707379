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

import multiprocessing as mp
import os
import sys
import time
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from cluster.events import ORDERS, max_sde_without_residual, simulate
from cluster.network import backward, export_layer, forward

from ..data import load_dataset
from ..run.runs import check_fit, load_run, select
from ..run.workers import forked_child


class _Totals:
    """Per layer: equal values of S, E, ω and their counts, spikes n and n_min, synaptic events,
    the largest |SDE| without residual phases; seconds of the ANN and of the simulation."""

    def __init__(self, L: int) -> None:
        self.agree = np.zeros((L + 1, 3))
        self.total = np.zeros((L + 1, 3))
        self.n, self.n_min, self.ev_f, self.ev_b = (np.zeros(L + 1) for _ in range(4))
        self.sde = np.zeros(L)
        self.t_ann = self.t_snn = 0.0

    def add(self, other: _Totals) -> None:
        for k in ("agree", "total", "n", "n_min", "ev_f", "ev_b"):
            getattr(self, k)[...] += getattr(other, k)
        self.sde = np.maximum(self.sde, other.sde)
        self.t_ann += other.t_ann
        self.t_snn += other.t_snn


class _Job:
    """One verification: the chunk starting at image ``i`` through the ANN and the simulator."""

    def __init__(self, topo: Any, params: dict, x: np.ndarray, y: np.ndarray, step: Any, chunk: int,
                 residual: bool, order: str, seed: int, input_steps: int, backward: bool) -> None:
        self.topo, self.params, self.x, self.y, self.step, self.chunk = topo, params, x, y, step, chunk
        self.residual, self.order, self.seed, self.input_steps = residual, order, seed, input_steps
        self.backward = backward

    def run(self, i: int) -> _Totals:
        topo, params, step = self.topo, self.params, self.step
        L = len(topo.layers) - 1
        out = _Totals(L)
        xc, yc = self.x[i:i + self.chunk], self.y[i:i + self.chunk]
        t0 = time.perf_counter()
        fp = forward(np, topo, params, xc, step)
        S_ann = [export_layer(np, lf.S).copy() for lf in fp.layers[:-1]]
        bp = backward(np, topo, params, fp, yc, step) if self.backward else None
        out.t_ann = time.perf_counter() - t0
        t0 = time.perf_counter()
        ev = simulate(topo, params, xc, yc, step, residual=self.residual, order=self.order, seed=self.seed + i,
                      input_steps=self.input_steps, backward=self.backward)
        out.t_snn = time.perf_counter() - t0
        for l in range(L + 1):
            if l < L:
                out.agree[l, 0] += np.sum(ev.S[l] == S_ann[l])
                out.total[l, 0] += S_ann[l].size
            if bp is None:
                continue
            E_ann = export_layer(np, bp.E[l])
            out.agree[l, 1] += np.sum(ev.E[l] == E_ann)
            out.total[l, 1] += E_ann.size
            if l in bp.sums:
                for a, b in zip(ev.sums[l], bp.sums[l]):
                    out.agree[l, 2] += np.sum(a == b)
                    out.total[l, 2] += a.size
        out.n += ev.counts.spikes
        out.n_min += ev.counts.spikes_min
        out.ev_f += ev.counts.events_forward
        out.ev_b += ev.counts.events_backward
        out.sde = np.asarray(max_sde_without_residual(topo, params, xc, yc, step, order=self.order,
                                                      seed=self.seed + i, input_steps=self.input_steps))
        return out


_JOB: _Job | None = None  # a pool worker's job, inherited or handed over at its start


def _pool_worker(job: _Job) -> None:
    global _JOB
    forked_child()
    _JOB = job


def _run_chunk(i: int) -> _Totals:
    assert _JOB is not None
    return _JOB.run(i)


def verify(run_dir: str, samples: int = 1000, data_dir: str | None = None, chunk: int = 100,
           residual: bool = True, order: str = "waves", seed: int = 0, progress: bool = True,
           input_steps: int = 1, workers: int | None = None, backward: bool = True) -> dict[str, Any]:
    """``workers`` processes simulate the chunks of ``chunk`` images side by side (default: one per
    core); each chunk's result does not depend on which process ran it. ``backward`` False: the
    forward pass alone (S and the spike counts; E and ω are not computed)."""
    driver = load_run(run_dir, backend="numpy")
    cfg, topo = driver.cfg, driver.topo
    host = driver.host_params()
    driver.close()
    data = load_dataset(cfg.dataset, data_dir or cfg.data_dir, progress=progress)
    check_fit(topo, data)
    driver.check_position(len(select(data, cfg)[0]))  # as resume checks it: the checkpoint fits this data
    x, y = data.x_test[:samples].astype(np.float64), data.y_test[:samples]
    params = {l: (np.asarray(W, np.float64), np.asarray(b, np.float64)) for l, (W, b) in host.items()}
    L = len(topo.layers) - 1
    job = _Job(topo, params, x, y, cfg.step, chunk, residual, order, seed, input_steps, backward)
    starts = list(range(0, len(x), chunk))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n_proc = max(1, min(workers or cores, len(starts)))
    tot = _Totals(L)
    from tqdm import tqdm  # noqa: PLC0415  (tqdm: only with a progress bar)

    bar = tqdm(total=len(starts), desc="verify", unit="chunk", disable=not progress, file=sys.stderr)
    with threadpool_limits(limits=1, user_api="blas"):  # small products per wave: threads only contend
        if n_proc == 1:
            for i in starts:
                tot.add(job.run(i))
                bar.update()
        else:
            # fork: the job (data, weights) is inherited, nothing is pickled but the chunks' totals
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(n_proc, initializer=_pool_worker, initargs=(job,)) as pool:
                for part in pool.imap(_run_chunk, starts):
                    tot.add(part)
                    bar.update()
    bar.close()
    agree, total, n, n_min, ev_f, ev_b, sde = tot.agree, tot.total, tot.n, tot.n_min, tot.ev_f, tot.ev_b, tot.sde
    t_ann, t_snn = tot.t_ann, tot.t_snn
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
                seconds_ann=round(t_ann, 3), seconds_snn=round(t_snn, 3), processes=n_proc,
                order=order, order_policy=ORDERS[order] + (f" (seed {seed})" if order == "random" else ""),
                input="whole" if input_steps == 1 else f"continuous, {input_steps} steps", backward=backward,
                run_dir=str(run_dir), layers=rows)


def format_verify(res: dict[str, Any]) -> str:
    lines = [f"{'layer':>5} {'token':>8} {'S exact':>8} {'E exact':>8} {'ω exact':>8} {'max|SDE|':>11}  "
             f"{'n':>11} {'n_min':>11} {'(n-nmin)/nmin':>13} {'syn. events':>12}"]
    for r in res["layers"]:
        pct = lambda v: "-" if v != v else f"{100 * v:.3f}%"  # noqa: E731  (NaN: not applicable)
        sde_max = r["max_abs_sde_no_residual"]
        sde = "-" if sde_max != sde_max else f"{sde_max:.8f}"
        red = "-" if r["redundancy"] != r["redundancy"] else f"{r['redundancy']:.4f}"
        lines.append(f"{r['layer']:>5} {r['token']:>8} {pct(r['S_exact']):>8} {pct(r['E_exact']):>8} "
                     f"{pct(r['omega_exact']):>8} {sde:>11} {r['spikes']:>11.4g} {r['spikes_min']:>11.4g} "
                     f"{red:>13} {r['synaptic_events_forward'] + r['synaptic_events_backward']:>12.4g}")
    lines.append(f"{res['samples']} samples, input {res.get('input', 'whole')}, order {res['order']}: "
                 f"exact agreement {100 * res['exact_fraction']:.4f} % of all "
                 f"{'S, E, ω' if res.get('backward', True) else 'S (forward pass only)'} values; "
                 f"max |SDE| without residual phases {res['max_abs_sde_no_residual']:.8f}; "
                 f"spikes n = {res['spikes']:.6g}, n_min = {res['spikes_min']:.6g}, (n - n_min)/n_min = "
                 f"{res['redundancy']:.4f}; ANN {res['seconds_ann']:.2f} s, SNN {res['seconds_snn']:.2f} s")
    return "\n".join(lines)
