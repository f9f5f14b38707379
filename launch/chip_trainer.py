"""``--engine chips``: the trainer whose steps run on a Ray cluster of chips.

Same epochs, batches, learning-rate schedule and run directory as the local
trainer (it is a subclass); the arithmetic happens in the chip actors of
:class:`actors.pipeline.ChipPipeline`. The driver keeps no weights of its own
after start-up: checkpoints are gathered from the chips.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from actors.chip import ChipConfig, ChipFailure, parse_chips
from actors.pipeline import ChipPipeline, merge_reports
from cluster.backend import get_backend
from cluster.errors import SpikeGradError
from cluster.synops import COUNTERS

from .config import TrainConfig, check_address
from .trainer import Trainer


ALLOW_NO_AUTH = "SPIKEGRAD_ALLOW_NO_AUTH"
CONNECT_TIMEOUT_S = 15.0


def probe_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A bounded TCP connect to HOST:PORT before Ray is asked (ray.init retries an address that
    does not answer for minutes); ``auto`` is Ray's own lookup and is not probed."""
    if address == "auto":
        return
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = rest.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise SpikeGradError(f"no Ray cluster answers at {address} within {timeout:g} s "
                             f"({exc.strerror or type(exc).__name__}); is the head running "
                             f"('ray start --head') and the address right?") from None


def private_token() -> None:
    """Ray writes the instance's token to ``~/.ray/auth_token`` readable by everyone (0644);
    only its owner needs it, so it is made 0600."""
    token = Path.home() / ".ray" / "auth_token"
    try:
        if token.is_file() and not token.is_symlink() and token.stat().st_mode & 0o077:
            os.chmod(token, 0o600)
    except OSError as exc:
        print(f"spikegrad: warning: could not restrict {token} to its owner ({exc.strerror or exc})",
              file=sys.stderr)


def start_ray(address: str | None = None, num_cpus: int | None = None) -> tuple[bool, dict]:
    """Join the cluster at ``address`` (or RAY_ADDRESS), else start a private local instance.

    The local instance runs no dashboard and asks Ray for the loopback address; Ray 2.60 still
    opens its GCS, raylet and worker ports on all interfaces (measured with ``ss -ltnp``):
    restricting those is open work (issue 6). Returns (started here, cluster resources).
    """
    import ray  # noqa: PLC0415

    if ray.is_initialized():
        return False, ray.cluster_resources()
    address = address or os.environ.get("RAY_ADDRESS") or None
    # ray.init installs a native SIGTERM handler that prints a C++ stack and exits; the Python
    # handler in place before it (the CLI's: close the chips, print the --resume command) is put back.
    on_main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if on_main else None
    if address:
        check_address(address)
        probe_address(address)
        ray.init(address=address, logging_level="warning", log_to_driver=True)
    else:
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled" and not os.environ.get(ALLOW_NO_AUTH):
            raise SpikeGradError(f"RAY_AUTH_MODE=disabled would start the private Ray instance without its token "
                                 f"gate (any process that reaches its ports could run code in it); unset it, or pass "
                                 f"--allow-no-auth (or set {ALLOW_NO_AUTH}=1) to accept that")
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
            print("spikegrad: warning: the private Ray instance starts without token authentication "
                  "(--allow-no-auth)", file=sys.stderr)
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                 num_cpus=num_cpus or os.cpu_count(), logging_level="warning", log_to_driver=True,
                 object_store_memory=512 * 1024 * 1024)
        private_token()
    if sigterm is not None:
        signal.signal(signal.SIGTERM, sigterm)
    return True, ray.cluster_resources()


RAY_LOST_EXIT = 3  # exit status of a run whose private Ray instance lost its GCS or raylet


def ray_daemons(parent: int | None = None) -> dict[str, int]:
    """{name: pid} of the private Ray instance's GCS server and raylet: the children of this
    process (or ``parent``) with those names (Linux /proc; empty elsewhere or when joining a cluster)."""
    me, found = str(parent or os.getpid()), {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for pid in filter(str.isdigit, entries):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if rest[1] == me and name in ("gcs_server", "raylet"):
            found[name] = int(pid)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def watch_ray(message: Callable[[str], str], period: float = 0.5) -> threading.Event:
    """Watch the private Ray instance's GCS server and raylet from a daemon thread: when one dies,
    print one ``spikegrad: error:`` line (``message(what died)``) and end the process with
    :data:`RAY_LOST_EXIT`. Without this, Ray's client retries for 60 s and then ends the process
    from C++ with its own log line; nothing the driver could still do is lost by ending first.
    Returns the event that stops the watch: set it before shutting Ray down."""
    stop = threading.Event()
    daemons = ray_daemons()
    if not daemons:
        return stop

    def loop() -> None:
        while not stop.wait(period):
            for name, pid in daemons.items():
                if not _alive(pid):
                    print(f"spikegrad: error: {message(f'the Ray instance lost its {name} (process {pid})')}",
                          file=sys.stderr, flush=True)
                    os._exit(RAY_LOST_EXIT)

    threading.Thread(target=loop, name="spikegrad-ray-watch", daemon=True).start()
    return stop


def default_micro_batch(batch_size: int, replicas: int, own_core: bool) -> int:
    """Samples per micro-batch when ``--micro-batch`` is not given.

    Micro-batches let the chips of a pipeline work side by side, which pays where each chip has a
    core (or GPU) of its own: then a replica's share of the batch is cut in 4 (at least 8
    samples). Chips that share cores gain nothing from that and pay Ray's per-call cost for every
    micro-batch, so they take a replica's whole share at once. Measured on 2 cores, 6 chips:
    MNIST batch 256, about 580 img/s with 4 micro-batches against 900-1,000 with one; the
    digits job, 232 img/s against 773 (README, *Chips vs one process*).
    """
    share = -(-batch_size // replicas)
    return max(8, -(-share // 4)) if own_core else share


def _chip_calls(fn: Callable) -> Callable:
    """Turn Ray's actor-death errors raised by a pipeline call into :class:`ChipFailure`."""

    @functools.wraps(fn)
    def wrapped(self: "ChipTrainer", *args: Any, **kwargs: Any) -> Any:
        import ray  # noqa: PLC0415

        try:
            return fn(self, *args, **kwargs)
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as exc:
            raise ChipFailure(self.failure_text(exc)) from exc
    return wrapped


class ChipTrainer(Trainer):
    """A Trainer whose train_step, predict and state live on chips.

    chips: ``--chips`` groups (None: one layer per chip); replicas: data-parallel copies;
    placement: pack or spread; micro_batch: samples per micro-batch (None: :func:`default_micro_batch`).
    """

    def __init__(self, cfg: TrainConfig, chips: str | None = None, replicas: int = 1,
                 placement: str = "pack", micro_batch: int | None = None, in_flight: int = 4,
                 address: str | None = None) -> None:
        # The driver's own copy of the weights stays on the host: the chips hold the real ones.
        super().__init__(cfg, backend=get_backend("numpy"))
        self.started_ray, resources = start_ray(address)
        gpus = float(resources.get("GPU", 0.0))
        cpus = float(resources.get("CPU", 1.0))
        if cfg.backend == "cupy" and gpus == 0:
            self.close()
            raise SpikeGradError("--backend cupy asked for, but the Ray cluster has no GPUs "
                                 f"(resources: {resources}); chips use CuPy on GPU nodes by themselves")
        groups = parse_chips(chips, len(self.topo.layers))
        n = len(groups) * replicas
        # GPUs when the cluster has them (CuPy there), CPUs otherwise; fractions let a
        # 2-core laptop hold 6 chips.
        backend = "auto" if gpus > 0 else cfg.backend
        self.chip_cfg = ChipConfig(topology=self.topo.text, step=cfg.step, eta=cfg.eta,
                                   momentum=cfg.momentum, dtype=cfg.dtype, backend=backend,
                                   frac_bits=cfg.weight_frac_bits, wire=cfg.wire)
        host = {l: (np.asarray(W), np.asarray(b)) for l, (W, b) in self.params.items()}
        mb = micro_batch or default_micro_batch(cfg.batch_size, replicas, own_core=(gpus >= n) if gpus else (cpus >= n))
        self._pipeline_args = dict(
            replicas=replicas, placement=placement, micro_batch=mb, in_flight=in_flight,
            # One CPU (GPU) per chip where the cluster has enough; otherwise a token share, so
            # that a laptop can hold a whole network of chips (they then share the cores).
            cpus_per_chip=1.0 if cpus >= n else 0.01,
            gpus_per_chip=(1.0 if gpus >= n else gpus / n / 2) if gpus else 0.0)
        self.groups, self.replicas, self.micro = groups, replicas, mb
        self.pipeline = ChipPipeline(self.chip_cfg, groups, host, **self._pipeline_args)  # type: ignore[arg-type]
        self.batches_done = 0
        self.last_reports: list[dict] = []
        self.partial_reports: list[dict] = []  # counters banked at mid-epoch checkpoints

    def describe(self) -> str:
        backends = sorted({w["backend"] for w in self.pipeline.where})
        nodes = len({w["node"] for w in self.pipeline.where})
        return (f"{len(self.groups)} chips ({', '.join(f'{a}-{b}' if a != b else str(a) for a, b in self.groups)})"
                f" x {self.replicas} replica(s) on {nodes} node(s), micro-batch {self.micro}, "
                f"chip backend {'/'.join(backends)}")

    def failure_text(self, exc: BaseException) -> str:
        """Which chip failed, and why, from a Ray error."""
        actor = getattr(exc, "actor_id", None)
        where = self.pipeline.where if getattr(self, "pipeline", None) is not None else []
        who = [w for w in where if actor and w.get("actor") == actor]
        name = (f"chip {who[0]['chip']} (process {who[0]['pid']})" if who else "a chip")
        cause = " ".join(str(exc).split())[:300]
        return f"{name} failed: {type(exc).__name__}: {cause}"

    @_chip_calls
    def restart_chips(self) -> None:
        """Replace the whole pipeline by fresh chip actors (their weights follow from a checkpoint:
        :meth:`load_state`); batches queued on the old chips are dropped with them."""
        old, self.pipeline = self.pipeline, None
        try:
            old.close()
        except Exception:  # noqa: BLE001  (the old actors may already be gone; they are replaced either way)
            pass
        host = {l: (np.asarray(W), np.asarray(b)) for l, (W, b) in self.params.items()}
        self.pipeline = ChipPipeline(self.chip_cfg, self.groups, host, **self._pipeline_args)  # type: ignore[arg-type]
        self.partial_reports = []

    @_chip_calls
    def train_step(self, x: np.ndarray, y: np.ndarray, lr_scale: float = 1.0) -> tuple[float, int]:
        """Queue the batch on the chips; returns (loss sum, correct) of the batches that finished
        meanwhile (up to two batches stay in flight: :meth:`finish_steps` collects them)."""
        self.pipeline.submit_batch(self.batches_done, x, y, lr_scale)
        self.batches_done += 1
        return self.pipeline.collected()

    @_chip_calls
    def finish_steps(self) -> tuple[float, int]:
        return self.pipeline.finish()

    def pending_samples(self) -> int:
        return self.pipeline.pending_samples()

    @_chip_calls
    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.pipeline.predict(x)

    @_chip_calls
    def collect_counts(self) -> np.ndarray:
        reports = merge_reports(self.partial_reports + self.pipeline.reports(), over_time=True)
        self.partial_reports = []
        self.last_reports = reports
        counts = np.zeros((len(self.topo.layers), len(COUNTERS)))
        for rep in reports:
            for l, row in rep["synops"].items():
                counts[int(l)] = [row[k] for k in COUNTERS]
        return counts

    def memory(self) -> dict[str, float]:
        """Driver and chip resident sets (at the last report) and Ray's object store, MiB."""
        import re  # noqa: PLC0415

        import ray  # noqa: PLC0415
        from ray._private.internal_api import memory_summary  # noqa: PLC0415

        out = super().memory()
        out["rss_chips_mib"] = sum(r.get("rss_bytes", 0) for r in self.last_reports) / 2 ** 20
        try:
            text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
            m = re.search(r"Plasma memory usage (\d+) MiB, (\d+) objects", text)
            if m:
                out["object_store_mib"], out["object_store_objects"] = float(m.group(1)), float(m.group(2))
        except Exception:  # noqa: BLE001  (an internal Ray API: the figures are optional)
            pass
        return out

    @_chip_calls
    def bank_counts(self) -> None:
        self.partial_reports = merge_reports(self.partial_reports + self.pipeline.reports(), over_time=True)

    def _banked(self) -> list[dict] | None:
        return self.partial_reports or None  # as the local trainer: None when nothing is banked

    def _unbank(self, banked: list[dict] | None) -> None:
        self.partial_reports = merge_reports(banked or [], over_time=True)

    @_chip_calls
    def state_arrays(self) -> dict[str, np.ndarray]:
        st = self.pipeline.state()
        out: dict[str, np.ndarray] = self.progress_arrays()
        for t, l in enumerate(self.topo.trainable):
            out[f"W{t}"], out[f"b{t}"], out[f"vW{t}"], out[f"vb{t}"] = st[l]
        return out

    @_chip_calls
    def load_state(self, arrays: dict[str, np.ndarray], path: str) -> None:
        super().load_state(arrays, path)
        self.pipeline.restore({l: (np.asarray(self.params[l][0]), np.asarray(self.params[l][1]),
                                   np.asarray(self.velocity[l][0]), np.asarray(self.velocity[l][1]))
                               for l in self.params})

    def close(self) -> None:
        import ray  # noqa: PLC0415

        super().close()
        if not hasattr(self, "started_ray"):
            return
        if getattr(self, "pipeline", None) is not None:
            self.pipeline.close()
            self.pipeline = None  # type: ignore[assignment]
        if self.started_ray and ray.is_initialized():
            ray.shutdown()
