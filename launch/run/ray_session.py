"""The Ray session of a chip run: join a cluster or start a private, token-gated local instance,
and watch the private instance's daemons."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from actors.transport import process_alive
from cluster.errors import SpikeGradError

from .config import check_address
from .supervise import RAY_LOST_EXIT

ALLOW_NO_AUTH = "SPIKEGRAD_ALLOW_NO_AUTH"
CONNECT_TIMEOUT_S = 15.0
REMEMBER_EVERY = 4  # watch_ray's polls between two looks at the instance's processes


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

    The local instance is :func:`init_private`'s: loopback only, token-gated. Returns (started
    here, cluster resources).
    """
    import ray  # noqa: PLC0415  (Ray: loaded only where chips run)

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
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    else:
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled" and not os.environ.get(ALLOW_NO_AUTH):
            raise SpikeGradError(f"RAY_AUTH_MODE=disabled would start the private Ray instance without its token "
                                 f"gate (any process that reaches its ports could run code in it); unset it, or pass "
                                 f"--allow-no-auth (or set {ALLOW_NO_AUTH}=1) to accept that")
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
            print("spikegrad: warning: the private Ray instance starts without token authentication "
                  "(--allow-no-auth)", file=sys.stderr)
        init_private(num_cpus or os.cpu_count() or 1, 512 * 1024 * 1024, logging.WARNING)
        private_token()
    if sigterm is not None:
        signal.signal(signal.SIGTERM, sigterm)
    return True, ray.cluster_resources()


# Ray's switch for its single-machine mode (meant for macOS and Windows): with it off, Ray takes the
# loopback address as the node's own address, so every daemon listens on 127.0.0.1 alone.
_LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_private(num_cpus: int, object_store_memory: int, logging_level: int) -> None:
    """Start a private Ray instance on this machine that listens on the loopback interface only.

    Asking ``ray.init`` for ``_node_ip_address="127.0.0.1"`` is not enough: Ray replaces a loopback
    address by the machine's reachable one, and then its GCS, raylet, workers and three Prometheus
    metrics servers (which take no token) listen on every interface (measured with ``ss -ltnp``,
    Ray 2.60). Ray's single-machine mode keeps all of them on 127.0.0.1. The mode is read by this
    process (``ray_constants``, at call time) and by every daemon Ray starts (their environment,
    captured at start); both are put back afterwards, so a cluster joined later by this process is
    unaffected. The token gate stays on: other users of this machine reach the loopback ports too.
    """
    import ray  # noqa: PLC0415  (Ray: loaded only where chips run)
    from ray._private import ray_constants  # noqa: PLC0415  (Ray: loaded only where chips run)

    before_env, before_const = os.environ.get(_LOOPBACK_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_LOOPBACK_SWITCH] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                 num_cpus=num_cpus, object_store_memory=object_store_memory,
                 logging_level=logging_level, log_to_driver=True)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_const
        if before_env is None:
            os.environ.pop(_LOOPBACK_SWITCH, None)
        else:
            os.environ[_LOOPBACK_SWITCH] = before_env


def process_table() -> dict[int, tuple[str, int, int]]:
    """{pid: (name, parent pid, start time in clock ticks)} of this machine's processes (Linux
    /proc; empty elsewhere). The start time tells a process from a later one given the same id."""
    table: dict[int, tuple[str, int, int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for pid in filter(str.isdigit, entries):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            rest = stat[stat.rindex(")") + 2:].split()
            table[int(pid)] = (stat[stat.index("(") + 1:stat.rindex(")")], int(rest[1]), int(rest[19]))
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
    return table


def descendants(root: int, table: dict[int, tuple[str, int, int]] | None = None) -> dict[int, tuple[str, int]]:
    """{pid: (name, start time)} of every process below ``root`` (:func:`process_table`)."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (_, parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found: dict[int, tuple[str, int]] = {}
    frontier = [root]
    while frontier:
        for child in children.get(frontier.pop(), ()):
            if child not in found:
                found[child] = (table[child][0], table[child][2])
                frontier.append(child)
    return found


def ray_daemons(parent: int | None = None) -> dict[str, int]:
    """{name: pid} of the private Ray instance's GCS server and raylet: the children of this
    process (or ``parent``) with those names (Linux /proc; empty elsewhere or when joining a cluster)."""
    me = parent or os.getpid()
    return {name: pid for pid, (name, pp, _) in process_table().items()
            if pp == me and name in ("gcs_server", "raylet")}


def end_processes(known: dict[int, tuple[str, int]], wait: float = 5.0) -> list[int]:
    """SIGKILL the processes of ``known`` ({pid: (name, start time)}) that still run as themselves
    (same id, same start time), and wait up to ``wait`` s until they are gone; the ids still alive
    then (none, unless the kernel is slow to end one)."""
    table = process_table()
    ours = [pid for pid, (_, start) in known.items() if pid in table and table[pid][2] == start]
    for pid in ours:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + wait
    while (left := [pid for pid in ours if process_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def reap(argv: list[str] | None = None) -> None:
    """The cleaner :func:`watch_ray` leaves behind (``python -c``): end the processes named in its
    argument, ``{"known": {pid: [name, start time]}, "parcels": prefix or null}``, then remove the
    chips' shared-memory messages of that prefix. It runs after the driver has gone: ending the
    raylet or its agents from inside the driver would have Ray's C++ side end the driver first,
    with its own exit status."""
    import json  # noqa: PLC0415  (the cleaner only)

    from actors.transport import drop_pipelines  # noqa: PLC0415  (the cleaner only)

    job = json.loads((argv or sys.argv[1:])[0])
    end_processes({int(pid): (str(name), int(start)) for pid, (name, start) in job["known"].items()})
    drop_pipelines([str(job["parcels"])] if job.get("parcels") else [])


def _leave_cleaner(known: dict[int, tuple[str, int]], parcels: str | None) -> None:
    """Start :func:`reap` in a process of its own session (it outlives this one, and a signal to
    this process group does not reach it), its output discarded."""
    import json  # noqa: PLC0415  (only when the instance is lost)
    import subprocess  # noqa: PLC0415  (only when the instance is lost)

    job = json.dumps({"known": {str(pid): [name, start] for pid, (name, start) in known.items()},
                      "parcels": parcels})
    subprocess.Popen([sys.executable, "-c", "from launch.run.ray_session import reap; reap()", job],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, cwd=str(Path(__file__).resolve().parents[2]))


def watch_ray(message: Callable[[str], str], period: float = 0.5,
              parcels: Callable[[], str | None] | None = None) -> threading.Event:
    """Watch the private Ray instance's GCS server and raylet from a daemon thread: when one dies,
    print one ``spikegrad: error:`` line (``message(what died)``), leave a cleaner for what must not
    outlive the run (:func:`reap`: the rest of the instance, and the chips' shared-memory messages
    of the prefix ``parcels()`` gives) and end the process with :data:`RAY_LOST_EXIT`. Without this,
    Ray's client retries for 60 s and then ends the process from C++ with its own log line; nothing
    the driver could still do is lost by ending first.

    The rest of the instance: every process below this one (the raylet, the chips, Ray's agents),
    remembered every few seconds while the instance runs, since some of them (the dashboard and
    runtime-env agents) outlive a lost GCS and leave this process's tree when their raylet ends.
    Returns the event that stops the watch: set it before shutting Ray down."""
    stop = threading.Event()
    daemons = ray_daemons()
    if not daemons:
        return stop
    me = os.getpid()
    known = descendants(me)

    def loop() -> None:
        polls = 0
        while not stop.wait(period):
            polls += 1
            if polls % REMEMBER_EVERY == 0:
                known.update(descendants(me))
            for name, pid in daemons.items():
                if not process_alive(pid):
                    print(f"spikegrad: error: {message(f'the Ray instance lost its {name} (process {pid})')}",
                          file=sys.stderr, flush=True)
                    try:
                        known.update(descendants(me))
                        _leave_cleaner(known, parcels() if parcels is not None else None)
                    except Exception:  # the exit and its line matter more
                        pass
                    os._exit(RAY_LOST_EXIT)

    threading.Thread(target=loop, name="spikegrad-ray-watch", daemon=True).start()
    return stop
