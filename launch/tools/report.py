"""``spikegrad report RUN_DIR [RUN_DIR ...] --out DIR``: the paper's figures and a summary, as files.

Drawn from the runs' Parquet files (matplotlib, headless):

- ``fig1_backward_synops.png``: relative synaptic operations of backpropagation per epoch, one curve
  per run, labelled with its name, α, seed and final test accuracy (the paper's Figure 1); one
  file per dataset (``fig1_backward_synops_<dataset>.png``) when the runs cover several;
- ``fig2_layers_<run>.png``: relative synaptic operations per layer in the direction of
  backpropagation (output first; the float input layer and pooling layers left out, as in the
  paper's Figure 2), one curve per epoch shown;
- ``accuracy.png`` (test and training) and ``loss.png`` (training) per epoch, with markers so that a
  one-epoch run shows; ``traffic_<run>.png``, a chip run's last epoch as heat maps of spikes and
  of the emulator's wire kbit per link and training sample, chips labelled by the layers they hold;
  ``bandwidth_<run>.png``, the Mbit/s each link of a chip run needs at 1,000 images/s (40-bit
  packets), forward and backward side by side, the busiest named;
- ``energy_<run>.png``: the last epoch's energy estimate per sample and pass, SNN against ANN
  (:mod:`launch.tools.cost`);
- ``spikes_<run>.png``: the last epoch's spikes per neuron per sample of every hidden layer, a
  histogram with the paper's bound n_max (Eq. (21)) marked (runs with ``spikes.parquet``);
- ``summary.md``: one row per run, each run's operations per training sample and pass (SNN ACCs and
  MACs, ANN MACs, spikes, error spikes emitted and delivered), and per training protocol (runs that
  differ only in their seed, ``PROTOCOL``) the final test accuracy's max and mean ± sample standard
  deviation over distinct seeds (the paper's Table 1); a run that repeats a seed is listed, not
  counted again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from cluster.errors import SpikeGradError

from ..run.rundir import RunDir
from .cost import run_cost
from .system import run_plan, system_model


class Run:
    """One run directory's config and Parquet rows."""

    def __init__(self, where: RunDir | str | Path) -> None:
        run = where if isinstance(where, RunDir) else RunDir(where)
        self.path = run.path
        for f in (run.file(RunDir.CONFIG), run.table_file("metrics"), run.table_file("layers")):
            if not f.is_file():
                raise SpikeGradError(f"report: {run} is not a finished-epoch run directory ({f.name} is missing)")
        self.cfg = run.read_config()
        self.metrics = run.read_table("metrics")
        self.layers = run.read_table("layers")
        self.traffic = run.read_table("traffic")
        self.chips = run.read_table("chips")
        self.operations = run.read_table("operations")  # [] for runs written before these tables
        self.spikes = run.read_table("spikes")
        self.label_text = run.label
        if not self.metrics:
            raise SpikeGradError(f"report: {run} has no finished epoch yet")

    @property
    def name(self) -> str:
        return Path(self.label_text.rstrip("/")).name

    @property
    def final(self) -> dict:
        return self.metrics[-1]

    def label(self) -> str:
        """The run's name, then what tells it apart: gradient, α, seed, final test accuracy."""
        return (f"{self.name}: {self.cfg.gradient} α={self.cfg.alpha:g} seed {self.cfg.seed}, "
                f"{self.final['test_accuracy']:.2f} %")


def _pyplot() -> Any:
    import matplotlib  # noqa: PLC0415  (matplotlib: only when a figure is drawn)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415  (matplotlib: only when a figure is drawn)

    return plt


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt  # noqa: PLC0415  (matplotlib: only when a figure is drawn)

    plt.close(fig)
    return path.name


def figure1(runs: list[Run], out: Path) -> list[str]:
    """One figure per dataset (their costs are not on one scale): fig1_backward_synops.png, or
    fig1_backward_synops_<dataset>.png when the runs cover several datasets."""
    datasets = sorted({r.cfg.dataset for r in runs})
    return [_figure1([r for r in runs if r.cfg.dataset == d], out, d,
                     "fig1_backward_synops.png" if len(datasets) == 1 else f"fig1_backward_synops_{d}.png")
            for d in datasets]


def _figure1(runs: list[Run], out: Path, dataset: str, name: str) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in sorted(runs, key=lambda r: (r.cfg.alpha, r.cfg.seed, r.name)):
        ep = [m["epoch"] for m in r.metrics]
        ax.plot(ep, [m["rel_synops_backward"] for m in r.metrics], marker="o", label=r.label())
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("relative synaptic operations, backward\n(error-spike ACCs / ANN MACs)")
    ax.set_yscale("log")
    ax.set_title(f"Backpropagation cost during training, {dataset} (paper Fig. 1)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / name)


def figure2(run: Run, out: Path, max_curves: int = 6) -> str:
    """Per layer, output first; float input layer and pooling layers left out."""
    plt = _pyplot()
    layers = sorted({(r["layer"], r["token"]) for r in run.layers if r["layer"] > 0 and r["kind"] != "pool"},
                    reverse=True)
    epochs = sorted({r["epoch"] for r in run.layers})
    if len(epochs) > max_curves:  # first, last and evenly spaced ones between
        idx = np.unique(np.linspace(0, len(epochs) - 1, max_curves).round().astype(int))
        epochs = [epochs[i] for i in idx]
    by = {(r["epoch"], r["layer"]): r for r in run.layers}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = np.arange(len(layers))
    for e in epochs:
        ax.plot(x, [by[(e, l)]["rel_backward"] for l, _ in layers], marker="o", label=f"epoch {e}")
    ax.set_xticks(x, [f"l{l} {t}" for l, t in layers])
    ax.set_xlabel("layer, in the direction of backpropagation")
    ax.set_ylabel("relative synaptic operations, backward")
    ax.set_yscale("log")
    ax.set_title(f"{run.name}: per layer (paper Fig. 2)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / f"fig2_layers_{run.name}.png")


def curves(runs: list[Run], out: Path) -> list[str]:
    plt = _pyplot()
    names = []
    for key, ylabel, fname, title in (
            ("accuracy", "accuracy (%)", "accuracy.png", "Test (solid, o) and training (dashed, x) accuracy"),
            ("loss", "training loss (cross-entropy, mean per image)", "loss.png", "Training loss")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for r in runs:
            ep = [m["epoch"] for m in r.metrics]
            if key == "accuracy":
                line, = ax.plot(ep, [m["test_accuracy"] for m in r.metrics], marker="o", label=f"{r.name} test")
                # markers: a one-epoch run's training point must show too
                ax.plot(ep, [m["train_accuracy"] for m in r.metrics], ls="--", marker="x", color=line.get_color(),
                        label=f"{r.name} training")
            else:
                ax.plot(ep, [m["train_loss"] for m in r.metrics], marker="o", label=r.name)
        ax.set_title(f"{title} per epoch", fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        names.append(_save(fig, out / fname))
    return names


def _held(layers: str) -> str:
    """A chips-table ``layers`` text as a short label: "2-3-4" -> "L2-4", "0" -> "L0"."""
    parts = str(layers).split("-")
    return f"L{parts[0]}" if len(parts) == 1 else f"L{parts[0]}-{parts[-1]}"


def _short(v: float) -> str:
    """A number in at most 4 characters for a heat-map cell: 0.37, 6.5, 12, 350, 6.5k, 12k, 1.2M."""
    for div, suffix in ((1e6, "M"), (1e3, "k"), (1.0, "")):
        if abs(v) >= div or div == 1.0:
            x = v / div
            return f"{x:.2g}{suffix}" if abs(x) < 10 else f"{x:.0f}{suffix}"
    return f"{v:.2g}"


def traffic_map(run: Run, out: Path) -> str | None:
    """A chip run's last epoch as two heat maps per training sample, spikes and the emulator's wire
    kbit per link (row: from, column: to; above the diagonal forward, below backward), on a log
    colour scale, chips labelled by the layers they hold."""
    from matplotlib.colors import LogNorm  # noqa: PLC0415  (matplotlib: only when a figure is drawn)

    if not run.traffic:
        return None
    plt = _pyplot()
    last = max(r["epoch"] for r in run.traffic)
    images = next(m["images"] for m in run.metrics if m["epoch"] == last)
    rows = [r for r in run.traffic if r["epoch"] == last and r.get("kind", "spikes") == "spikes"]
    chips = sorted({r["src"] for r in rows} | {r["dst"] for r in rows})
    held = {r["chip"]: r["layers"] for r in run.chips if r["epoch"] == last}
    labels = [f"{c}: {_held(held[c])}" if c in held else str(c) for c in chips]
    n = len(chips)
    side = max(4.6, 0.5 * n + 1.6)  # inches per panel: cells wide enough for 4-character numbers
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.6, side + 0.3))
    for ax, key, scale, what in ((axes[0], "spikes", 1.0, "spikes per training sample"),
                                 (axes[1], "bytes", 8e-3, "wire kbit per training sample")):
        m = np.full((n, n), np.nan)
        for r in rows:
            m[chips.index(r["src"]), chips.index(r["dst"])] = r[key] * scale / images
        shown = m[np.isfinite(m) & (m > 0)]
        if not shown.size:
            ax.set_axis_off()
            continue
        norm = LogNorm(vmin=shown.min(), vmax=shown.max()) if shown.max() > shown.min() else None
        im = ax.imshow(np.where(m > 0, m, np.nan), cmap="viridis", norm=norm)
        if n <= 16:  # numbers in the cells while they fit
            for i in range(n):
                for j in range(n):
                    if m[i, j] > 0:
                        frac = norm(m[i, j]) if norm else 0.0
                        ax.text(j, i, _short(m[i, j]), ha="center", va="center", fontsize=7,
                                color="w" if frac < 0.6 else "k")  # light text on the dark end of viridis
        for r in rows:  # a red frame: the link crosses nodes
            if r.get("cross_node"):
                i, j = chips.index(r["src"]), chips.index(r["dst"])
                ax.add_patch(plt.Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, edgecolor="red", lw=1.5))
        ax.plot([-0.5, n - 0.5], [-0.5, n - 0.5], color="0.6", lw=0.8)
        ax.text(n - 0.6, 0.4 - 0.5, "forward ↗", ha="right", va="top", fontsize=8, color="0.3")
        ax.text(-0.4, n - 0.6, "backward ↙", ha="left", va="bottom", fontsize=8, color="0.3")
        ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        ax.set_xlabel("to chip: layers held")
        ax.set_ylabel("from chip: layers held")
        ax.set_title(what, fontsize=10)
        fig.colorbar(im, ax=ax, label=f"{what} (log scale)", shrink=0.8)
    fig.suptitle(f"{run.name}: chip-to-chip traffic, epoch {last} ({images:,} images); above the diagonal forward "
                 f"(spikes), below backward (error spikes)"
                 + ("; red frame: the link crosses nodes" if any(r.get("cross_node") for r in rows) else ""),
                 fontsize=10)
    return _save(fig, out / f"traffic_{run.name}.png")


def bandwidth_figure(run: Run, out: Path, rate: float = 1000.0) -> str | None:
    """Mbit/s each link needs at ``rate`` images/s with 40-bit SpiNNaker packets (one per spike;
    launch.tools.cost), forward and backward side by side per pair of chips; hatched: the link
    crosses nodes; the busiest link named. None for runs without links."""

    if not run.traffic:
        return None
    plt = _pyplot()
    epoch = run.final["epoch"]
    links = [r for r in run_cost(run.metrics, run.traffic, run_plan(run.cfg, None)[0], epoch, "spinnaker",
                                 rate)["links"] if r["what"] != "increments"]
    if not links:
        return None
    pairs = sorted({(min(r["src"], r["dst"]), max(r["src"], r["dst"])) for r in links})
    way = {(r["src"], r["dst"]): r for r in links}
    x = np.arange(len(pairs))
    fig, ax = plt.subplots(figsize=(max(6.4, 0.42 * len(pairs) + 2.0), 4.6))
    for sign, (name, color, key) in ((-1, ("forward: spikes", "tab:blue", lambda a, b: (a, b))),
                                     (1, ("backward: error spikes", "tab:orange", lambda a, b: (b, a)))):
        rows = [way.get(key(a, b)) for a, b in pairs]
        ax.bar(x + sign * 0.2, [r["mbps_at_rate"] if r else 0.0 for r in rows], 0.4, label=name, color=color,
               hatch=None, edgecolor="none")
        crossing = [(i, r) for i, r in enumerate(rows) if r and r["cross_node"]]
        if crossing:
            ax.bar([i + sign * 0.2 for i, _ in crossing], [r["mbps_at_rate"] for _, r in crossing], 0.4,
                   color="none", edgecolor="k", hatch="//", lw=0)
    busiest = max(links, key=lambda r: r["mbps_at_rate"])
    i = pairs.index((min(busiest["src"], busiest["dst"]), max(busiest["src"], busiest["dst"])))
    ax.annotate(f"busiest: {busiest['src']}→{busiest['dst']}, {busiest['mbps_at_rate']:.3g} Mbit/s",
                xy=(i + (0.2 if busiest["src"] > busiest["dst"] else -0.2), busiest["mbps_at_rate"]),
                xytext=(0, 4), textcoords="offset points", va="bottom", fontsize=8,
                ha="right" if i > len(pairs) / 2 else "left")  # the text stays inside the axes
    ax.set_ylim(top=1.12 * busiest["mbps_at_rate"])
    ax.set_xticks(x, [f"{a}↔{b}" for a, b in pairs], rotation=45 if len(pairs) > 8 else 0, fontsize=8)
    ax.set_xlabel("link between chips (lower chip ↔ higher chip)")
    ax.set_ylabel(f"Mbit/s at {rate:,.0f} images/s")
    ax.set_title(f"{run.name}: bandwidth per link at {rate:,.0f} training images/s, epoch {epoch}\n"
                 f"(40-bit SpiNNaker packets, one per spike; "
                 + ("hatched: the link crosses nodes)" if any(r["cross_node"] for r in links) else
                    "no link crosses nodes)"), fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, out / f"bandwidth_{run.name}.png")


def energy_figure(run: Run, out: Path) -> str | None:
    """Energy per training sample by epoch, SNN against its equivalent ANN (data movement included), on
    the run's own chips or, for a one-process run, on Loihi (Loihi 2 where Loihi cannot hold the
    network; None where neither can); the profile and the sources of its figures are printed on the
    figure (launch.tools.system)."""

    try:  # the chips: the run's own, else Loihi's or Loihi 2's mapping
        run_plan(run.cfg, None)
    except SpikeGradError:
        return None
    s = system_model(run.cfg, run.metrics, run.layers, None, None, "spinnaker", None, "snake", None, 1, 1000.0, 16,
                     None)
    plt = _pyplot()
    epochs = [ep["epoch"] for ep in s["epochs"]]
    snn = [ep["snn_pj"][0] / 1e3 for ep in s["epochs"]]
    lo = [ep["snn_pj"][1] / 1e3 for ep in s["epochs"]]
    hi = [ep["snn_pj"][2] / 1e3 for ep in s["epochs"]]
    ann = [ep["ann_pj"][0] / 1e3 for ep in s["epochs"]]
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    ax.plot(epochs, snn, "o-", label="SNN (synaptic ops, updates, compartments, spikes, hops, links)")
    ax.fill_between(epochs, lo, hi, alpha=0.2, label="SNN, range of the sources' figures")
    ax.plot(epochs, ann, "s--", label="equivalent ANN (MACs, weight reads/writes, 16-bit values moved)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nJ per training sample")
    ax.set_xticks(epochs)
    ax.set_title(f"{run.name}: energy per training sample (an estimate)\n{s['where']}, figures of "
                 f"'{s['energy']}'", fontsize=9)
    ax.grid(True, which="both", axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)
    fig.text(0.01, 0.005, "sources: " + ", ".join(sorted(s["sources"])) + " (spikegrad traffic prints them in full)",
             fontsize=6, color="dimgrey")
    return _save(fig, out / f"energy_{run.name}.png")


def spikes_figure(run: Run, out: Path) -> str | None:
    """The last epoch's spikes per neuron per sample of every hidden layer (``spikes.parquet``): a
    histogram on a log scale with Eq. (21)'s bound n_max marked; None for runs without the table."""
    if not run.spikes:
        return None
    plt = _pyplot()
    epoch = max(r["epoch"] for r in run.spikes)
    rows = [r for r in run.spikes if r["epoch"] == epoch]
    layers = sorted({r["layer"] for r in rows})
    cols = min(3, len(layers))
    fig, axes = plt.subplots(-(-len(layers) // cols), cols, figsize=(4.2 * cols, 3.2 * -(-len(layers) // cols)),
                             squeeze=False)
    for ax in axes.flat[len(layers):]:
        ax.set_visible(False)
    for ax, l in zip(axes.flat, layers):
        mine = sorted((r for r in rows if r["layer"] == l), key=lambda r: r["spikes"])
        k = np.array([r["spikes"] for r in mine])
        cnt = np.array([r["count"] for r in mine], dtype=float)
        ax.bar(k, cnt / cnt.sum(), width=1.0, color="tab:blue")
        bound = mine[0]["n_max"]
        ax.set_yscale("log")
        ax.set_xscale("symlog", linthresh=10)
        ax.axvline(bound, color="tab:red", linestyle="--", label=f"n_max = {bound:.3g} (Eq. 21)")
        mean = float((k * cnt).sum() / cnt.sum())
        ax.set_title(f"layer {l} ({mine[0]['token']}): mean {mean:.2f}, max {int(k.max())}", fontsize=9)
        ax.set_xlabel("spikes per neuron per sample (Σ|S|)")
        ax.set_ylabel("share of (neuron, sample)")
        ax.legend(fontsize=7)
    fig.suptitle(f"{run.name}: spikes per neuron per sample, epoch {epoch}, {mine[0]['samples']} test images",
                 fontsize=10)
    return _save(fig, out / f"spikes_{run.name}.png")


def operations_lines(run: Run) -> list[str]:
    """The last epoch's operations per training sample, per pass (``operations.parquet``), as Markdown."""
    if not run.operations:
        return []
    epoch = max(r["epoch"] for r in run.operations)
    rows = [r for r in run.operations if r["epoch"] == epoch]
    lines = [f"### {run.name}: operations per training sample, epoch {epoch}", "",
             "| pass | SNN ACCs | SNN MACs | ANN MACs | SNN ops / ANN MACs | spikes | error spikes "
             "(emitted / delivered) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for p in ("forward", "backward", "update"):
        mine = [r for r in rows if r["pass"] == p]
        acc, mac, ann = (sum(r[k] for r in mine) for k in ("snn_acc", "snn_mac", "ann_mac"))
        spikes = sum(r["spikes"] for r in mine)
        emitted, delivered = (sum(r[k] for r in mine) for k in ("error_spikes", "error_spikes_delivered"))
        lines.append(f"| {p} | {acc:.4g} | {mac:.4g} | {ann:.4g} | {(acc + mac) / ann:.3f} | "
                     f"{spikes:.4g} | {emitted:.4g} / {delivered:.4g} |" if ann else f"| {p} | {acc:.4g} | "
                     f"{mac:.4g} | 0 | – | {spikes:.4g} | {emitted:.4g} / {delivered:.4g} |")
    return lines + [""]


# What makes runs one protocol: they are grouped over seeds only when all of these agree.
PROTOCOL = ("dataset", "topology", "gradient", "alpha", "epochs", "batch_size", "lr", "momentum", "schedule",
            "theta_ff", "theta_bp", "shift", "validation", "limit_train", "limit_test", "weight_frac_bits", "dtype")


def table1(runs: list[Run]) -> list[dict]:
    """Per training protocol (PROTOCOL; epochs as trained): final test accuracy over distinct seeds.

    A seed that several runs share counts once (the first run by name); the others are listed in
    ``repeated`` with their accuracies, never averaged in as if they were more seeds."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        cfg = {**dataclasses.asdict(r.cfg), "epochs": len(r.metrics)}
        key = tuple((k, cfg[k]) for k in PROTOCOL)
        groups.setdefault(key, []).append(r)
    rows = []
    for key, members in sorted(groups.items(), key=lambda kv: repr(kv[0])):
        by_seed: dict[int, Run] = {}
        repeated = []
        for r in sorted(members, key=lambda r: r.name):
            if r.cfg.seed in by_seed:
                repeated.append(dict(run=r.name, seed=r.cfg.seed, test_accuracy=r.final["test_accuracy"],
                                     counted=by_seed[r.cfg.seed].name))
            else:
                by_seed[r.cfg.seed] = r
        accs = [r.final["test_accuracy"] for r in by_seed.values()]
        rows.append(dict(key, seeds=len(accs), runs=len(members), seed_list=sorted(by_seed), max=max(accs),
                         mean=statistics.fmean(accs), std=statistics.stdev(accs) if len(accs) > 1 else math.nan,
                         repeated=repeated))
    return rows


def report(run_dirs: list[RunDir | str], out_dir: str) -> dict:
    if not run_dirs:
        raise SpikeGradError("report: expected at least one run directory")
    runs = [Run(p) for p in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise SpikeGradError(f"report: run directory names expected distinct, got {names}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [*figure1(runs, out), *[figure2(r, out) for r in runs], *curves(runs, out)]
    files += [f for f in (traffic_map(r, out) for r in runs) if f]
    files += [f for f in (bandwidth_figure(r, out) for r in runs) if f]
    files += [f for f in (energy_figure(r, out) for r in runs) if f]
    files += [f for f in (spikes_figure(r, out) for r in runs) if f]
    t1 = table1(runs)
    lines = ["# SpikeGrad runs", "", "| run | dataset | gradient | α | seed | epochs | test accuracy | "
             "rel. synops backward (last epoch) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        lines.append(f"| {r.name} | {r.cfg.dataset} | {r.cfg.gradient} | {r.cfg.alpha:g} | {r.cfg.seed} | "
                     f"{len(r.metrics)} | {r.final['test_accuracy']:.2f} % | {r.final['rel_synops_backward']:.4f} |")
    lines += ["", "## Final test accuracy over seeds (Table 1)", "",
              "| dataset | gradient | α | epochs | lr | shift | seeds | max | mean ± std |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for g in t1:
        std = "–" if math.isnan(g["std"]) else f"{g['std']:.2f}"
        lines.append(f"| {g['dataset']} | {g['gradient']} | {g['alpha']:g} | {g['epochs']} | {g['lr']:g} | "
                     f"{g['shift']} | {g['seeds']} | {g['max']:.2f} % | {g['mean']:.2f} ± {std} % |")
    repeated = [rep for g in t1 for rep in g["repeated"]]
    if repeated:
        lines += ["", "Runs that repeat a seed of their protocol (reported, not counted as more seeds):", ""]
        lines += [f"- {rep['run']}: seed {rep['seed']}, {rep['test_accuracy']:.2f} % (counted: {rep['counted']})"
                  for rep in repeated]
    ops = [line for r in runs for line in operations_lines(r)]
    if ops:
        lines += ["", "## Operations per training sample (the SNN's and its equivalent ANN's)", ""] + ops
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in files]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    result = dict(out=str(out), files=[*files, "summary.md"], table1=t1)
    (out / "table1.json").write_text(json.dumps(t1, indent=2) + "\n")
    return result
