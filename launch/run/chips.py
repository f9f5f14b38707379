"""``--engine chips``: the :class:`~launch.run.engine.Engine` whose steps run on a Ray cluster of chips.

The arithmetic happens in the chip actors of :class:`actors.pipeline.ChipPipeline`; the driver
keeps no weights of its own after start-up: checkpoints are gathered from the chips.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from actors.chip import ChipConfig, ChipFailure
from actors.pipeline import ChipPipeline
from actors.transport import pipeline_prefix
from cluster.errors import SpikeGradError
from cluster.topology import Topology

from .config import TrainConfig
from .engine import Counters, HostState
from .ray_session import start_ray, watch_ray
from .supervise import tell


def default_micro_batch(batch_size: int, replicas: int, own_core: bool) -> int:
    """Samples per micro-batch when ``--micro-batch`` is not given.

    Micro-batches let the chips of a pipeline work side by side, which pays where each chip has a
    core (or GPU) of its own: then a replica's share of the batch is cut in 4 (at least 8
    samples). Chips that share cores gain nothing from that and pay Ray's per-call cost for every
    micro-batch, so they take a replica's whole share at once. Measured on 2 cores, 6 chips:
    MNIST batch 256, about 580 img/s with 4 micro-batches against 900-1,000 with one; the
    digits job, 232 img/s against 773 (README, *Chips vs one process*); again with one chip class
    and fused steps (2026-12-07, one run each): 537, 521 and 479 img/s with 1, 2 and 4 micro-batches
    (docs/measurements/bench-chips-chain-2026-12-07.md): Ray's cost per call grows with M faster than
    the bubble (C − 1)/(M + C − 1) shrinks. Those chips could not overlap at all (each ran its calls
    in order, the first chip's next FORWARD behind the last BACKWARD); with the GPipe order
    (:func:`actors.chip.schedule`) they can, and still 1, 2 and 4 micro-batches gave 0.26-0.28, 0.29
    and 0.22 of one process (docs/measurements/bench-chips-2026-12-07-evening.md): so one.
    """
    share = -(-batch_size // replicas)
    return max(8, -(-share // 4)) if own_core else share


def _chip_calls(fn: Callable) -> Callable:
    """Turn Ray's actor-death errors raised by a pipeline call into :class:`ChipFailure`."""

    @functools.wraps(fn)
    def wrapped(self: ChipEngine, *args: Any, **kwargs: Any) -> Any:
        import ray  # noqa: PLC0415  (Ray: loaded only where chips run)

        try:
            return fn(self, *args, **kwargs)
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
            raise ChipFailure(self.failure_text(exc)) from exc
    return wrapped


class ChipEngine:
    """Training steps, predictions and state on a Ray cluster of chips (:class:`ChipPipeline`).

    params: the initial {layer: (W, b)} host arrays; the chips hold the weights from then on.
    ``cfg.chips``: ``--chips`` groups (None: one layer per chip); ``cfg.replicas``: data-parallel
    copies; ``cfg.placement``: pack or spread; ``cfg.micro_batch``: samples per micro-batch
    (None: :func:`default_micro_batch`). address: the cluster to join (None: RAY_ADDRESS, else a
    private local instance). on_lost: for a private instance, the ``spikegrad: error:`` text to
    end the process with when its GCS or raylet dies (:func:`launch.run.ray_session.watch_ray`).
    """

    def __init__(self, cfg: TrainConfig, topo: Topology, params: dict[int, tuple[np.ndarray, np.ndarray]],
                 address: str | None = None, in_flight: int = 4,
                 on_lost: Callable[[str], str] | None = None) -> None:
        self.cfg, self.topo = cfg, topo
        self.pipeline: ChipPipeline | None = None
        self._watch: threading.Event | None = None
        self.started_ray, resources = start_ray(address)
        if self.started_ray and on_lost is not None and not (address or os.environ.get("RAY_ADDRESS")):
            self._watch = watch_ray(on_lost, parcels=self._parcel_prefix)
        gpus = float(resources.get("GPU", 0.0))
        cpus = float(resources.get("CPU", 1.0))
        if cfg.backend == "cupy" and gpus == 0:
            self.close()
            raise SpikeGradError("--backend cupy asked for, but the Ray cluster has no GPUs "
                                 f"(resources: {resources}); chips use CuPy on GPU nodes by themselves")
        groups, self.layout = cfg.chip_layout()
        replicas = cfg.replicas
        n = len(groups) * replicas
        # GPUs when the cluster has them (CuPy there), CPUs otherwise; fractions let a
        # 2-core laptop hold 6 chips.
        chip_cfg = ChipConfig(topology=topo.text, step=cfg.step, eta=cfg.eta, momentum=cfg.momentum,
                              dtype=cfg.dtype, backend="auto" if gpus > 0 else cfg.backend,
                              frac_bits=cfg.weight_frac_bits, wire=cfg.wire, replicas=cfg.replicas)
        self.params = {l: (np.asarray(W), np.asarray(b)) for l, (W, b) in params.items()}
        mb = cfg.micro_batch or default_micro_batch(cfg.batch_size, replicas,
                                                    own_core=(gpus >= n) if gpus else (cpus >= n))
        self._pipeline_args = dict(
            replicas=replicas, placement=cfg.placement, micro_batch=mb, in_flight=in_flight,
            transport=cfg.transport,
            # One CPU (GPU) per chip where the cluster has enough; otherwise a token share, so
            # that a laptop can hold a whole network of chips (they then share the cores).
            cpus_per_chip=1.0 if cpus >= n else 0.01,
            gpus_per_chip=(1.0 if gpus >= n else gpus / n / 2) if gpus else 0.0)
        self.chip_cfg, self.groups, self.replicas, self.micro = chip_cfg, groups, replicas, mb
        self._old_calls = 0  # calls made to pipelines replaced by restarts
        try:
            self.pipeline = self._new_pipeline()
        except BaseException:
            self.close()
            raise
        self.backend_name = "/".join(sorted({w["backend"] for w in self.pipeline.where}))
        self.last_reports: list[dict] = []

    def _parcel_prefix(self) -> str | None:
        """The file prefix of the current pipeline's shared-memory messages (for the cleaner a lost Ray
        instance leaves, :func:`launch.run.ray_session.watch_ray`)."""
        return pipeline_prefix(self.pipeline.tag) if self.pipeline is not None else None

    @_chip_calls
    def _new_pipeline(self) -> ChipPipeline:
        pipeline = ChipPipeline(self.chip_cfg, self.groups, self.params, layout=self.layout,
                                **self._pipeline_args)  # type: ignore[arg-type]
        tell("parcels", pipeline_prefix(pipeline.tag))  # a watching parent removes them if Ray ends this process
        return pipeline

    def describe(self) -> str:
        assert self.pipeline is not None
        nodes = len({w["node"] for w in self.pipeline.where})
        if self.layout is not None:
            held = "; ".join(" ".join(f"{l}[{lo}:{hi}]" for l, lo, hi in c) for c in self.layout)
            chips = f"{len(self.groups)} chips holding slices of layers (layer[units]: {held})"
        else:
            chips = f"{len(self.groups)} chips ({', '.join(f'{a}-{b}' if a != b else str(a) for a, b in self.groups)})"
        return (f"{chips}"
                f" x {self.replicas} replica(s) on {nodes} node(s), micro-batch {self.micro}, "
                f"chip backend {self.backend_name}, {self.pipeline.describe_transport()}")

    def failure_text(self, exc: BaseException) -> str:
        """Which chip failed, and why, from a Ray error."""
        actor = getattr(exc, "actor_id", None)
        where = self.pipeline.where if self.pipeline is not None else []
        who = [w for w in where if actor and w.get("actor") == actor]
        name = (f"chip {who[0]['chip']} (process {who[0]['pid']})" if who else "a chip")
        cause = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())[:300]  # Ray colours its errors
        return f"{name} failed: {type(exc).__name__}: {cause}"

    def _chips(self) -> ChipPipeline:
        if self.pipeline is None:
            raise ChipFailure("the chips are gone (closed, or lost while restarting)")
        return self.pipeline

    @_chip_calls
    def restart(self) -> None:
        """Replace the whole pipeline by fresh chip actors (their weights follow from a checkpoint:
        :meth:`restore`); batches queued on the old chips are dropped with them."""
        old, self.pipeline = self.pipeline, None
        if old is not None:
            self._old_calls += int(old.driver["calls"])
            try:
                old.close()
            except Exception:
                pass
        self.pipeline = self._new_pipeline()

    @_chip_calls
    def submit(self, x: np.ndarray, y: np.ndarray, lr_scale: float) -> None:
        """Queue the batch on the chips (up to two batches stay in flight)."""
        self._chips().submit_batch(x, y, lr_scale)

    @_chip_calls
    def collect(self, wait: bool = False) -> tuple[float, int, int]:
        chips = self._chips()
        return chips.finish() if wait else chips.collected()

    @_chip_calls
    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._chips().predict(x)

    @_chip_calls
    def counters(self) -> Counters:
        chips = self._chips()
        reports = chips.reports()
        for rep in reports:  # where each chip ran (its replicas' nodes), the micro-batch and transport, for the tables
            rep["nodes"] = sorted({w["node"] for w in chips.where if w["chip"] == rep["chip"]})
            rep["micro_batch"] = self.micro
            rep["transport"] = ",".join(sorted({t for w, t in zip(chips.where, chips.transports)
                                                if w["chip"] == rep["chip"]}))
        self.last_reports = reports
        return Counters.from_reports(reports, len(self.topo.layers))

    @_chip_calls
    def state(self) -> HostState:
        return self._chips().state()

    @_chip_calls
    def restore(self, state: HostState) -> None:
        self._chips().restore(state)

    def note(self) -> str | None:
        return None

    @_chip_calls
    def audit_sizes(self, on: bool = True) -> None:
        """Also record, per link, the payload of the smaller encoding (``spikegrad bench chips``)."""
        self._chips().audit_sizes(on)

    def calls(self) -> int:
        return self._old_calls + (int(self.pipeline.driver["calls"]) if self.pipeline is not None else 0)

    def memory(self) -> dict[str, float]:
        """Chip resident sets (at the last report) and Ray's object store, MiB."""

        import ray  # noqa: PLC0415  (Ray: loaded only where chips run)
        from ray._private.internal_api import memory_summary  # noqa: PLC0415  (Ray: loaded only where chips run)

        out = {"rss_chips_mib": sum(r.get("rss_bytes", 0) for r in self.last_reports) / 2 ** 20}
        try:
            text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
            m = re.search(r"Plasma memory usage (\d+) MiB, (\d+) objects", text)
            if m:
                out["object_store_mib"], out["object_store_objects"] = float(m.group(1)), float(m.group(2))
        except Exception:
            pass
        return out

    def close(self) -> None:
        import ray  # noqa: PLC0415  (Ray: loaded only where chips run)

        if self.pipeline is not None:
            try:
                self.pipeline.close()
            finally:
                self.pipeline = None
        if self._watch is not None:
            self._watch.set()  # the shutdown below ends the GCS and raylet on purpose
        if self.started_ray and ray.is_initialized():
            ray.shutdown()
