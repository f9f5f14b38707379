"""The chip pipeline on Ray: micro-batches flow chip to chip as object references.

Every layout, ``--chips`` groups and a capacity's mapping alike, is a :class:`cluster.mapping.Plan`,
and every micro-batch is its :meth:`~cluster.mapping.Plan.steps`: consecutive calls of one chip
fused into one actor call (:meth:`actors.chip.Chip.step`). The driver chains the steps by passing
object references: a step's messages (Arrow IPC buffers, or with the shared-memory transport the
parcels that name them, :mod:`actors.transport`) are the arguments of the steps that take them, so
spike messages go chip to chip and the driver never relays a payload. Ray runs the calls
one caller submits to one actor in submission order, so every chip sees micro-batches in order and
its increments are summed in the same order as on one process. At most ``in_flight`` micro-batches
are unfinished at once (backpressure). After the last micro-batch of a batch, every chip applies
its increments once (Algorithm 3); with R replicas each chip's last step of the batch also returns
its increments, and each chip of each replica adds all R replicas', in replica order, through the
object store, so the replicas stay identical and equal one pipeline with the whole batch. Each
chip does that APPLY at the start of its next batch's first step (or when the driver drains the
pipeline): neither APPLY nor the exchange costs a call of its own.
"""

from __future__ import annotations

import collections
import math
import os
import time
import uuid
from typing import Any

import numpy as np
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from cluster.errors import SpikeGradError
from cluster.mapping import Layout, Plan, whole_layers
from cluster.topology import parse_topology

from .chip import PLACEMENTS, ChipConfig, ChipFailure, Placement, dispatch, merge_reports, schedule
from .ray_chip import ChipActor
from .slices import assemble_state, check_copies, results
from .transport import TRANSPORTS, pipeline_prefix, remove_parcels, remove_stale_parcels, shm_usable

START_TIMEOUT_S = 600.0  # the first answers: actors start, import, compile
MIN_CHIP_TIMEOUT_S = 60.0  # the floor of the hang timeout ($SPIKEGRAD_CHIP_TIMEOUT overrides it)
HANG_FACTOR = 20.0  # a wait longer than this many times the slowest batch so far is a hang



def chip_timeout_floor() -> float:
    """The hang timeout's floor: ``$SPIKEGRAD_CHIP_TIMEOUT`` seconds (a number > 0), else 60 s."""
    text = os.environ.get("SPIKEGRAD_CHIP_TIMEOUT")
    if text is None:
        return MIN_CHIP_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise SpikeGradError(f"SPIKEGRAD_CHIP_TIMEOUT expected a number of seconds > 0, got {text[:40]!r}")
    return value


class ChipPipeline:
    """R replicas × C chips of Ray actors, and the driver logic that feeds them.

    groups: [(first layer, last layer)] per chip; params: initial {layer: (W, b)} host arrays.
    cpus_per_chip / gpus_per_chip: the resources each chip asks for (fractions allowed).
    """

    def __init__(self, cfg: ChipConfig, groups: list[tuple[int, int]] | None, params: dict,
                 replicas: int = 1, placement: Placement = "pack", micro_batch: int = 64,
                 in_flight: int = 4, cpus_per_chip: float = 1.0, gpus_per_chip: float = 0.0,
                 layout: Layout | None = None, transport: str = "auto") -> None:
        if placement not in PLACEMENTS:
            raise SpikeGradError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        if transport not in TRANSPORTS:
            raise SpikeGradError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        if replicas < 1 or micro_batch < 1 or in_flight < 1:
            raise SpikeGradError(f"replicas, micro_batch and in_flight must be >= 1, got "
                                 f"{replicas}, {micro_batch}, {in_flight}")
        # layout: chips holding slices of layers; else whole layers of the groups: one plan either way
        if layout is None:
            if not groups:
                raise SpikeGradError("a pipeline needs chip groups or a layout")
            layout = whole_layers(parse_topology(cfg.topology), groups)
        self.plan = Plan(parse_topology(cfg.topology), layout)
        groups = [(s[0][0], s[-1][0]) for s in self.plan.layout]
        self._steps, self._forward_steps = self.plan.steps(), self.plan.steps(train=False)
        # each chip's last step of a micro-batch: where a replica's last micro-batch returns its increments
        self._last_step = {st.chip: i for i, st in enumerate(self._steps)}
        self.cfg, self.groups, self.replicas = cfg, groups, replicas
        self.micro_batch, self.in_flight = micro_batch, in_flight
        bundle = {"CPU": cpus_per_chip, **({"GPU": gpus_per_chip} if gpus_per_chip else {})}
        n = replicas * len(groups)
        self.pg = placement_group([dict(bundle) for _ in range(n)], strategy=placement.upper())
        try:
            ray.get(self.pg.ready(), timeout=120)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(self.pg)
            raise SpikeGradError(f"the Ray cluster could not place {n} chips of {bundle} each "
                                 f"({placement}) within 120 s; it has {ray.cluster_resources()}") from None
        self.chips: list[list[Any]] = []
        tag = self.tag = uuid.uuid4().hex[:8]  # names are unique in the cluster: this pipeline's chips, restarts apart
        for r in range(replicas):
            row: list[Any] = []
            for c, (lo, hi) in enumerate(groups):
                strategy = PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=r * len(groups) + c)
                options = dict(num_cpus=cpus_per_chip, num_gpus=gpus_per_chip, scheduling_strategy=strategy,
                               name=f"spikegrad-{tag}-replica{r}-chip{c}-layers{lo}-{hi}")
                mine = {l: params[l] for l in self.plan.param_layers(c)}
                row.append(ChipActor.options(**options).remote(c, self.plan.layout, cfg, mine))
            self.chips.append(row)
        # A chip that answers nothing (stopped, hung, its node cut off) must not stall the run: every
        # wait is bounded, first by the start-up allowance, then by HANG_FACTOR x the slowest of the
        # last 10 batches (never below the floor); past it the chips count as failed (ChipFailure:
        # the driver restarts them from the last checkpoint, as for a killed chip).
        self.floor = chip_timeout_floor()
        self.timeout = max(self.floor, START_TIMEOUT_S)
        self.slowest = 0.0
        self._recent: collections.deque[float] = collections.deque(maxlen=10)  # the last batches' times
        self.where = self._get([a.ping.remote() for row in self.chips for a in row])
        self.transports = self._wire_transport(transport)
        self._micro_refs: list[Any] = []  # the last call of each unfinished micro-batch
        self._batches: list[tuple[list, int, float]] = []  # submitted batches: (stats refs, samples, when)
        self._done: tuple[float, int, int] = (0.0, 0, 0)  # loss sum, correct, samples of collected batches
        self.batches = 0  # batches submitted so far (their numbers on the wire)
        # The last batch's APPLY, not yet sent: (lr scale, None for one replica (each chip applies
        # its own ω), else per chip index the replicas' increments references).
        self._deferred: tuple[float, list[list] | None] | None = None
        self.copies_checked = 0  # weight-copy values compared with their owners' so far (sliced chips)
        # the driver's own time: submitting calls, and waiting (backpressure, results); micro-batches sent
        self.driver = {"submit": 0.0, "wait": 0.0, "micro_batches": 0, "calls": 0}

    def _wire_transport(self, transport: str) -> list[str]:
        """Tell each chip which chips of its replica share its node (``ping``'s node ids): with
        ``auto`` or ``shm`` it sends them its messages through /dev/shm (actors.transport), the
        others through Ray. The transport of each chip, in :attr:`where`'s order."""
        if transport == "ray":
            return ["ray"] * len(self.where)
        if shm_usable():
            remove_stale_parcels()  # files of runs whose chips are gone, on the driver's node
        n = len(self.groups)
        driver = (ray.get_runtime_context().get_node_id(), os.getpid())
        calls = []
        for r, row in enumerate(self.chips):
            nodes = [self.where[r * n + c]["node"] for c in range(n)]
            calls += [chip.use_shared_memory.remote(self.tag, [d for d in range(n) if d != c and nodes[d] == nodes[c]],
                                                    r, transport == "shm", driver) for c, chip in enumerate(row)]
        try:
            return self._get(calls)
        except ray.exceptions.RayTaskError as e:
            self.close()
            raise SpikeGradError(str(e.cause) if e.cause is not None else str(e).splitlines()[0]) from None

    def describe_transport(self) -> str:
        """How the chips' messages travel, in words."""
        shm = sum(t == "shm" for t in self.transports)
        if not shm:
            return "messages through Ray's object store"
        return ("messages through shared memory (/dev/shm) between chips on one node, through Ray across nodes"
                + (f" ({len(self.transports) - shm} chip(s) without /dev/shm: through Ray)"
                   if shm < len(self.transports) else ""))

    # -- one batch ---------------------------------------------------------------------------
    def _micro_slices(self, n: int) -> list[list[tuple[int, int]]]:
        """Rows of each replica, cut into micro-batches: [[(lo, hi), ...] per replica]."""
        if n < self.replicas:
            raise SpikeGradError(f"a batch of {n} samples cannot feed {self.replicas} replicas")
        bounds = np.linspace(0, n, self.replicas + 1).round().astype(int)
        return [[(lo, min(hi, lo + self.micro_batch)) for lo in range(a, hi, self.micro_batch)]
                for a, hi in zip(bounds[:-1], bounds[1:])]

    def submit_batch(self, x: np.ndarray, y: np.ndarray, lr_scale: float) -> None:
        """Queue one batch through all replicas, without waiting for it; its APPLY goes with
        the next batch's first call on each chip (or :meth:`_drain` sends it).

        Every chip runs its calls in submission order, so the next batch's FORWARD on a chip
        comes after that chip's APPLY of this batch: the driver never has to wait between
        batches. At most ``in_flight`` micro-batches and two whole batches are unfinished at
        once (backpressure); results are collected by :meth:`finish`.
        """
        t0, waited = time.perf_counter(), self.driver["wait"]
        batch, self.batches = self.batches, self.batches + 1
        x_ref = ray.put(x)
        # Labels are small: inline in each call that needs them, no object-store round trip.
        y_ref = y if y.nbytes <= 64 * 1024 else ray.put(y)
        stats: list[Any] = []
        incs: list[list[Any]] = [[] for _ in self.groups]  # per chip index, the replicas' increments
        exchange = self.replicas > 1
        for r, rows in enumerate(self._micro_slices(len(x))):
            send = self._sender(self.chips[r], self.driver)
            mailboxes: list[dict[tuple, Any]] = [{} for _ in rows]
            applied: set[int] = set()
            order = schedule(self._steps, len(rows))
            for m, i in order:
                step = self._steps[i]
                first = step.chip not in applied  # the chip's first step of the batch
                applied.add(step.chip)
                last = exchange and m == len(rows) - 1 and self._last_step[step.chip] == i
                st, inc, ref = dispatch(step, send, mailboxes[m], batch, m, x_ref, y_ref, *rows[m],
                                        apply=self._apply_args(step.chip, r) if first else (), increments=last)
                if st is not None:
                    stats.append(st)
                if last:
                    incs[step.chip].append(inc)
                if i == len(self._steps) - 1:  # micro-batch m's last step
                    self._wait_in_flight(ref)
                    self.driver["micro_batches"] += 1
        # one replica applies its own ω; R replicas add every replica's increments, in replica order
        self._deferred = (lr_scale, incs if exchange else None)
        self._batches.append((stats, len(x), time.perf_counter()))
        while len(self._batches) > 2:
            self._collect(self._batches.pop(0))
        self.driver["submit"] += time.perf_counter() - t0 - (self.driver["wait"] - waited)

    def _get(self, refs: Any, calls: int = 1) -> Any:
        """ray.get bounded by the hang timeout (``calls`` of a batch's length)."""
        try:
            return ray.get(refs, timeout=self.timeout * calls)
        except ray.exceptions.GetTimeoutError:
            raise self._hung(calls) from None

    def _hung(self, calls: int) -> ChipFailure:
        return ChipFailure(f"a chip answered nothing for {self.timeout * calls:.0f} s (stopped, hung or cut off; "
                           f"the slowest batch so far took {self.slowest:.1f} s)")

    def _wait_in_flight(self, last_call: Any) -> None:
        """Track a micro-batch's last call; wait for the oldest while more than ``in_flight`` are unfinished."""
        self._micro_refs.append(last_call)
        if len(self._micro_refs) > self.in_flight:
            need = len(self._micro_refs) - self.in_flight
            t0 = time.perf_counter()
            ready, self._micro_refs = ray.wait(self._micro_refs, num_returns=need, fetch_local=False,
                                               timeout=self.timeout)
            self.driver["wait"] += time.perf_counter() - t0
            if len(ready) < need:
                raise self._hung(1)

    def _apply_args(self, c: int, r: int) -> tuple:
        """The pending APPLY's arguments for chip index ``c`` of replica ``r``'s first step of a
        batch: (lr scale, the replicas' increments of chip c, in replica order, None in place of
        replica r's own: the chip adds its own ω, which it still holds, instead of reading it back
        from the object store), or () when none is pending."""
        if self._deferred is None:
            return ()
        lr_scale, incs = self._deferred
        if incs is None:
            return (lr_scale,)
        return (lr_scale, *(None if q == r else ref for q, ref in enumerate(incs[c])))

    @staticmethod
    def _sender(chips: list[Any], driver: dict) -> Any:
        """:func:`actors.chip.dispatch`'s ``send`` for one replica's chip actors (counted in ``driver["calls"]``)."""
        def send(chip: int, method: str, n: int, args: tuple) -> Any:
            driver["calls"] += 1
            return getattr(chips[chip], method).options(num_returns=n).remote(*args)
        return send

    def _send_deferred(self) -> list[Any]:
        """Send the pending APPLY to every chip as calls of their own; their references."""
        if self._deferred is None:
            return []
        calls = [chip.apply.remote(*self._apply_args(c, r)) for r, row in enumerate(self.chips)
                 for c, chip in enumerate(row)]
        self.driver["calls"] += len(calls)
        self._deferred = None
        return calls

    def _drain(self) -> None:
        """Every submitted batch finished and applied; results kept for :meth:`collected`."""
        applied = self._send_deferred()
        while self._batches:
            self._collect(self._batches.pop(0))
        self._get(self._micro_refs + applied)
        self._micro_refs = []

    def finish(self) -> tuple[float, int, int]:
        """Wait for every submitted batch; (loss sum, correct, samples) of the batches finished
        since the last call."""
        self._drain()
        return self.collected()

    def collected(self) -> tuple[float, int, int]:
        """(loss sum, correct, samples) of the batches collected since the last call, without waiting."""
        out, self._done = self._done, (0.0, 0, 0)
        return out

    def _collect(self, pending: tuple[list, int, float]) -> None:
        t0 = time.perf_counter()
        done = self._get(pending[0])  # raises here if a call of the batch failed, a folded APPLY included
        self.driver["wait"] += time.perf_counter() - t0
        self._recent.append(time.perf_counter() - pending[2])
        self.slowest = max(self._recent)  # the last 10 batches: the first batches' start-up passes
        self.timeout = max(self.floor, HANG_FACTOR * self.slowest)
        loss, correct, samples = self._done
        self._done = (loss + float(sum(s[0] for s in done)), correct + int(sum(s[1] for s in done)),
                      samples + pending[1])

    def time_empty_calls(self, n: int, batches: int, message_bytes: int) -> float:
        """Seconds per batch of n samples that Ray alone takes for this pipeline's calls: the same
        steps on the same chip actors, chained by the same references, each answering with
        ``message_bytes`` per message and no work (:meth:`actors.ray_chip.ChipProcess.echo`)."""
        self._drain()
        t0 = time.perf_counter()
        for _ in range(batches):
            last = []
            for r, rows in enumerate(self._micro_slices(n)):
                chips = self.chips[r]
                for _m in rows:
                    mailbox: dict[tuple, Any] = {}
                    for step in self._steps:
                        k = len(step.outputs) + step.top(True)
                        value = chips[step.chip].echo.options(num_returns=max(1, k)).remote(
                            len(step.outputs), message_bytes, step.top(True),
                            *[mailbox.pop(key) for key in step.inputs])
                        got = results(value, k)
                        mailbox.update(zip(step.outputs, got))
                        ref = got[-1] if got else value
                    self._wait_in_flight(ref)
                    last.append(ref)
            self._get(last)
        self._micro_refs = []
        return (time.perf_counter() - t0) / batches

    # -- evaluation, state, counters -----------------------------------------------------------
    def predict(self, x: np.ndarray, batch: int = 0) -> np.ndarray:
        """argmax Vᴸ for x (N, C, H, W): micro-batches through replica 0's chips, forward only."""
        self._drain()
        x_ref = ray.put(x)
        chips = self.chips[0]
        outs = []
        step = max(self.micro_batch, 256)
        send = self._sender(chips, self.driver)
        for m, lo in enumerate(range(0, len(x), step)):
            mailbox: dict[tuple, Any] = {}
            for st in self._forward_steps:
                pred, _, _ = dispatch(st, send, mailbox, batch, m, x_ref, None, lo, min(len(x), lo + step), False)
                if pred is not None:
                    outs.append(pred)
        return np.concatenate(self._get(outs, calls=len(outs))) if outs else np.zeros(0, dtype=np.int64)

    def state(self) -> dict:
        """{layer: (W, b, vW, vb)} from replica 0 (all replicas hold the same)."""
        self._drain()
        parts = self._get([chip.state.remote() for chip in self.chips[0]])
        # whole layers from the slices, and every weight copy checked against them
        state = assemble_state(self.plan, parts)
        self.copies_checked += check_copies(self.plan, state,
                                            self._get([chip.copy_state.remote() for chip in self.chips[0]]))
        return state

    def restore(self, state: dict) -> None:
        self._deferred = None  # the state replaces whatever a pending APPLY would have done
        self._get([chip.restore.remote({l: state[l] for l in self.plan.param_layers(c) if l in state})
                   for row in self.chips for c, chip in enumerate(row)])

    def reports(self) -> list[dict]:
        """Each chip's counters since the last call (reset), summed over replicas, by chip index."""
        self._drain()
        return merge_reports(self._get([chip.report.remote(True) for row in self.chips for chip in row]))

    def audit_sizes(self, on: bool = True) -> None:
        self._get([chip.audit_sizes.remote(on) for row in self.chips for chip in row])

    def close(self) -> None:
        """Kill the chips and remove what they leave: the placement group, and the shared-memory
        files nobody took (each live chip its own, within a few seconds; then this node's, even
        where Ray itself is gone)."""
        try:
            if self.chips and any(t == "shm" for t in getattr(self, "transports", ())):
                try:
                    drops = [chip.drop_parcels.remote() for row in self.chips for chip in row]
                    ray.wait(drops, num_returns=len(drops), timeout=5.0)
                except Exception:  # chips or Ray already gone: this node's files go below
                    pass
            for row in self.chips:
                for chip in row:
                    ray.kill(chip)
            self.chips = []
            remove_placement_group(self.pg)
        finally:
            self.drop_parcels()

    def drop_parcels(self) -> int:
        """Remove this pipeline's shared-memory messages on this node (nobody will take them); how many."""
        return remove_parcels(pipeline_prefix(self.tag)) if shm_usable() else 0
