"""``spikegrad plan RUN_DIR --nodes N``: how fast **this emulator** (the Python/Ray program, every chip
a process on a CPU core) would train a chip run's mapping on N CPU nodes, predicted from what the
run measured. It is not a neuromorphic chip's time: ``spikegrad forecast`` gives that.

The model (v3; every assumption is printed, too):

* **What a run's CPU is made of.** The run's chips used ``cpu_seconds`` (``chips.parquet``) and its
  machine ``machine_cpu_seconds`` (``metrics.parquet``: all processes over the epoch). Each is split
  into parts that follow the calls and a part that follows the samples: a chip's CPU is
  CHIP_CALL_US per call it receives plus its work per sample; the machine's CPU outside the chips
  is RAY_CALL_US per call (the driver, Ray's workers and daemons), OBJECT_US per message that goes
  through Ray's object store, NODE_CORES of a core per node for Ray's daemons, and Ray's part per
  sample (what is left). The per-call, object and daemon figures were measured on the project's
  2-core machine (CALLS_SOURCE); the parts per sample are the run's own. At the run's micro-batch
  on its own node the model gives back the run's rate; at another micro-batch the calls, and only
  they, change in proportion.
* **Compute.** On the target each node has ``cores`` cores (default: one per chip), less
  NODE_CORES; a node's chips share them, so the node needs Σ (its chips' work and its share of the
  calls' cost) / its cores seconds per sample, and the pipeline can go no faster than its slowest
  node (chips of one node work on different micro-batches at once).
* **Network.** A message that crosses nodes (see Ray's routes) carries its measured bytes per sample
  (the Arrow messages as sent) over the nodes' network interfaces: each node sends and receives at
  ``G`` Gbit/s (full duplex), so it needs max(bits out, bits in) / G seconds per sample. Message
  sizes follow the micro-batch.
* **Overlap.** A batch's weights change before the next batch starts, so no more micro-batches are
  in flight than a batch holds (and no more than the chip engine's 4). Compute and transfers
  overlap except for one micro-batch's share of the smaller: max(C, N) + min(C, N) / in_flight
  seconds per sample (a chain with one micro-batch per batch works and sends in turn: C + N).
* **Latency.** Each message that crosses nodes waits ``L`` µs. A micro-batch travels up the chips
  and back down; the pipeline can do no more than in_flight × micro-batch / (its round trip)
  samples per second, the round trip being the chips' time for one micro-batch along its path
  (chips that hold the same layers work side by side, the others in turn), L for each crossing
  message of one micro-batch (one per link and layer, as the run sent them) and its crossing bits
  one after the other. On shared cores whose busy share is the run's (below), that share already
  holds how long the chips waited for each other, and the path's work is left out here.
* **Calls.** Each call a chip receives costs Ray u seconds of a core (RAY_CALL_US when the run
  measured its machine's CPU on one node; else CALL_US, from the notes, or ``--call-us``, which is
  then all Ray costs), half on the chip's node and half on the first node, where the driver makes
  the calls. The calls per sample are the run's (``calls`` / images) where it recorded them.
* **Shared cores.** ``--shared-cores S``: the nodes are emulated hosts on one machine of S cores
  (``spikegrad hosts``): every node's work, the calls included, shares those S cores, as many of
  them busy as the run kept busy at its micro-batch (all S at a smaller one).
* **Placement.** As Ray places the run's chips (``--placement`` of the run): ``spread`` puts chip
  copy b (replica r, chip c: b = r·C + c) on node b mod N, ``pack`` all on node 0 (the chips ask
  for a token share of a CPU, so one node holds them all), ``blocks`` balanced contiguous blocks.
* **Replicas.** R copies of the pipeline each take 1/R of every batch; each chip copy's increments
  (the run's ``increments`` traffic rows) go to the R − 1 other copies of that chip once per batch.
* **Ray's routes.** A message (spike counts, increments) of at most 100 KiB is returned inline to
  its owner, the driver on node 0, and travels on from there; a larger one is pulled by its
  consumer from the producer's node, through the object store. So a small message between two
  chips of node 1 crosses twice. Chips whose messages went through /dev/shm in the run
  (``chips.parquet``'s ``transport``, :mod:`actors.transport`) send those to chips of their own node
  off the links and outside the object store. Each crossing hop carries the payload times
  WIRE_FACTOR (TCP/IP/Ethernet headers), and each call to a chip off node 0 CONTROL_BYTES each way
  (Ray's task specification and reply): both measured on emulated hosts (CONTROL_SOURCE).
* **Not modelled.** Memory.

The prediction is the overlap's rate, or the latency bound where it is smaller. The uncertain inputs
left at their defaults (call cost, latency) are also taken at the low and high ends of their ranges
(RANGES), which gives the predicted range; its fast end takes compute and transfers as overlapping
wholly, its slow end as not overlapping at all. CHECKS and HOST_CHECKS: what the model was checked
against and how far off it was.
"""

from __future__ import annotations

import math
from typing import Any

from cluster.errors import SpikeGradError

IN_FLIGHT = 4  # the chip engine's micro-batches in flight (launch.run.chips)
LATENCY_US = 10.0  # µs per message crossing nodes (--latency-us)
INLINE_BYTES = 100 * 1024  # Ray returns objects up to this size inline to their owner (max_direct_call_object_size)
PLACEMENTS = ("spread", "pack", "blocks")

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
# v3: what a call costs apart from the samples it carries, and what the nodes cost idle, measured on the
# 2-core machine of the runs here with the current code (CALLS_SOURCE): a run's measured CPU is split
# into these parts and a part per sample, and only the per-call parts follow the calls at another micro-batch
CHIP_CALL_US = 1200.0  # the chips' CPU per call they receive (its fixed part: Ray's worker, headers, counters)
RAY_CALL_US = 2400.0  # the machine's CPU outside the chips per call (the driver, Ray's workers and daemons)
NODE_CORES = 0.02  # the cores Ray's daemons keep busy on each node, idle (3 idle emulated hosts: 0.062)
OBJECT_US = 5000.0  # the machine's CPU per message through Ray's object store (over 100 KiB; bench chips --profile)
CALLS_SOURCE = "docs/measurements/plan-calls-2026-12-08.md"
# A call to a chip off the driver's node costs this many times a local one (Ray's remote path: the other
# node's raylet, gRPC, object transfers), fitted to the busy CPU per call of the runs in REMOTE_SOURCE
REMOTE_CALL = 1.6
REMOTE_SOURCE = "docs/measurements/hosts-2026-12-07.md §4 (the first scaling runs, 1-3 emulated hosts)"
# The wire beyond the payload, fitted to the kernel's interface counters of emulated hosts
WIRE_FACTOR = 1.05
CONTROL_BYTES = 2000.0
CONTROL_SOURCE = "checked against the interface counters of 3 emulated hosts, docs/measurements/hosts-2026-12-07.md §2"
# Checked on emulated hosts (shared cores), measured samples/s over predicted: (file, what, result)
HOST_CHECKS = [
    ("docs/measurements/plan-calls-2026-12-08.md §2",
     "fresh runs predicted by this model (v3) before they ran: digits chain at micro-batch 8 (calibrated at 32), "
     "MNIST (1,024 images) on the 12-chip 2,000/100,000 split mapping; 2-3 hosts at 10-1,000 Mbit/s",
     "11 of 12 within ±25 % (0.70-1.24); v2 on the same runs: 8 of 12 (0.65-1.56)"),
    ("docs/measurements/plan-calls-2026-12-08.md §2b",
     "a second fresh set, predicted before it ran: MNIST (1,024 images) with 2 replicas, digits on 2 chip groups "
     "at micro-batch 8 (calibrated at 32); 2-3 hosts at 10-1,000 Mbit/s",
     "10 of 12 within ±25 % (0.88-1.35; the misses: the groups at 10 Mbit/s, network over-charged); v2: 3 of 12"),
    ("docs/measurements/plan-calls-2026-12-08.md §3",
     "the runs of docs/measurements/hosts-2026-12-07.md §4 (the code of 2026-12-07), replayed",
     "digits chain, split, 2 replicas on 1-3 hosts: 20 of 27 (0.40-1.57; v2, fitted to them: 20); digits on 2 "
     "chip groups and the MNIST chain, whose misses v3 was designed from: 12 of 12 (0.76-1.12; v2: 2 of 12)"),
]
# What the model was checked against on one node: measured samples/s over predicted.
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


def place_copies(chips: int, replicas: int, nodes: int, placement: str) -> dict[tuple[int, int], int]:
    """{(replica, chip): node} as Ray places the run's placement group (module docstring)."""
    copies = [(r, c) for r in range(replicas) for c in range(chips)]
    if placement == "pack":
        return dict.fromkeys(copies, 0)
    if placement == "spread":
        return {k: b % nodes for b, k in enumerate(copies)}
    blocks = place(list(range(len(copies))), nodes)
    return {k: blocks[b] for b, k in enumerate(copies)}


def _hops(src: int, dst: int, size: float) -> list[tuple[int, int]]:
    """The node-to-node hops of one message from node src to node dst (Ray's routes)."""
    path = [src, 0, dst] if size <= INLINE_BYTES else [src, dst]
    return [(a, b) for a, b in zip(path, path[1:]) if a != b]


def _bounds(work: dict, cost: dict, node_of: dict, shared_cores: float | None, cores_per_node: int,
            extra: dict[int, float], nic_time: dict[int, float], round_trip: float, micro: float,
            in_flight: int) -> tuple[dict[str, float], dict[int, float]]:
    """(bounds in samples/s, each node's core-seconds per sample per core); work, cost: per chip copy per
    sample (its chip's CPU; Ray's CPU for its calls, half on its node and half on the driver's);
    extra: Ray's further CPU per sample on each node (object-store messages); shared_cores: the
    cores all nodes share, as many as the schedule keeps busy. Each node's daemons take NODE_CORES."""
    used = sorted(set(node_of.values()))
    if shared_cores:
        free = max(0.1 * shared_cores, shared_cores - NODE_CORES * len(used))
        node_time = {0: (sum(work.values()) + sum(cost.values()) + sum(extra.values())) / free}
    else:
        node_time = {n: sum(work[k] + cost[k] / 2 for k in work if node_of[k] == n) + extra.get(n, 0.0)
                     for n in used}
        node_time[0] = node_time.get(0, 0.0) + sum(cost.values()) / 2  # the driver makes every call
        node_time = {n: v / max(0.1, min(cores_per_node, sum(node_of[k] == n for k in work) + (n == 0)) - NODE_CORES)
                     for n, v in node_time.items()}
    worst = max(node_time.values())
    compute = 1.0 / worst if worst > 0 else math.inf
    net = max(nic_time.values(), default=0.0)
    network = 1.0 / net if net > 0 else math.inf
    latency = in_flight * micro / round_trip if round_trip > 0 else math.inf
    return {"compute": compute, "network": network, "latency": latency}, node_time


def _overlapped(bounds: dict[str, float], in_flight: int) -> float:
    """Samples/s of compute and transfers that overlap except for one micro-batch's share of the
    smaller: per sample max(C, N) + min(C, N) / in_flight (all of both with one micro-batch in
    flight, a chain that works and sends in turn), and no more than the latency bound."""
    c, n = (1.0 / bounds[k] if bounds[k] > 0 and math.isfinite(bounds[k]) else 0.0 for k in ("compute", "network"))
    both = max(c, n) + min(c, n) / in_flight
    return min(1.0 / both if both > 0 else math.inf, bounds["latency"])


def _number(x: Any) -> float | None:
    """x as a finite float >= 0, or None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
        return None
    return float(x)


def _object_messages(rows: list[dict], epoch: int, shm: dict[int, bool]) -> float:
    """The epoch's messages over Ray's inline limit that went through Ray's object store (all of the
    replicas' increments; spikes unless their chip sent them through /dev/shm within its node)."""
    n = 0.0
    for r in rows:
        kind = r.get("kind", "spikes")
        if r.get("epoch") != epoch or kind not in ("spikes", "increments"):
            continue
        messages, nbytes = _number(r.get("messages")), _number(r.get("bytes"))
        if not messages or nbytes is None or nbytes / messages <= INLINE_BYTES:
            continue
        local = kind == "spikes" and shm.get(int(r["src"]), False) and not r.get("cross_node", False)
        n += 0.0 if local else messages
    return n


def _epoch_costs(run: Any, epoch: int | None = None) -> dict[str, Any]:
    """What a chip run measured in one epoch (the last by default), for the per-call calibration:
    images, seconds, calls, the chips' CPU, the machine's busy CPU, object-store messages, nodes,
    and each chip's layers. Raises SpikeGradError where the run did not record them."""
    chips_all = run.chips or []
    epochs = sorted({r["epoch"] for r in chips_all})
    if not epochs:
        raise SpikeGradError(f"plan: {run.label_text} is not a chip run (it has no chips.parquet)")
    epoch = epochs[-1] if epoch is None else epoch
    metric = next((m for m in run.metrics if m["epoch"] == epoch), None)
    chips = sorted((r for r in chips_all if r["epoch"] == epoch), key=lambda r: r["chip"])
    got = dict(images=_number((metric or {}).get("images")), seconds=_number((metric or {}).get("seconds")),
               calls=_number((metric or {}).get("calls")), busy=_number((metric or {}).get("machine_cpu_seconds")))
    missing = [k for k, v in got.items() if not v]
    if missing:
        raise SpikeGradError(f"plan: {run.label_text} has no {', '.join(missing)} recorded for epoch {epoch} "
                             f"(runs since 2026-12-07 record calls and the machine's CPU)")
    cpu = [_number(r.get("cpu_seconds")) for r in chips]
    if any(v is None for v in cpu):
        raise SpikeGradError(f"plan: the chips table of {run.label_text} has a cpu_seconds that is not a number >= 0")
    shm = {int(r["chip"]): "shm" in str(r.get("transport") or "") for r in chips}
    return dict(got, epoch=epoch, chips_cpu=sum(v for v in cpu if v is not None),
                objects=_object_messages(run.traffic or [], epoch, shm),
                nodes={n for r in chips for n in str(r.get("node", "")).split(",") if n},
                layers=[str(r["layers"]) for r in chips])


def calls_calibration(run: Any, other: Any, epoch: int | None = None) -> dict[str, Any]:
    """The per-call parts from two runs of one mapping at different micro-batches, each on one node:
    the chips' CPU per call and the machine's CPU outside the chips per call, as the change per
    sample of each over the change of the calls per sample (Ray's object-store messages and its
    daemons taken out first, at OBJECT_US and NODE_CORES). Returns {chip_call_us, ray_call_us, text}."""
    a, b = _epoch_costs(run, epoch), _epoch_costs(other)
    if a["layers"] != b["layers"] or run.cfg.topology != other.cfg.topology or run.cfg.replicas != other.cfg.replicas:
        raise SpikeGradError(f"plan: --calls-from expected a run of the same network on the same chips as "
                             f"{run.label_text}; {other.label_text} differs (topology, chips' layers or replicas)")
    if len(a["nodes"]) > 1 or len(b["nodes"]) > 1:
        raise SpikeGradError("plan: --calls-from expected two runs whose chips each ran on one node (the machine's "
                             "CPU holds all of them then)")
    per = {k: {x: v[x] / v["images"] for x in ("calls", "chips_cpu")} for k, v in (("a", a), ("b", b))}
    for k, v in (("a", a), ("b", b)):
        per[k]["rest"] = (v["busy"] - v["chips_cpu"] - OBJECT_US * 1e-6 * v["objects"]
                          - NODE_CORES * v["seconds"]) / v["images"]
    d_calls = per["b"]["calls"] - per["a"]["calls"]
    if abs(d_calls) < 0.2 * max(per["a"]["calls"], per["b"]["calls"]):
        raise SpikeGradError(f"plan: --calls-from expected a run at another micro-batch: the two made "
                             f"{per['a']['calls']:.3g} and {per['b']['calls']:.3g} calls per sample (at least 20 % "
                             f"apart); run one of them again with --micro-batch")
    chip_call = (per["b"]["chips_cpu"] - per["a"]["chips_cpu"]) / d_calls * 1e6
    ray_call = (per["b"]["rest"] - per["a"]["rest"]) / d_calls * 1e6
    if chip_call < 0 or ray_call < 0:
        raise SpikeGradError(f"plan: --calls-from: the two runs give a negative cost per call (chips "
                             f"{chip_call:.4g} µs, the rest {ray_call:.4g} µs): the runs' spread is larger than what "
                             f"the calls cost; longer runs (more images) help")
    text = (f"from {run.label_text} and {other.label_text} (--calls-from): {per['a']['calls']:.3g} and "
            f"{per['b']['calls']:.3g} calls per sample")
    return dict(chip_call_us=chip_call, ray_call_us=ray_call, text=text)


def plan(run: Any, nodes: int, link_gbps: float, latency_us: float | None = None, cores: int | None = None,
         epoch: int | None = None, micro_batch: int | None = None, call_us: float | None = None,
         shared_cores: int | None = None, placement: str | None = None, calls_from: Any | None = None) -> dict:
    """The prediction for one epoch of a chip run (``run``: a :class:`launch.tools.report.Run`-like
    object with ``cfg``, ``metrics``, ``chips``, ``traffic``); see the module docstring.
    micro_batch: on the target (default: what the chip engine picks there, with or without a core per chip).
    latency_us, call_us: None for the defaults (LATENCY_US; the run's measured call cost, else
    CALL_US), which are then also taken at the ends of their RANGES; a value given is used as is.
    shared_cores: the nodes share that many cores (emulated hosts on one machine); placement: as
    Ray places the chips (default: the run's). calls_from: a second run of the same mapping at
    another micro-batch, whose difference from ``run`` gives the per-call parts
    (:func:`calls_calibration`) instead of CHIP_CALL_US and RAY_CALL_US."""
    from ..run.chips import default_micro_batch  # noqa: PLC0415  (chips.py imports Ray: only when a plan is made)

    for name, v in (("nodes", nodes), ("cores", cores if cores is not None else 1),
                    ("shared-cores", shared_cores if shared_cores is not None else 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SpikeGradError(f"plan: {name} expected an integer >= 1, got {v!r}")
    latency_given = latency_us is not None
    latency_us = LATENCY_US if latency_us is None else latency_us
    for name, x in (("link-gbps", link_gbps), ("latency-us", latency_us), ("call-us", call_us or 0.0)):
        if not (isinstance(x, (int, float)) and math.isfinite(x) and x >= 0) or (name == "link-gbps" and x == 0):
            raise SpikeGradError(f"plan: {name} expected a finite number {'> 0' if name == 'link-gbps' else '>= 0'}, "
                                 f"got {x!r}")
    if not run.chips:
        raise SpikeGradError(f"plan: {run.label_text} is not a chip run (it has no chips.parquet): a local run has "
                             f"no chips to place")
    placement = placement or run.cfg.placement
    if placement not in PLACEMENTS:
        raise SpikeGradError(f"plan: placement expected one of {PLACEMENTS}, got {placement!r}")
    epochs = sorted({r["epoch"] for r in run.chips})
    epoch = epochs[-1] if epoch is None else epoch
    if epoch not in epochs:
        raise SpikeGradError(f"plan: epoch {epoch} expected one of the run's chip epochs {epochs}")
    metric = next((m for m in run.metrics if m["epoch"] == epoch), None)
    if metric is None or not metric["images"] or not metric["seconds"]:
        raise SpikeGradError(f"plan: the run has no images or seconds for epoch {epoch}")
    images = float(metric["images"])
    R = int(run.cfg.replicas)
    chips = sorted((r for r in run.chips if r["epoch"] == epoch), key=lambda r: r["chip"])
    ids = [int(r["chip"]) for r in chips]
    if ids != list(range(len(ids))):
        raise SpikeGradError(f"plan: the chips table of epoch {epoch} expected chips 0..{len(ids) - 1}, got {ids[:12]}")
    measure = "cpu_seconds" if all(isinstance(r.get("cpu_seconds"), (int, float)) for r in chips) else "busy_seconds"
    cpu = {int(r["chip"]): float(r.get(measure) or 0.0) for r in chips}
    bad = [c for c, v in cpu.items() if not (math.isfinite(v) and v >= 0)]
    if bad:
        raise SpikeGradError(f"plan: the chips table gives chip {bad[0]} a {measure} that is not a number >= 0")
    micro_run = chips[0].get("micro_batch") or run.cfg.micro_batch or run.cfg.batch_size  # older runs: config
    if isinstance(micro_run, bool) or not isinstance(micro_run, (int, float)) or not 0 < micro_run < math.inf:
        raise SpikeGradError(f"plan: the chips table's micro_batch expected a number > 0, got {micro_run!r}")
    node_of = place_copies(len(ids), R, nodes, placement)
    used = sorted(set(node_of.values()))
    per_node = max(sum(n == m for n in node_of.values()) for m in used)
    cores_per_node = cores or per_node
    # the chip engine's micro-batch there: cut finer where every chip copy has a CPU of Ray's (emulated
    # hosts offer `cores` CPUs each, 1 by default as `spikegrad hosts up`)
    own_core = nodes * (cores or 1) >= len(node_of) if shared_cores else cores_per_node >= per_node
    micro = float(micro_batch or default_micro_batch(run.cfg.batch_size, R, own_core=own_core))
    # micro-batches of one batch in flight: a batch's weights change before the next one starts
    in_flight = max(1, min(IN_FLIGHT, math.ceil(run.cfg.batch_size / R / micro)))
    sliced = run.cfg.chip_layout()[1] is not None
    slices = {c: len(str(r["layers"]).split("-")) if sliced else 1 for c, r in zip(ids, chips)}
    formula = {k: 2 * slices[k[1]] / micro / R for k in node_of}  # a call per phase (and slice) per micro-batch
    run_calls = metric.get("calls")
    calls_measured = bool(_number(run_calls))
    # the run's calls per sample, at the target's micro-batch (calls go with micro-batches)
    scale = ((float(run_calls) / images) / (sum(formula.values()) * micro / float(micro_run))
             if calls_measured else 1.0)
    calls = {k: formula[k] * scale for k in node_of}
    calls_run = {k: v * micro / float(micro_run) for k, v in calls.items()}  # per sample, in the run
    # the chips' work per copy and sample: a part per sample, and CHIP_CALL_US per call they receive (or
    # what two runs at different micro-batches measured: --calls-from)
    pair = calls_calibration(run, calls_from, epoch) if calls_from is not None else None
    chip_call_us = pair["chip_call_us"] if pair else CHIP_CALL_US
    calls_source = pair["text"] if pair else CALLS_SOURCE
    chip_call = chip_call_us * 1e-6
    measured_work = {k: cpu[k[1]] / images / R for k in node_of}
    floored = [k for k in node_of if measured_work[k] - chip_call * calls_run[k] < 0.1 * measured_work[k]]
    work = {k: max(0.1 * measured_work[k], measured_work[k] - chip_call * calls_run[k]) + chip_call * calls[k]
            for k in node_of}
    # how each chip's messages travelled in the run (chips.parquet's transport; runs before it: Ray)
    shm = {int(r["chip"]): "shm" in str(r.get("transport") or "") for r in chips}
    # the busy CPU of the run's machine over the epoch (all processes), where the run recorded it
    busy = metric.get("machine_cpu_seconds")
    busy_known = bool(_number(busy))
    # the cores a run on shared cores keeps busy: as many as the run did (busy CPU over its seconds),
    # with the run's micro-batch; with smaller micro-batches the chips overlap more: all of them
    parallel: float | None = shared_cores
    parallel_measured = bool(shared_cores and micro >= float(micro_run) and busy_known)
    if parallel_measured and shared_cores:
        parallel = min(float(shared_cores), float(busy) / float(metric["seconds"]))
    # the network: every message's hops at the target's message size, payload x WIRE_FACTOR, and
    # CONTROL_BYTES each way per call off node 0; messages through Ray's object store cost OBJECT_US
    out_bits = dict.fromkeys(used, 0.0)
    in_bits = dict.fromkeys(used, 0.0)
    objects = dict.fromkeys(used, 0.0)  # Ray's CPU per sample on each node for object-store messages
    crossing_messages = 0.0
    path_bits = 0.0  # bits per sample that cross nodes on one replica's path (spikes)
    run_objects = _object_messages(run.traffic, epoch, shm)  # the run's messages through Ray's object store
    links = []
    object_s = OBJECT_US * 1e-6

    def carry(src: int, dst: int, bits: float, size: float, messages: float, local: bool) -> int:
        nonlocal crossing_messages
        hops = [] if local and src == dst else _hops(src, dst, size)
        for a, b in hops:
            out_bits[a] += bits
            in_bits[b] += bits
        crossing_messages += messages * len(hops)
        if size > INLINE_BYTES and not (local and src == dst):
            objects[src] += messages * object_s / images / 2
            objects[dst] += messages * object_s / images / 2
        return len(hops)

    for r in run.traffic:
        kind = r.get("kind", "spikes")
        if r["epoch"] != epoch or kind not in ("spikes", "increments"):
            continue
        src, dst = int(r["src"]), int(r["dst"])
        if src not in cpu or dst not in cpu:
            raise SpikeGradError(f"plan: the traffic table names chip {src if src not in cpu else dst}, which the "
                                 f"chips table of epoch {epoch} does not hold")
        messages = float(r["messages"])
        size_run = float(r["bytes"]) / messages if messages else 0.0
        # the replicas' increments go through Ray whatever the transport; spikes between chips of one node
        # through /dev/shm where the chip used it
        local = kind == "spikes" and shm[src]
        if kind == "spikes":  # each replica's copy of the link: 1/R of the bytes; messages go with micro-batches
            size = size_run * micro / float(micro_run)
            messages_t = messages * float(micro_run) / micro
            bits = 8.0 * WIRE_FACTOR * float(r["bytes"]) / images / R
            hops = [carry(node_of[(q, src)], node_of[(q, dst)], bits, size, messages_t / R, local)
                    for q in range(R)]
            path_bits += bits * hops[0]
        else:  # copy (q, c)'s increments to each other copy (p, c), once per batch whatever the micro-batch
            pairs = [(q, p) for q in range(R) for p in range(R) if p != q]
            bits = 8.0 * WIRE_FACTOR * float(r["bytes"]) / images / max(1, len(pairs))
            hops = [carry(node_of[(q, src)], node_of[(p, src)], bits, size_run, messages / max(1, len(pairs)),
                          local) for q, p in pairs]
        links.append(dict(src=src, dst=dst, kind=kind, bits_per_sample=8.0 * float(r["bytes"]) / images,
                          crosses=any(hops)))
    for k, n in node_of.items():
        if n != 0:
            control = 8.0 * CONTROL_BYTES * calls[k]
            out_bits[0] += control
            in_bits[n] += control
            out_bits[n] += control
            in_bits[0] += control
    nic_time = {n: max(out_bits[n], in_bits[n]) / (link_gbps * 1e9) for n in used}
    crossing_per_micro = crossing_messages / images * micro
    # Ray's CPU per call (outside the chips), and what the run spent beyond its calls, objects and daemons
    run_nodes = {n for r in chips for n in str(r.get("node", "")).split(",") if n}
    call_source, call_given = CALL_SOURCE, call_us is not None
    per_sample_s = 0.0  # Ray's and the driver's CPU per sample beyond the per-call parts (the run's)
    short = ""  # said when the run spent less outside its chips than the per-call parts charge
    if call_us is not None:  # --call-us: all Ray's calls and objects cost, per call (its daemons still count)
        objects = dict.fromkeys(used, 0.0)
    elif calls_measured and busy_known and len(run_nodes) <= 1:
        call_us = pair["ray_call_us"] if pair else RAY_CALL_US
        rest = float(busy) - sum(cpu.values())
        beyond = (rest - call_us * 1e-6 * float(run_calls) - object_s * run_objects
                  - NODE_CORES * float(metric["seconds"]))
        per_sample_s = max(0.0, beyond) / images
        if beyond < 0:
            short = (f"the run's measured CPU outside the chips ({rest:.3g} s) is less than its calls, objects and "
                     f"daemons at these figures ({rest - beyond:.3g} s): the model charges more than the run spent")
        call_source = (f"{calls_source}, with {OBJECT_US:g} µs per object-store message ({CALLS_SOURCE}); "
                       f"the rest of the run's epoch {epoch} outside the chips (its machine's busy CPU "
                       f"{float(busy):.3g} s − the chips' {sum(cpu.values()):.3g} s − {int(run_calls)} calls − "
                       f"{int(run_objects)} object-store messages − Ray's daemons) is "
                       f"{per_sample_s * 1e6:.3g} µs per sample")
    else:
        call_us = CALL_US
    share = {k: calls[k] / sum(calls.values()) if sum(calls.values()) else 1.0 / len(calls) for k in calls}
    # the path of one micro-batch: each chip's work (with its calls) in turn, the latency of each crossing,
    # and its bits on the links one after the other. Where the cores busy are the run's, they already hold
    # how much its chips waited for each other: the path's work is in the compute bound then
    path_s = 0.0 if parallel_measured else sum(work[(0, c)] * R for c in ids) * micro
    path_net = path_bits * R * micro / (link_gbps * 1e9)

    def at(call: float, latency: float) -> tuple[dict[str, float], dict[int, float]]:
        call_s = call * 1e-6
        cost = {k: calls[k] * call_s * (REMOTE_CALL if node_of[k] != 0 else 1.0) + per_sample_s * share[k]
                for k in calls}
        trip = (path_s + (0.0 if parallel_measured else sum(cost[(0, c)] * R for c in ids) * micro)
                + crossing_per_micro * latency * 1e-6 + path_net)
        return _bounds(work, cost, node_of, parallel, cores_per_node, objects, nic_time, trip, micro, in_flight)

    bounds, node_time = at(call_us, latency_us)
    predicted = _overlapped(bounds, in_flight)
    binding = ("latency" if predicted >= bounds["latency"] else
               "network" if bounds["network"] < bounds["compute"] else "compute")
    # the range: the uncertain inputs left at their defaults at their ends; the fast end with compute and
    # transfers overlapping wholly, the slow end not at all
    ends = {"call_us": (RANGES["call_us"][0], RANGES["call_us"][1]) if not call_given and call_source == CALL_SOURCE
            else (call_us, call_us),
            "latency_us": (RANGES["latency_us"][0], RANGES["latency_us"][1]) if not latency_given
            else (latency_us, latency_us)}
    fast = min(at(ends["call_us"][0], ends["latency_us"][0])[0].values())
    slow = _overlapped(at(ends["call_us"][1], ends["latency_us"][1])[0], 1)
    where = {f"{q}.{c}": node_of[(q, c)] for q, c in node_of}
    measured_nodes = {int(r["chip"]): str(r.get("node", "")) for r in chips}
    assumptions = [
        f"this emulator (Python processes under Ray, one per chip) on {nodes} CPU node(s), not a neuromorphic chip "
        f"(spikegrad forecast gives a chip's time)",
        f"chip work: its {measure.replace('_', ' ')} as measured in epoch {epoch} of the run, split into "
        f"{chip_call_us:.4g} µs per call it receives ({calls_source}) and a part per sample, the same on the target's "
        f"cores" + (f" (chips {sorted({k[1] for k in floored})}: the part per sample floored at 10 % of the "
                    f"measured)" if floored else ""),
        (f"all nodes share {shared_cores} core(s) (emulated hosts on one machine), {parallel:.3g} of them busy"
         + (" (as in the run, whose micro-batches the target keeps)" if parallel != shared_cores else "")
         if shared_cores else
         f"{cores_per_node} core(s) per node" + ("" if cores else " (one per chip of the fullest node)"))
        + f"; Ray's daemons keep {NODE_CORES:g} core busy on each node ({CALLS_SOURCE})"
        + f"; chips placed as Ray's {placement} does; the driver on node 0",
        f"{R} replica(s); each chip copy's increments to the other copies once per batch (the run's increments rows)",
        f"links: {link_gbps:g} Gbit/s full duplex per node; messages up to {INLINE_BYTES // 1024} KiB go through the "
        f"driver's node, larger ones straight through Ray's object store ({OBJECT_US:g} µs of CPU each); "
        + ("messages between chips of one node through /dev/shm (as in the run), off the links; " if any(shm.values())
           else "")
        + f"payload x {WIRE_FACTOR:g} on the wire and {CONTROL_BYTES:g} B each way per call off node 0 "
        f"({CONTROL_SOURCE}); message sizes in proportion to the micro-batch",
        f"{latency_us:g} µs per message crossing nodes"
        + (" (--latency-us)" if latency_given else f" (default; range {RANGES['latency_us'][2]})"),
        f"Ray: {call_us:.4g} µs of a core per call ("
        + ("--call-us: all of Ray's cost" if call_given else call_source)
        + ("" if call_source != CALL_SOURCE or call_given else f"; range {RANGES['call_us'][2]}") + ")"
        + f"; a call to a chip off node 0 costs {REMOTE_CALL:g} times that ({REMOTE_SOURCE})"
        + (f", {sum(calls.values()):.3g} calls per sample (the run's, at this micro-batch)" if calls_measured else "")
        + (f"; {short}" if short else ""),
        f"{in_flight} micro-batch(es) of {micro:g} in flight (at most {IN_FLIGHT}, and no more than a batch holds: a "
        f"batch's weights change before the next starts); compute and transfers overlap but for one micro-batch's "
        f"share of the smaller; the range's slow end: not at all; not modelled: memory (launch/tools/plan.py)",
    ]
    return dict(what="the emulator (Python/Ray) on CPU nodes; spikegrad forecast: a neuromorphic chip's time",
                epoch=epoch, nodes=nodes, nodes_used=len(used), cores_per_node=cores_per_node,
                shared_cores=shared_cores, busy_cores=parallel, placement=placement, replicas=R, link_gbps=link_gbps,
                latency_us=latency_us, micro_batch=micro, in_flight=in_flight, measure=measure, call_us=call_us,
                chip_call_us=chip_call_us, ray_per_sample_us=per_sample_s * 1e6,
                calls_per_sample=sum(calls.values()),
                measured_images_per_second=images / float(metric["seconds"]),
                chips=[dict(chip=c, node=node_of[(0, c)], nodes=sorted({node_of[(q, c)] for q in range(R)}),
                            seconds_per_sample=sum(work[(q, c)] for q in range(R)),
                            measured_node=measured_nodes[c]) for c in ids],
                copies=where, node_seconds_per_sample=node_time, node_bits_out=out_bits, node_bits_in=in_bits,
                object_seconds_per_sample=objects,
                links=links, crossing_messages_per_micro_batch=crossing_per_micro, bounds=bounds, binding=binding,
                predicted_images_per_second=predicted,
                predicted_range=dict(low=min(slow, predicted), high=max(fast, predicted), call_us=ends["call_us"],
                                     latency_us=ends["latency_us"]),
                assumptions=assumptions,
                checked_against=[dict(file=f, runs=what, note=note, measured_over_predicted=r)
                                 for f, what, note, r in CHECKS],
                checked_on_hosts=[dict(file=f, runs=what, result=r) for f, what, r in HOST_CHECKS])


def format_plan(p: dict) -> str:
    idle = p["nodes"] - p["nodes_used"]
    lines = [f"plan: the EMULATOR (this Python/Ray program, one process per chip) on CPU nodes, epoch {p['epoch']}; "
             f"not a neuromorphic chip's time (see `spikegrad forecast`)",
             f"{len(p['chips'])} chips x {p['replicas']} replica(s) on {p['nodes']} node(s)"
             + (f" ({idle} idle: fewer chip copies than nodes)" if idle else "")
             + (f", all sharing {p['shared_cores']} core(s)" if p["shared_cores"] else
                f", {p['cores_per_node']} core(s) per node")
             + f", placed as Ray's {p['placement']}, links {p['link_gbps']:g} Gbit/s, {p['latency_us']:g} µs "
             f"per crossing message, {p['call_us']:.4g} µs per call, micro-batch {p['micro_batch']:g} "
             f"({p['in_flight']} in flight)",
             f"{'chip':>4} {'node(s)':>8} {'µs/sample':>10}"]
    for c in p["chips"]:
        lines.append(f"{c['chip']:>4} {','.join(map(str, c['nodes'])):>8} {1e6 * c['seconds_per_sample']:>10.2f}")
    for n, s in p["node_seconds_per_sample"].items():
        lines.append(f"{'all nodes' if p['shared_cores'] else f'node {n}'}: compute {1e6 * s:.2f} µs/sample per core")
    for n in p["node_bits_out"]:
        lines.append(f"node {n}: network out {p['node_bits_out'][n]:.4g} bits/sample, in {p['node_bits_in'][n]:.4g}")
    b = p["bounds"]
    lines.append(f"bounds (samples/s): compute {b['compute']:.4g}, network {b['network']:.4g}, latency "
                 f"{b['latency']:.4g} ({p['crossing_messages_per_micro_batch']:.3g} crossing messages per "
                 f"micro-batch)")
    if p["ray_per_sample_us"]:
        lines.append(f"Ray and the driver beyond their calls (the run's): {p['ray_per_sample_us']:.4g} µs per sample")
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
        lines.append(f"  (the model of then, with the call cost from the notes: at 1,000 µs per call the runs reached "
                     f"{min(checked):.2f}-{max(checked):.2f} of it)")
    lines.append("checked on emulated hosts (spikegrad hosts: links of a set rate, the machine's cores shared), "
                 "measured over predicted samples/s:")
    for c in p["checked_on_hosts"]:
        lines.append(f"  - {c['file']} ({c['runs']}): {c['result']}")
    return "\n".join(lines)
