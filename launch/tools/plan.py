"""``spikegrad plan RUN_DIR --nodes N``: how fast **this emulator** (the Python/Ray program, every chip
a process on a CPU core) would train a chip run's mapping on N CPU nodes, predicted from what the
run measured. It is not a neuromorphic chip's time: ``spikegrad forecast`` gives that.

The model (every assumption is printed, too):

* **Compute.** Chip c needs t_c = (its CPU seconds) / (images) per training sample, as measured in
  the run's epoch (``cpu_seconds`` of ``chips.parquet``: its forward, backward, APPLY, encoding and
  decoding). On the target each node has ``cores`` cores (default: one per chip); a node's chips
  share them, so the node needs Σ t_c / min(chips, cores) seconds per sample, and the pipeline can
  go no faster than its slowest node (chips of one node work on different micro-batches at once).
* **Placement.** Chips go to nodes in order, in balanced contiguous blocks (neighbouring layers
  together, so that fewer links cross): C chips on N ≤ C nodes give the first C mod N nodes
  ⌈C / N⌉ chips and the others ⌊C / N⌋, so every node asked for holds a chip (6 on 4: 2, 2, 1, 1).
  With fewer chips than nodes, one chip per node and the rest idle (said in the output).
* **Network.** A link whose two chips sit on different nodes carries its measured bytes per sample
  (the Arrow messages as sent) over the nodes' network interfaces: each node sends and receives at
  ``G`` Gbit/s (full duplex), so it needs max(bits out, bits in) / G seconds per sample.
* **Latency.** Each message that crosses nodes waits ``L`` µs. A micro-batch travels up the chips
  and back down; with ``in_flight`` micro-batches at once (the chip engine's 4), the pipeline can
  do no more than in_flight × micro-batch / (its round trip) samples per second, the round trip
  being the chips' time for one micro-batch along its path (chips that hold the same layers work
  side by side, the others in turn) plus L for each crossing message of one micro-batch (one per
  link and layer, as the run sent them). The micro-batch is the one the chip engine picks on the
  target (``--micro-batch`` to set it).
* **Calls.** Each call a chip receives (one per micro-batch and phase, one per slice on chips
  holding slices) costs C µs of a core on the chip's node and again on the first node, where the
  driver makes the calls: Ray's cost per actor call, which the chips' CPU time does not show. The
  run's tables cannot give it (they hold neither the driver's CPU time nor the machine's cores), so
  the default is the figure measured on the 2-core machine the runs here come from (CALL_US, with
  its range below); ``--call-us`` sets it (0: the optimistic bound of the chips' work alone).
* **Not modelled.** Replicas (one pipeline is modelled; runs with ``--replicas`` are refused);
  the driver's own work besides calls; Ray's own processes (raylet, GCS, object store); memory.

Predicted samples per second = the smallest of the three bounds. The uncertain inputs left at their
defaults (call cost, latency) are also taken at the low and high ends of their ranges (RANGES), which
gives the predicted range. CHECKS: what the model was checked against and how far off it was.
"""

from __future__ import annotations

import math
from typing import Any

from cluster.errors import SpikeGradError

IN_FLIGHT = 4  # the chip engine's micro-batches in flight (launch.run.chips)
LATENCY_US = 10.0  # µs per message crossing nodes (--latency-us)

# Ray's CPU cost per actor call, µs: default and (low, high), each with its source
CALL_US = 1000.0
CALL_SOURCE = ("median actor calls measured on the 2-core machine the runs here come from: 1.04 ms actor to "
               "actor, 1.26 ms driver to actor (../shared/notes/ray.md §1; Ray's docs: ~1 ms per call)")
RANGES = {
    "call_us": (125.0, 2000.0,
                "low: Ray's release microbenchmark, 8,000 asynchronous 1:1 actor calls/s on a 64-vCPU machine; high: "
                "16.1 ms of CPU per micro-batch of 8 calls (2 ms a call) in a 4-actor chain measured here "
                "(../shared/notes/ray.md)"),
    "latency_us": (10.0, 500.0,
                   "low: a data-centre network's one-way latency (an assumption, not measured here); high: a remote "
                   "Ray call's 0.3-0.6 ms more than a local one (Ray issue #7550, ../shared/notes/ray.md)"),
}
# What the model was checked against: runs on this 2-core machine planned for itself (1 node, 2 cores,
# the run's micro-batch); measured samples/s over predicted.
CHECKS = [
    ("docs/measurements/plan-mnist-2026-12-01.md", "MNIST 4,096 images on 6 chips and on 9 split chips", "",
     dict(call_0=(0.28, 0.37), call_1000=(0.46, 0.68))),
    ("docs/measurements/plan-2026-12-07.md", "digits on 4 chips, MNIST 4,096 images on 9 split chips",
     "the machine shared with other jobs", dict(call_0=(0.14, 0.26), call_1000=(0.34, 0.37))),
]


def place(chips: list[int], nodes: int) -> dict[int, int]:
    """Node of each chip: balanced contiguous blocks in chip order, every node used when there are at
    least as many chips as nodes (7 chips on 3 nodes: 3, 2, 2)."""
    big, rest = divmod(len(chips), nodes) if len(chips) >= nodes else (1, 0)
    node_of, i = {}, 0
    for n in range(min(nodes, len(chips))):
        for _ in range(big + (n < rest)):
            node_of[chips[i]] = n
            i += 1
    return node_of


def _bounds(chips: list[dict], work: dict[int, float], node_of: dict[int, int], cores_per_node: int, micro: float,
            calls: dict[int, float], crossing_per_micro: float, nic_time: dict[int, float], call_us: float,
            latency_us: float) -> tuple[dict[str, float], dict[int, float], dict[int, float]]:
    """(bounds in samples/s, each node's core-seconds per sample per core, each chip's seconds per sample)
    for one call cost and one latency; ``work``: each chip's measured CPU seconds per sample, ``calls``:
    the calls each chip receives per sample."""
    t = {c: work[c] + calls[c] * call_us * 1e-6 for c in work}
    used = sorted(set(node_of.values()))
    node_time = {n: sum(t[c] for c in t if node_of[c] == n) for n in used}
    node_time[0] += sum(calls.values()) * call_us * 1e-6  # the driver, on the first node, makes every call
    node_time = {n: v / min(cores_per_node, sum(node_of[c] == n for c in t) + (n == 0)) for n, v in node_time.items()}
    compute_bound = 1.0 / max(node_time.values()) if max(node_time.values()) > 0 else math.inf
    network_bound = 1.0 / max(nic_time.values()) if max(nic_time.values()) > 0 else math.inf
    # the path of one micro-batch: chips holding the same layers work side by side, the others in turn
    stages: dict[str, float] = {}
    for r in chips:
        stages[str(r["layers"])] = max(stages.get(str(r["layers"]), 0.0), t[int(r["chip"])])
    round_trip = sum(stages.values()) * micro + crossing_per_micro * latency_us * 1e-6
    latency_bound = IN_FLIGHT * micro / round_trip if round_trip > 0 else math.inf
    return {"compute": compute_bound, "network": network_bound, "latency": latency_bound}, node_time, t


def plan(run: Any, nodes: int, link_gbps: float, latency_us: float | None = None, cores: int | None = None,
         epoch: int | None = None, micro_batch: int | None = None, call_us: float | None = None) -> dict:
    """The prediction for one epoch of a chip run (``run``: a :class:`launch.tools.report.Run`-like
    object with ``cfg``, ``metrics``, ``chips``, ``traffic``); see the module docstring.
    micro_batch: on the target (default: what the chip engine picks there, with or without a core per chip).
    latency_us, call_us: None for the defaults (LATENCY_US, CALL_US), which are then also taken at the
    ends of their RANGES; a value given is used as is, for the range too."""
    from ..run.chips import default_micro_batch  # noqa: PLC0415  (chips.py imports Ray: only when a plan is made)

    for name, v in (("nodes", nodes), ("cores", cores if cores is not None else 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SpikeGradError(f"plan: {name} expected an integer >= 1, got {v!r}")
    given = {"latency_us": latency_us is not None, "call_us": call_us is not None}
    latency_us = LATENCY_US if latency_us is None else latency_us
    call_us = CALL_US if call_us is None else call_us
    for name, x in (("link-gbps", link_gbps), ("latency-us", latency_us), ("call-us", call_us)):
        if not (isinstance(x, (int, float)) and math.isfinite(x) and x >= 0) or (name == "link-gbps" and x == 0):
            raise SpikeGradError(f"plan: {name} expected a finite number {'> 0' if name == 'link-gbps' else '>= 0'}, "
                                 f"got {x!r}")
    if not run.chips:
        raise SpikeGradError(f"plan: {run.label_text} is not a chip run (it has no chips.parquet): a local run has "
                             f"no chips to place")
    if run.cfg.replicas > 1:
        raise SpikeGradError(f"plan: {run.label_text} ran {run.cfg.replicas} replicas; the model covers one pipeline "
                             f"(replicas are not modelled)")
    epochs = sorted({r["epoch"] for r in run.chips})
    epoch = epochs[-1] if epoch is None else epoch
    if epoch not in epochs:
        raise SpikeGradError(f"plan: epoch {epoch} expected one of the run's chip epochs {epochs}")
    metric = next((m for m in run.metrics if m["epoch"] == epoch), None)
    if metric is None or not metric["images"] or not metric["seconds"]:
        raise SpikeGradError(f"plan: the run has no images or seconds for epoch {epoch}")
    images = float(metric["images"])
    chips = sorted((r for r in run.chips if r["epoch"] == epoch), key=lambda r: r["chip"])
    ids = [int(r["chip"]) for r in chips]
    measure = "cpu_seconds" if all(isinstance(r.get("cpu_seconds"), (int, float)) for r in chips) else "busy_seconds"
    work = {int(r["chip"]): float(r.get(measure) or 0.0) / images for r in chips}
    bad = [c for c, v in work.items() if not (math.isfinite(v) and v >= 0)]
    if bad:
        raise SpikeGradError(f"plan: the chips table gives chip {bad[0]} a {measure} that is not a number >= 0")
    micro_run = chips[0].get("micro_batch") or run.cfg.micro_batch or run.cfg.batch_size  # older runs: config
    if isinstance(micro_run, bool) or not isinstance(micro_run, (int, float)) or not 0 < micro_run < math.inf:
        raise SpikeGradError(f"plan: the chips table's micro_batch expected a number > 0, got {micro_run!r}")
    node_of = place(ids, nodes)
    used = sorted(set(node_of.values()))
    per_node = max(sum(n == m for n in node_of.values()) for m in used)
    cores_per_node = cores or per_node
    micro = float(micro_batch or default_micro_batch(run.cfg.batch_size, 1, own_core=cores_per_node >= per_node))
    sliced = run.cfg.chip_layout()[1] is not None
    # Ray's calls: one per micro-batch and phase (per slice on split chips), per sample
    calls = {int(r["chip"]): 2 * (len(str(r["layers"]).split("-")) if sliced else 1) / micro for r in chips}
    out_bits = dict.fromkeys(used, 0.0)
    in_bits = dict.fromkeys(used, 0.0)
    crossing_messages = 0.0
    links = []
    for r in run.traffic:
        if r["epoch"] != epoch or r.get("kind", "spikes") != "spikes":
            continue
        src, dst = int(r["src"]), int(r["dst"])
        if src not in node_of or dst not in node_of:
            raise SpikeGradError(f"plan: the traffic table names chip {src if src not in node_of else dst}, which the "
                                 f"chips table of epoch {epoch} does not hold")
        bits = 8.0 * float(r["bytes"]) / images
        cross = node_of[src] != node_of[dst]
        if cross:
            out_bits[node_of[src]] += bits
            in_bits[node_of[dst]] += bits
            crossing_messages += float(r["messages"])
        links.append(dict(src=src, dst=dst, bits_per_sample=bits, crosses=cross))
    nic_time = {n: max(out_bits[n], in_bits[n]) / (link_gbps * 1e9) for n in used}
    # messages go one per link and layer per micro-batch: count them per micro-batch of the run
    crossing_per_micro = crossing_messages / (images / float(micro_run))

    def at(call: float, latency: float) -> tuple[dict[str, float], dict[int, float], dict[int, float]]:
        return _bounds(chips, work, node_of, cores_per_node, micro, calls, crossing_per_micro, nic_time, call,
                       latency)

    bounds, node_time, t = at(call_us, latency_us)
    binding = min(bounds, key=lambda k: bounds[k])
    # the range: each uncertain input left at its default taken at its low end (fast) and high end (slow)
    ends = {k: (RANGES[k][0], RANGES[k][1]) if not given[k] else (v, v)
            for k, v in (("call_us", call_us), ("latency_us", latency_us))}
    fast = min(at(ends["call_us"][0], ends["latency_us"][0])[0].values())
    slow = min(at(ends["call_us"][1], ends["latency_us"][1])[0].values())
    assumptions = [
        f"this emulator (Python processes under Ray, one per chip) on {nodes} CPU node(s), not a neuromorphic chip "
        f"(spikegrad forecast gives a chip's time)",
        f"chip work: its {measure.replace('_', ' ')} per sample as measured in epoch {epoch} of the run, the same "
        f"on the target's cores",
        f"chips in balanced contiguous blocks per node; {cores_per_node} core(s) per node"
        + ("" if cores else " (one per chip of the fullest node)") + "; the driver on node 0",
        f"links: {link_gbps:g} Gbit/s full duplex per node; {latency_us:g} µs per message crossing nodes"
        + (" (--latency-us)" if given["latency_us"] else f" (default; range {RANGES['latency_us'][2]})"),
        f"Ray: {call_us:g} µs of a core per call, on the chip's node and the driver's"
        + (" (--call-us)" if given["call_us"] else f" ({CALL_SOURCE}; range {RANGES['call_us'][2]})"),
        f"{IN_FLIGHT} micro-batches of {micro:g} in flight; not modelled: replicas, Ray's own processes, memory "
        f"(launch/tools/plan.py)",
    ]
    return dict(what="the emulator (Python/Ray) on CPU nodes; spikegrad forecast: a neuromorphic chip's time",
                epoch=epoch, nodes=nodes, nodes_used=len(used), cores_per_node=cores_per_node, link_gbps=link_gbps,
                latency_us=latency_us, micro_batch=micro, measure=measure, call_us=call_us,
                measured_images_per_second=images / float(metric["seconds"]),
                chips=[dict(chip=c, node=node_of[c], seconds_per_sample=t[c]) for c in ids],
                node_seconds_per_sample=node_time, node_bits_out=out_bits, node_bits_in=in_bits, links=links,
                crossing_messages_per_micro_batch=crossing_per_micro, bounds=bounds, binding=binding,
                predicted_images_per_second=bounds[binding],
                predicted_range=dict(low=slow, high=fast, call_us=ends["call_us"], latency_us=ends["latency_us"]),
                assumptions=assumptions,
                checked_against=[dict(file=f, runs=what, note=note, measured_over_predicted=r)
                                 for f, what, note, r in CHECKS])


def format_plan(p: dict) -> str:
    idle = p["nodes"] - p["nodes_used"]
    lines = [f"plan: the EMULATOR (this Python/Ray program, one process per chip) on CPU nodes, epoch {p['epoch']}; "
             f"not a neuromorphic chip's time (see `spikegrad forecast`)",
             f"{len(p['chips'])} chips on {p['nodes']} node(s)"
             + (f" ({idle} idle: fewer chips than nodes)" if idle else "")
             + f", {p['cores_per_node']} core(s) per node, links {p['link_gbps']:g} Gbit/s, {p['latency_us']:g} µs "
             f"per crossing message, {p['call_us']:g} µs per call, micro-batch {p['micro_batch']:g}",
             f"{'chip':>4} {'node':>4} {'µs/sample':>10}"]
    for c in p["chips"]:
        lines.append(f"{c['chip']:>4} {c['node']:>4} {1e6 * c['seconds_per_sample']:>10.2f}")
    for n, s in p["node_seconds_per_sample"].items():
        lines.append(f"node {n}: compute {1e6 * s:.2f} µs/sample per core; network out {p['node_bits_out'][n]:.4g} "
                     f"bits/sample, in {p['node_bits_in'][n]:.4g}")
    b = p["bounds"]
    lines.append(f"bounds (samples/s): compute {b['compute']:.4g}, network {b['network']:.4g}, latency "
                 f"{b['latency']:.4g} ({p['crossing_messages_per_micro_batch']:.3g} crossing messages per "
                 f"micro-batch)")
    r = p["predicted_range"]
    spread = [f"{k.replace('_us', '')} {lo:g}-{hi:g} µs" for k, (lo, hi) in (("call_us", r["call_us"]),
                                                                             ("latency_us", r["latency_us"]))
              if lo != hi]
    lines.append(f"predicted: {p['predicted_images_per_second']:.4g} samples/s ({p['binding']} bound); range "
                 f"{r['low']:.4g}-{r['high']:.4g} samples/s"
                 + (f" ({', '.join(spread)})" if spread else " (no input left to its default range)"))
    lines.append(f"measured in the run: {p['measured_images_per_second']:.4g} samples/s on its own machine")
    lines.append("assumptions:")
    lines += [f"  - {a}" for a in p["assumptions"]]
    lines.append("checked against: each run planned for the 2-core machine it ran on (1 node, 2 cores), measured "
                 "over predicted samples/s:")
    for c in p["checked_against"]:
        z, one = c["measured_over_predicted"]["call_0"], c["measured_over_predicted"]["call_1000"]
        lines.append(f"  - {c['file']} ({c['runs']}{'; ' + c['note'] if c['note'] else ''}): {z[0]:.2f}-{z[1]:.2f} "
                     f"at 0 µs per call, {one[0]:.2f}-{one[1]:.2f} at 1,000 µs")
    checked = [r for c in p["checked_against"] for r in c["measured_over_predicted"]["call_1000"]]
    if checked:
        lines.append(f"  so the model is optimistic: at 1,000 µs per call the runs reached {min(checked):.2f}-"
                     f"{max(checked):.2f} of it; read a prediction as an upper bound (Ray's own processes are not in "
                     f"it); predictions for several nodes are unchecked (one machine here)")
    return "\n".join(lines)
