"""The chip pipeline on Ray: micro-batches flow chip to chip as object references.

The driver splits each batch into micro-batches and, for each, chains the chips'
calls by passing object references: chip k's FORWARD result (an Arrow message in
Ray's object store) is chip k+1's argument, so spike messages go chip to chip and
the driver never relays a payload. Ray runs the calls one caller submits to one
actor in submission order, so every chip sees micro-batches in order and its
increments are summed in the same order as on one process. At most ``in_flight``
micro-batches are unfinished at once (backpressure). After the last micro-batch
of a batch, every chip applies its increments once (Algorithm 3); with R
replicas, each chip of each replica adds all R replicas' increments, in replica
order, through the object store, so the replicas stay identical and equal one
pipeline with the whole batch. Each chip does that APPLY at the start of its
next batch's first call (or when the driver drains the pipeline), which saves a
call per chip and batch; the arithmetic is the same.
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
from cluster.mapping import Layout, Plan
from cluster.topology import parse_topology

from .chip import PLACEMENTS, ChipConfig, ChipFailure, Placement, merge_reports
from .ray_chip import ChipActor, SliceChipActor
from .slices import assemble_state, check_copies, dispatch

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
                 layout: Layout | None = None) -> None:
        if placement not in PLACEMENTS:
            raise SpikeGradError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        if replicas < 1 or micro_batch < 1 or in_flight < 1:
            raise SpikeGradError(f"replicas, micro_batch and in_flight must be >= 1, got "
                                 f"{replicas}, {micro_batch}, {in_flight}")
        # layout: chips holding slices of layers (actors.slices), one call per slice; else whole-layer groups
        self.plan = Plan(parse_topology(cfg.topology), layout) if layout is not None else None
        if self.plan is not None:
            groups = [(s[0][0], s[-1][0]) for s in self.plan.layout]
            self._calls = self.plan.calls()
        if not groups:
            raise SpikeGradError("a pipeline needs chip groups or a layout")
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
        tag = uuid.uuid4().hex[:8]  # names are unique in the cluster: this pipeline's chips, restarts apart
        for r in range(replicas):
            row: list[Any] = []
            for c, (lo, hi) in enumerate(groups):
                strategy = PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=r * len(groups) + c)
                options = dict(num_cpus=cpus_per_chip, num_gpus=gpus_per_chip, scheduling_strategy=strategy,
                               name=f"spikegrad-{tag}-replica{r}-chip{c}-layers{lo}-{hi}")
                if self.plan is not None:
                    mine = {l: params[l] for l in self.plan.param_layers(c)}
                    row.append(SliceChipActor.options(**options).remote(c, self.plan.layout, cfg, mine))
                else:
                    mine = {l: params[l] for l in range(lo, hi + 1) if l in params}
                    row.append(ChipActor.options(**options).remote(c, lo, hi, cfg, mine))
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
        self._micro_refs: list[Any] = []  # the last call of each unfinished micro-batch
        self._applies: list[Any] = []  # APPLY calls sent on their own, not yet checked
        self._batches: list[tuple[list, int, float]] = []  # submitted batches: (stats refs, samples, when)
        self._done: tuple[float, int, int] = (0.0, 0, 0)  # loss sum, correct, samples of collected batches
        self.batches = 0  # batches submitted so far (their numbers on the wire)
        # The last batch's APPLY, not yet sent: (lr scale, None for one replica (each chip applies
        # its own ω), else per chip index the replicas' increments references).
        self._deferred: tuple[float, list[list] | None] | None = None
        self.copies_checked = 0  # weight-copy values compared with their owners' so far (sliced chips)

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
        batch, self.batches = self.batches, self.batches + 1
        x_ref = ray.put(x)
        # Labels are small: inline in each call that needs them, no object-store round trip.
        y_ref = y if y.nbytes <= 64 * 1024 else ray.put(y)
        stats: list[Any] = []
        if self.plan is not None:  # slices of layers: one call per slice
            self._submit_sliced(batch, x_ref, y_ref, len(x), stats, lr_scale)
        elif len(self.groups) == 1:  # whole-network chips: one call per micro-batch, no links
            self._submit_whole(batch, x_ref, y_ref, len(x), stats, lr_scale)
        else:
            self._submit_chain(batch, x_ref, y_ref, len(x), stats, lr_scale)
        self._batches.append((stats, len(x), time.perf_counter()))
        while len(self._batches) > 2:
            self._collect(self._batches.pop(0))

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
            ready, self._micro_refs = ray.wait(self._micro_refs, num_returns=need, fetch_local=False,
                                               timeout=self.timeout)
            if len(ready) < need:
                raise self._hung(1)

    def _apply_args(self, c: int) -> tuple:
        """The pending APPLY's arguments for chip index ``c``'s first call of a batch."""
        if self._deferred is None:
            return (None,)
        lr_scale, incs = self._deferred
        return (lr_scale, *(incs[c] if incs is not None else ()))

    def _submit_chain(self, batch: int, x_ref: Any, y_ref: Any, n: int, stats: list, lr_scale: float) -> None:
        """Each micro-batch up the chips and its errors back down, chained by object references;
        the previous batch's APPLY rides on each chip's first forward."""
        for r, slices in enumerate(self._micro_slices(n)):
            chips = self.chips[r]
            for m, (lo, hi) in enumerate(slices):
                first = [self._apply_args(c) if m == 0 else (None,) for c in range(len(chips))]
                ref = chips[0].forward.remote(x_ref, batch, m, lo, hi, True, *first[0])
                for c, chip in enumerate(chips[1:], 1):
                    ref = chip.forward.remote(ref, batch, m, 0, None, True, *first[c])
                # The output chip's forward returns None; passing its reference makes the
                # backward wait for it by data dependency, not only by submission order.
                err, st = chips[-1].backward.options(num_returns=2).remote(ref, batch, m, y_ref, lo, hi)
                stats.append(st)
                for chip in reversed(chips[:-1]):
                    err = chip.backward.remote(err, batch, m)
                self._wait_in_flight(err)
        if self.replicas == 1:
            self._deferred = (lr_scale, None)
        else:  # every chip adds all replicas' increments of its layers, in replica order
            self._deferred = (lr_scale, [[self.chips[r][c].increments.remote() for r in range(self.replicas)]
                                         for c in range(len(self.groups))])

    def _submit_sliced(self, batch: int, x_ref: Any, y_ref: Any, n: int, stats: list, lr_scale: float) -> None:
        """Each micro-batch through the calls of :meth:`Plan.calls`, messages chained by object
        references. The previous batch's APPLY goes first, as calls of its own (a chip holds
        several slices, so there is no single first call to fold it into)."""
        assert self.plan is not None
        self._applies.extend(self._send_deferred())
        for r, slices in enumerate(self._micro_slices(n)):
            send = self._sender(self.chips[r])
            for m, (lo, hi) in enumerate(slices):
                refs: dict[tuple, Any] = {}
                for call in self._calls:
                    st, last = dispatch(call, send, refs, batch, m, x_ref, y_ref, lo, hi)
                    if st is not None:
                        stats.append(st)
                self._wait_in_flight(last)
        if self.replicas == 1:
            self._deferred = (lr_scale, None)
        else:  # every chip adds all replicas' increments (rows and copies), in replica order
            self._deferred = (lr_scale, [[self.chips[r][c].increments.remote() for r in range(self.replicas)]
                                         for c in range(len(self.groups))])

    @staticmethod
    def _sender(chips: list[Any]) -> Any:
        """:func:`actors.slices.dispatch`'s ``send`` for one replica's chip actors."""
        def send(chip: int, method: str, n: int, args: tuple) -> Any:
            return getattr(chips[chip], method).options(num_returns=n).remote(*args)
        return send

    def _submit_whole(self, batch: int, x_ref: Any, y_ref: Any, n: int, stats: list, lr_scale: float) -> None:
        """Each replica's chip holds every layer: a micro-batch is one ``train_micro`` call, and a
        replica's last one also returns its increments (no separate call). The previous batch's
        APPLY rides on each replica's first call; this batch's waits in ``_deferred``."""
        incs = []
        for r, slices in enumerate(self._micro_slices(n)):
            chip = self.chips[r][0]
            for m, (lo, hi) in enumerate(slices):
                last = self.replicas > 1 and m == len(slices) - 1
                first = self._apply_args(0) if m == 0 else (None,)
                st, inc = chip.train_micro.options(num_returns=2).remote(x_ref, batch, m, lo, hi, y_ref, last, *first)
                stats.append(st)
                self._wait_in_flight(st)
            incs.append(inc)
        # one replica applies its own ω; R replicas add every replica's increments, in order
        self._deferred = (lr_scale, [incs] if self.replicas > 1 else None)

    def _send_deferred(self) -> list[Any]:
        """Send the pending APPLY to every chip as calls of their own; their references."""
        if self._deferred is None:
            return []
        calls = [chip.apply.remote(*self._apply_args(c)) for row in self.chips for c, chip in enumerate(row)]
        self._deferred = None
        return calls

    def _drain(self) -> None:
        """Every submitted batch finished and applied; results kept for :meth:`collected`."""
        applied = self._applies + self._send_deferred()
        while self._batches:
            self._collect(self._batches.pop(0))
        self._get(self._micro_refs + applied)
        self._micro_refs, self._applies = [], []

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
        done = self._get(pending[0])  # raises here if a call of the batch failed, a folded APPLY included
        if self._applies:  # APPLY calls of their own (sliced chips): a failed one raises here
            self._get(self._applies)
            self._applies = []
        self._recent.append(time.perf_counter() - pending[2])
        self.slowest = max(self._recent)  # the last 10 batches: the first batches' start-up passes
        self.timeout = max(self.floor, HANG_FACTOR * self.slowest)
        loss, correct, samples = self._done
        self._done = (loss + float(sum(s[0] for s in done)), correct + int(sum(s[1] for s in done)),
                      samples + pending[1])

    # -- evaluation, state, counters -----------------------------------------------------------
    def predict(self, x: np.ndarray, batch: int = 0) -> np.ndarray:
        """argmax Vᴸ for x (N, C, H, W): micro-batches through replica 0's chips, forward only."""
        self._drain()
        x_ref = ray.put(x)
        chips = self.chips[0]
        outs = []
        step = max(self.micro_batch, 256)
        if self.plan is not None:
            send = self._sender(chips)
            forward = [c for c in self._calls if c.phase == "forward"]
            for m, lo in enumerate(range(0, len(x), step)):
                refs: dict[tuple, Any] = {}
                for call in forward:
                    pred, _ = dispatch(call, send, refs, batch, m, x_ref, None, lo, min(len(x), lo + step), False)
                    if pred is not None:
                        outs.append(pred)
            return np.concatenate(self._get(outs, calls=len(outs))) if outs else np.zeros(0, dtype=np.int64)
        for m, lo in enumerate(range(0, len(x), step)):
            ref = chips[0].forward.remote(x_ref, batch, m, lo, min(len(x), lo + step), False)
            for chip in chips[1:]:
                ref = chip.forward.remote(ref, batch, m, 0, None, False)
            outs.append(ref)
        return np.concatenate(self._get(outs, calls=len(outs))) if outs else np.zeros(0, dtype=np.int64)

    def state(self) -> dict:
        """{layer: (W, b, vW, vb)} from replica 0 (all replicas hold the same)."""
        self._drain()
        parts = self._get([chip.state.remote() for chip in self.chips[0]])
        if self.plan is not None:  # whole layers from the slices, and every weight copy checked against them
            state = assemble_state(self.plan, parts)
            self.copies_checked += check_copies(self.plan, state,
                                                self._get([chip.copy_state.remote() for chip in self.chips[0]]))
            return state
        merged: dict = {}
        for part in parts:
            merged.update(part)
        return merged

    def restore(self, state: dict) -> None:
        self._deferred = None  # the state replaces whatever a pending APPLY would have done
        if self.plan is not None:
            self._get([chip.restore.remote({l: state[l] for l in self.plan.param_layers(c) if l in state})
                       for row in self.chips for c, chip in enumerate(row)])
            return
        self._get([chip.restore.remote({l: state[l] for l in range(lo, hi + 1) if l in state})
                   for row in self.chips for chip, (lo, hi) in zip(row, self.groups)])

    def reports(self) -> list[dict]:
        """Each chip's counters since the last call (reset), summed over replicas, by chip index."""
        self._drain()
        return merge_reports(self._get([chip.report.remote(True) for row in self.chips for chip in row]))

    def audit_sizes(self, on: bool = True) -> None:
        self._get([chip.audit_sizes.remote(on) for row in self.chips for chip in row])

    def close(self) -> None:
        for row in self.chips:
            for chip in row:
                ray.kill(chip)
        self.chips = []
        remove_placement_group(self.pg)
