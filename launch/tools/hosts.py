"""Emulated hosts on one machine: a multi-node Ray cluster over real TCP links (docs/design.md §9).

``spikegrad hosts up --hosts 3 --link-mbit 100`` makes, for each host i, a Linux network namespace
``<name>-h<i>`` whose one interface ``eth0`` (address ``10.213.<subnet>.<i+1>/24``) is a veth pair
with the other end ``<name>-v<i>`` in a bridge ``<name>-br`` of the root namespace. Each link is
shaped to the given rate in both directions with a token bucket (``tc tbf``: on ``eth0``, what the
host sends; on ``<name>-v<i>``, what it receives), so a host is a machine with a full-duplex NIC of
that rate on a switch that is never the bottleneck. Nothing is routed: the namespaces reach each
other and nothing else (no address in the root namespace, no default route), so Ray's daemons
cannot send a packet off the machine.

One Ray node runs in each host (``ray start``; the head in host 0), every daemon bound to its
host's address, with token authentication: a random 256-bit token in a 0600 file of the hosts'
state directory, which every process of the cluster is given (``RAY_AUTH_TOKEN_PATH``); a node or
driver without it is refused by the head's GCS. ``spikegrad hosts exec -- CMD`` runs CMD in host 0
with that environment, so ``spikegrad train --address <printed address> --placement spread``
spreads its chips over the hosts and its spikes cross real links.

What was made is written to ``<state dir>/state.json``; ``spikegrad hosts down`` removes exactly
that (the processes inside the namespaces, the namespaces, their links, the bridge, the state
directory) and nothing else. Faults for tests and the fault table (:meth:`Hosts.kill`,
:meth:`Hosts.cut`, :meth:`Hosts.restore`) act on one host the same way. Counters of what each link
carried are the kernel's (:meth:`Hosts.counters`): Ethernet frames, so IP/TCP headers, Ray's
control traffic and gRPC framing included.

Needs root, ``ip`` and ``tc`` (iproute2), and a kernel with network namespaces, veth and tbf
(:func:`can_make_hosts` says why not where they are missing).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cluster.errors import SpikeGradError

from ..files import write_atomic

STATE_ROOT_ENV = "SPIKEGRAD_HOSTS_DIR"
DEFAULT_ROOT = "/tmp/spikegrad-hosts"
NAME_RE = re.compile(r"[a-z][a-z0-9]{0,5}")  # interface names: <name>-br, <name>-v<i> within 15 bytes
MAX_HOSTS = 16
RAY_PORT = 6379
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
STATE_VERSION = 1


def state_root() -> Path:
    return Path(os.environ.get(STATE_ROOT_ENV) or DEFAULT_ROOT)


def _run(argv: Sequence[str], timeout: float = 30.0, check: bool = True,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A command, bounded in time; its failure a SpikeGradError quoting its stderr."""
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise SpikeGradError(f"hosts: {argv[0]!r} not found (iproute2's ip and tc are needed)") from None
    except subprocess.TimeoutExpired:
        raise SpikeGradError(f"hosts: {' '.join(argv[:6])} ... did not finish within {timeout:g} s") from None
    if check and r.returncode != 0:
        tail = " ".join((r.stderr or r.stdout).split())[-400:]
        raise SpikeGradError(f"hosts: {' '.join(argv[:8])} failed (exit {r.returncode}): {tail}")
    return r


def can_make_hosts() -> str | None:
    """None where emulated hosts can be made here, else why not (a skip reason for tests)."""
    if sys.platform != "linux":
        return f"emulated hosts need Linux network namespaces; this is {sys.platform}"
    if os.geteuid() != 0:
        return f"emulated hosts need root (network namespaces, veth, tc); running as uid {os.geteuid()}"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"emulated hosts need iproute2's {tool!r}, not found on PATH"
    probe = f"sgprobe{os.getpid() % 100000}"
    try:
        r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not make a network namespace: {exc}"
    if r.returncode != 0:
        return f"could not make a network namespace: {' '.join(r.stderr.split())[:200]}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


@dataclass(frozen=True)
class Host:
    index: int
    ns: str      # network namespace
    veth: str    # the root namespace's end of its link (in the bridge)
    ip: str
    temp: str    # Ray's temp directory of its node


@dataclass
class Hosts:
    """Emulated hosts that are up (from :func:`up` or :func:`load`)."""

    name: str
    hosts: list[Host]
    bridge: str
    link_mbit: float
    cpus: float
    object_store_mb: int
    port: int
    dir: str
    version: int = STATE_VERSION

    @property
    def address(self) -> str:
        return f"{self.hosts[0].ip}:{self.port}"

    @property
    def token_path(self) -> Path:
        return Path(self.dir) / "token"

    def env(self, base: dict[str, str] | None = None, token: bool = True) -> dict[str, str]:
        """The environment of a process of this cluster: token authentication on, the token file
        (``token`` False: none, as a stranger would have), no usage reports, no other cluster's address."""
        env = dict(os.environ if base is None else base)
        for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            env.pop(key, None)
        env.update(RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0")
        if token:
            env["RAY_AUTH_TOKEN_PATH"] = str(self.token_path)
        return env

    def command(self, host: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside host ``host``'s namespace."""
        return ["ip", "netns", "exec", self.hosts[host].ns, *argv]

    def pids(self, host: int) -> list[int]:
        """Every process in host ``host``'s namespace."""
        r = _run(["ip", "netns", "pids", self.hosts[host].ns], check=False)
        return [int(p) for p in r.stdout.split() if p.isdigit()]

    def counters(self) -> dict[int, dict[str, int]]:
        """{host: {"sent": bytes, "received": bytes, "sent_packets", "received_packets"}}: the
        kernel's counters of each host's link (Ethernet frames), read at its root-namespace end
        (what that end receives, the host sent)."""
        out = {}
        for h in self.hosts:
            stats = Path("/sys/class/net") / h.veth / "statistics"
            try:
                read = {k: int((stats / k).read_text()) for k in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")}
            except (OSError, ValueError) as exc:
                raise SpikeGradError(f"hosts: the counters of {h.veth} cannot be read ({exc})") from None
            out[h.index] = {"sent": read["rx_bytes"], "received": read["tx_bytes"],
                            "sent_packets": read["rx_packets"], "received_packets": read["tx_packets"]}
        return out

    def cut(self, host: int) -> None:
        """Cut host ``host``'s link (its end in the bridge down): its packets are lost until :meth:`restore`."""
        _run(["ip", "link", "set", self.hosts[host].veth, "down"])

    def restore(self, host: int) -> None:
        _run(["ip", "link", "set", self.hosts[host].veth, "up"])

    def kill(self, host: int, spare: Sequence[int] = ()) -> list[int]:
        """SIGKILL every process of host ``host`` but ``spare`` (e.g. a driver there): its Ray node
        lost with the chips on it. Returns the pids signalled."""
        pids = [p for p in self.pids(host) if p not in set(spare)]
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def ray_nodes_alive(self, host: int) -> bool:
        return any(_comm(p) == "raylet" for p in self.pids(host))

    def start_node(self, host: int, timeout: float = START_TIMEOUT_S) -> None:
        """Start host ``host``'s Ray node (the head for host 0), with this cluster's token."""
        h = self.hosts[host]
        argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--node-ip-address", h.ip,
                "--num-cpus", f"{self.cpus:g}", "--object-store-memory", str(self.object_store_mb * 1024 * 1024),
                "--disable-usage-stats"]
        if host == 0:
            argv += ["--head", "--port", str(self.port), "--include-dashboard", "false"]
        else:
            argv += ["--address", self.address]
        argv += ["--temp-dir", h.temp]
        _run(self.command(host, argv), timeout=timeout, env=self.env())

    def set_rate(self, mbit: float) -> None:
        """Shape every link to ``mbit`` Mbit/s each way from now on."""
        _check_rate(mbit)
        for h in self.hosts:
            _run(["tc", "-n", h.ns, "qdisc", "replace", "dev", "eth0", "root", *_tbf(mbit)])
            _run(["tc", "qdisc", "replace", "dev", h.veth, "root", *_tbf(mbit)])
        self.link_mbit = mbit
        _save(self)

    def restart(self, log: Callable[[str], None] = lambda s: None) -> None:
        """Every process of every host stopped, every link up, and a Ray node started in each again
        (after a fault; the namespaces, links and token stay)."""
        for h in self.hosts:
            _stop(self, h.index)
            self.restore(h.index)
        for h in self.hosts:
            self.start_node(h.index)
            log(f"hosts {self.name}: Ray node {h.index} up again at {h.ip}")

    def describe(self) -> str:
        ips = f"{self.hosts[0].ip}-{self.hosts[-1].ip.rsplit('.', 1)[1]}" if len(self.hosts) > 1 else self.hosts[0].ip
        return (f"hosts {self.name}: {len(self.hosts)} host(s) {ips} in network namespaces "
                f"{self.hosts[0].ns}..{self.hosts[-1].ns}, each link {self.link_mbit:g} Mbit/s each way (tc tbf) "
                f"to bridge {self.bridge}; Ray node per host ({self.cpus:g} CPU, "
                f"{self.object_store_mb} MiB object store), token authentication (token in {self.token_path})")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise SpikeGradError(f"hosts: name expected 1-6 lower-case letters or digits starting with a letter, "
                             f"got {str(name)[:40]!r}")
    return name


def _exists(kind: str, name: str) -> bool:
    if kind == "netns":
        return Path("/var/run/netns", name).exists()
    return Path("/sys/class/net", name).exists()


def _check_rate(mbit: float) -> None:
    if not (0.1 <= mbit <= 100_000):
        raise SpikeGradError(f"hosts: --link-mbit expected a rate in [0.1, 100000] Mbit/s, got {mbit:g}")


def _stop(hosts: Hosts, host: int) -> None:
    """SIGTERM, then SIGKILL, every process of a host, bounded in time."""
    pids = hosts.pids(host)
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, STOP_TIMEOUT_S)):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = hosts.pids(host)
        if not pids:
            return
    raise SpikeGradError(f"hosts: processes {pids[:8]} of {hosts.hosts[host].ns} survive SIGKILL")


def _tbf(mbit: float) -> list[str]:
    """A token bucket of ``mbit`` Mbit/s: a burst of at least one timer tick's worth (and 32 KiB),
    a queue of 100 ms."""
    rate = mbit * 1e6 / 8  # bytes/s
    burst = max(32 * 1024, int(rate / 250))
    return ["tbf", "rate", f"{mbit:g}mbit", "burst", str(burst), "latency", "100ms"]


def up(n: int, link_mbit: float, name: str = "sg", cpus: float = 1.0, object_store_mb: int = 256,
       subnet: int = 0, log: Callable[[str], None] = lambda s: None) -> Hosts:
    """Make ``n`` emulated hosts and start a Ray node in each; see the module docstring.

    On any failure, everything made so far is removed again before the error is raised.
    """
    why = can_make_hosts()
    if why:
        raise SpikeGradError(why)
    _check_name(name)
    if not 1 <= n <= MAX_HOSTS:
        raise SpikeGradError(f"hosts: --hosts expected 1..{MAX_HOSTS}, got {n}")
    _check_rate(link_mbit)
    if not (0 < cpus <= 1024):
        raise SpikeGradError(f"hosts: --cpus expected a number in (0, 1024], got {cpus:g}")
    if not 0 <= subnet <= 255:
        raise SpikeGradError(f"hosts: --subnet expected 0..255, got {subnet}")
    root = state_root() / name
    if (root / "state.json").exists():
        raise SpikeGradError(f"hosts {name} are up already ({root}); 'spikegrad hosts down --name {name}' first")
    hosts = Hosts(name=name, bridge=f"{name}-br", link_mbit=link_mbit, cpus=cpus, object_store_mb=object_store_mb,
                  port=RAY_PORT, dir=str(root),
                  hosts=[Host(i, f"{name}-h{i}", f"{name}-v{i}", str(ipaddress.IPv4Address(f"10.213.{subnet}.{i + 1}")),
                              str(root / f"h{i}")) for i in range(n)])
    taken = [x for x in [hosts.bridge] + [h.veth for h in hosts.hosts] if _exists("link", x)]
    taken += [h.ns for h in hosts.hosts if _exists("netns", h.ns)]
    if taken:
        raise SpikeGradError(f"hosts: {', '.join(taken)} exist already and are not hosts {name}'s (no state in "
                             f"{root}); remove them or choose another --name")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    fd = os.open(hosts.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    _save(hosts)  # first: whatever follows fails, down() finds what to remove
    try:
        _run(["ip", "link", "add", hosts.bridge, "type", "bridge"])
        _run(["ip", "link", "set", hosts.bridge, "up"])
        for h in hosts.hosts:
            _run(["ip", "netns", "add", h.ns])
            _run(["ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.ns])
            _run(["ip", "link", "set", h.veth, "master", hosts.bridge, "up"])
            _run(["ip", "-n", h.ns, "addr", "add", f"{h.ip}/24", "dev", "eth0"])
            _run(["ip", "-n", h.ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", h.ns, "link", "set", "lo", "up"])
            _run(["tc", "-n", h.ns, "qdisc", "add", "dev", "eth0", "root", *_tbf(link_mbit)])
            _run(["tc", "qdisc", "add", "dev", h.veth, "root", *_tbf(link_mbit)])
            Path(h.temp).mkdir(mode=0o700, exist_ok=True)
        log(f"hosts {name}: {n} namespace(s), links {link_mbit:g} Mbit/s; starting Ray's head in {hosts.hosts[0].ns}")
        for h in hosts.hosts:
            t0 = time.monotonic()
            hosts.start_node(h.index)
            log(f"hosts {name}: Ray node {h.index} up at {h.ip} ({time.monotonic() - t0:.1f} s)")
    except BaseException:
        down(name)
        raise
    return hosts


def _save(hosts: Hosts) -> None:
    text = json.dumps(asdict(hosts), indent=1)
    write_atomic(Path(hosts.dir) / "state.json", lambda f: f.write(text), mode="w")


def load(name: str) -> Hosts:
    """The hosts ``name`` that :func:`up` made, from their state file (checked: it names what down removes)."""
    _check_name(name)
    path = state_root() / name / "state.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpikeGradError(f"hosts {name} are not up (no {path}); 'spikegrad hosts up' makes them") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise SpikeGradError(f"hosts: {path} is not a hosts state file ({type(exc).__name__})") from None
    try:
        if raw.get("version") != STATE_VERSION or raw.get("name") != name:
            raise ValueError("version or name")
        hosts = Hosts(**{**raw, "hosts": [Host(**h) for h in raw["hosts"]]})
        expect = {"bridge": f"{name}-br", "dir": str(state_root() / name)}
        if any(getattr(hosts, k) != v for k, v in expect.items()):
            raise ValueError("bridge or directory")
        for i, h in enumerate(hosts.hosts):  # only names this module makes: down never removes another's
            if (h.index, h.ns, h.veth) != (i, f"{name}-h{i}", f"{name}-v{i}") or not h.temp.startswith(hosts.dir):
                raise ValueError(f"host {i}")
            ipaddress.IPv4Address(h.ip)
        if not hosts.hosts or not all(isinstance(getattr(hosts, k), int) and not isinstance(getattr(hosts, k), bool)
                                      for k in ("port", "object_store_mb")):
            raise ValueError("hosts, port or object store")
        if not all(isinstance(getattr(hosts, k), (int, float)) and getattr(hosts, k) > 0
                   for k in ("link_mbit", "cpus")):
            raise ValueError("link rate or CPUs")
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise SpikeGradError(f"hosts: {path} is not a state file this version wrote ({exc})") from None
    return hosts


def down(name: str, log: Callable[[str], None] = lambda s: None) -> list[str]:
    """Remove hosts ``name``: their processes, namespaces, links, bridge and state directory.
    Returns what was removed. Bounded in time; idempotent for what is already gone."""
    hosts = load(name)
    removed: list[str] = []
    for h in hosts.hosts:
        if not _exists("netns", h.ns):
            continue
        _stop(hosts, h.index)
        r = _run(["ip", "netns", "del", h.ns], check=False)
        if _exists("netns", h.ns):
            raise SpikeGradError(f"hosts: ip netns del {h.ns} failed: {' '.join(r.stderr.split())[-300:]}")
        removed.append(h.ns)
    for link in [h.veth for h in hosts.hosts] + [hosts.bridge]:
        if _exists("link", link):
            _run(["ip", "link", "del", link], check=False)
            removed.append(link)
    deadline = time.monotonic() + STOP_TIMEOUT_S  # a namespace's links go when the kernel frees it
    while any(_exists("link", h.veth) for h in hosts.hosts) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [h.veth for h in hosts.hosts if _exists("link", h.veth)]
    if left:
        raise SpikeGradError(f"hosts: links {left} still exist {STOP_TIMEOUT_S:g} s after their namespaces went")
    shutil.rmtree(hosts.dir, ignore_errors=True)
    removed.append(hosts.dir)
    log(f"hosts {name}: removed {', '.join(removed)}")
    return removed


def status(name: str) -> dict[str, Any]:
    """What is up: per host its address, Ray node alive, processes, and its link's counters."""
    hosts = load(name)
    counters = hosts.counters()
    return {"name": name, "address": hosts.address, "link_mbit": hosts.link_mbit,
            "hosts": [{"host": h.index, "ip": h.ip, "namespace": h.ns, "ray_node": hosts.ray_nodes_alive(h.index),
                       "processes": len(hosts.pids(h.index)), **counters[h.index]} for h in hosts.hosts]}


def format_status(s: dict[str, Any]) -> str:
    lines = [f"hosts {s['name']}: Ray at {s['address']}, links {s['link_mbit']:g} Mbit/s",
             f"{'host':>4}  {'address':<14} {'namespace':<10} {'ray node':<8} {'procs':>5} {'sent B':>12} "
             f"{'received B':>12}"]
    for h in s["hosts"]:
        lines.append(f"{h['host']:>4}  {h['ip']:<14} {h['namespace']:<10} {'up' if h['ray_node'] else 'DOWN':<8} "
                     f"{h['processes']:>5} {h['sent']:>12,} {h['received']:>12,}")
    return "\n".join(lines)
