"""``spikegrad plan RUN_DIR --nodes N --link-gbps G --latency-us L``: what a chip run's mapping would do
on N nodes, predicted from what the run measured.

The model (every assumption is one line of output, too):

* **Compute.** Chip c needs t_c = (its CPU seconds) / (images) per training sample, as measured in
  the run's epoch (``cpu_seconds`` of ``chips.parquet``: its forward, backward, APPLY, encoding and
  decoding). On the target each node has ``cores`` cores (default: one per chip); a node's chips
  share them, so the node needs Σ t_c / min(chips, cores) seconds per sample, and the pipeline can
  go no faster than its slowest node (chips of one node work on different micro-batches at once).
* **Placement.** Chips go to nodes in order, in contiguous blocks of ⌈C / N⌉ (neighbouring layers
  together, so that fewer links cross).
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
* **Calls.** ``--call-us C`` adds C µs of a core for every call a chip receives (one per micro-batch
  and phase, one per slice on chips holding slices), on the chip's node and again on the first
  node, where the driver makes the calls: Ray's cost per actor call, which the chips' CPU time does
  not show (about 1 ms on the 2-core machine the runs here come from, ``../shared/notes/ray.md``;
  default 0). The driver is one more process on the first node.
* **Not modelled.** Replicas (one pipeline is modelled; runs with ``--replicas`` are refused);
  the driver's own work; memory.

Predicted samples per second = the smallest of the three bounds. Checked against this machine by
planning for the machine itself (``--nodes 1 --cores 2`` on a 2-core machine): the measured rate over
the predicted one is the share that Ray's overheads (not modelled) leave (README).
"""

from __future__ import annotations

import math
from typing import Any

from cluster.errors import SpikeGradError

IN_FLIGHT = 4  # the chip engine's micro-batches in flight (launch.run.chips)


def plan(run: Any, nodes: int, link_gbps: float, latency_us: float, cores: int | None = None,
         epoch: int | None = None, micro_batch: int | None = None, call_us: float = 0.0) -> dict:
    """The prediction for one epoch of a chip run (``run``: a :class:`launch.tools.report.Run`-like
    object with ``cfg``, ``metrics``, ``chips``, ``traffic``); see the module docstring.
    micro_batch: on the target (default: what the chip engine picks there, with or without a core per chip)."""
    from ..run.chips import default_micro_batch  # noqa: PLC0415
    for name, v in (("nodes", nodes), ("cores", cores if cores is not None else 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SpikeGradError(f"plan: {name} expected an integer >= 1, got {v!r}")
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
    t = {int(r["chip"]): float(r.get(measure) or 0.0) / images for r in chips}
    bad = [c for c, v in t.items() if not (math.isfinite(v) and v >= 0)]
    if bad:
        raise SpikeGradError(f"plan: the chips table gives chip {bad[0]} a {measure} that is not a number >= 0")
    micro_run = chips[0].get("micro_batch") or run.cfg.micro_batch or run.cfg.batch_size  # older runs: config
    if isinstance(micro_run, bool) or not isinstance(micro_run, (int, float)) or not 0 < micro_run < math.inf:
        raise SpikeGradError(f"plan: the chips table's micro_batch expected a number > 0, got {micro_run!r}")
    per_node = -(-len(ids) // nodes)
    node_of = {c: i // per_node for i, c in enumerate(ids)}
    used = sorted(set(node_of.values()))
    cores_per_node = cores or per_node
    micro = float(micro_batch or default_micro_batch(run.cfg.batch_size, 1, own_core=cores_per_node >= per_node))
    sliced = run.cfg.chip_layout()[1] is not None
    calls = 0.0  # per sample, all chips
    for r in chips:  # Ray's cost per call: a call per micro-batch and phase (per slice on split chips)
        n_calls = 2 * (len(str(r["layers"]).split("-")) if sliced else 1) / micro
        t[int(r["chip"])] += n_calls * call_us * 1e-6
        calls += n_calls
    node_time = {n: sum(t[c] for c in ids if node_of[c] == n) for n in used}
    node_time[0] += calls * call_us * 1e-6  # the driver, on the first node, makes every call
    node_time = {n: v / min(cores_per_node, sum(node_of[c] == n for c in ids) + (n == 0)) for n, v in node_time.items()}
    compute_bound = 1.0 / max(node_time.values()) if max(node_time.values()) > 0 else math.inf
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
    network_bound = 1.0 / max(nic_time.values()) if max(nic_time.values()) > 0 else math.inf
    # messages go one per link and layer per micro-batch: count them per micro-batch of the run
    crossing_per_micro = crossing_messages / (images / float(micro_run))
    # the path of one micro-batch: chips holding the same layers work side by side, the others in turn
    stages: dict[str, float] = {}
    for r in chips:
        stages[str(r["layers"])] = max(stages.get(str(r["layers"]), 0.0), t[int(r["chip"])])
    round_trip = sum(stages.values()) * micro + crossing_per_micro * latency_us * 1e-6
    latency_bound = IN_FLIGHT * micro / round_trip if round_trip > 0 else math.inf
    bounds = {"compute": compute_bound, "network": network_bound, "latency": latency_bound}
    binding = min(bounds, key=lambda k: bounds[k])
    return dict(epoch=epoch, nodes=nodes, nodes_used=len(used), cores_per_node=cores_per_node, link_gbps=link_gbps,
                latency_us=latency_us, micro_batch=micro, measure=measure, call_us=call_us,
                measured_images_per_second=images / float(metric["seconds"]),
                chips=[dict(chip=c, node=node_of[c], seconds_per_sample=t[c]) for c in ids],
                node_seconds_per_sample=node_time, node_bits_out=out_bits, node_bits_in=in_bits, links=links,
                crossing_messages_per_micro_batch=crossing_per_micro, bounds=bounds, binding=binding,
                predicted_images_per_second=bounds[binding])


def format_plan(p: dict) -> str:
    lines = [f"plan for epoch {p['epoch']}: {len(p['chips'])} chips on {p['nodes']} node(s) "
             f"({p['nodes_used']} used), {p['cores_per_node']} core(s) per node, links {p['link_gbps']:g} Gbit/s, "
             f"{p['latency_us']:g} µs per crossing message, {p['call_us']:g} µs per call, micro-batch "
             f"{p['micro_batch']:g}",
             f"{'chip':>4} {'node':>4} {'µs/sample':>10}"]
    for c in p["chips"]:
        lines.append(f"{c['chip']:>4} {c['node']:>4} {1e6 * c['seconds_per_sample']:>10.2f}")
    for n, s in p["node_seconds_per_sample"].items():
        lines.append(f"node {n}: compute {1e6 * s:.2f} µs/sample; network out {p['node_bits_out'][n]:.4g} "
                     f"bits/sample, in {p['node_bits_in'][n]:.4g}")
    b = p["bounds"]
    lines.append(f"bounds (samples/s): compute {b['compute']:.4g}, network {b['network']:.4g}, latency "
                 f"{b['latency']:.4g} ({p['crossing_messages_per_micro_batch']:.3g} crossing messages per "
                 f"micro-batch)")
    lines.append(f"predicted: {p['predicted_images_per_second']:.4g} samples/s ({p['binding']} bound); measured in "
                 f"the run: {p['measured_images_per_second']:.4g} samples/s on its own machine")
    calls = (f"{p['call_us']:g} µs of a core per Ray call, on the chip's node and the driver's" if p["call_us"]
             else "Ray's per-call costs not modelled (--call-us)")
    lines.append(f"assumptions: chip work = its {p['measure'].replace('_', ' ')} per sample as measured; chips in "
                 f"contiguous blocks per node; full-duplex links; {calls}; replicas not modelled "
                 f"(launch/tools/plan.py)")
    return "\n".join(lines)
