"""Several raylets on one machine (ray.cluster_utils.Cluster): chips spread over nodes, with
replicas, and the chips of a mapping that splits a layer; the result equals one process. Runs in
a subprocess: it needs its own Ray cluster, separate from the session's. Ray's test cluster binds
the machine's own interface address (its nodes would not find a loopback-only head); nothing
leaves the machine."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..procs import descendants

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.ray  # a Ray instance of its own, or the session's (conftest)

SCRIPT = r'''
import json, sys
import numpy as np
import ray
from ray.cluster_utils import Cluster
from launch.run.config import make_config
from launch.run.runs import train

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, logging_level="error")
out = {}
kw = dict(epochs=1, limit_train=128, limit_test=32, batch_size=32, micro_batch=8)
for name, extra in [("local", dict(engine="local")), ("spread", dict(placement="spread", replicas=2)),
                    ("split", dict(placement="spread", chip_neurons=600, chip_synapses=20000))]:
    logs = []
    s = train(make_config("digits", out=sys.argv[1] + "/" + name, **kw, **extra), progress=False, log=logs.append)
    with np.load(sys.argv[1] + "/" + name + "/checkpoint.npz") as z:
        out[name] = {k: z[k].tolist() for k in z.files}
    out[name + "_log"] = [l for l in logs if "chips:" in l]
import pyarrow.parquet as pq
res = {}
for name in ("spread", "split"):
    links = pq.read_table(sys.argv[1] + "/" + name + "/traffic.parquet").to_pylist()
    chips = pq.read_table(sys.argv[1] + "/" + name + "/chips.parquet").to_pylist()
    res[name] = {"equal": all(out["local"][k] == out[name][k] for k in out["local"]),
                 "log": out[name + "_log"], "cross": sum(r["cross_node"] for r in links),
                 "nodes": sorted({n for r in chips for n in r["node"].split(",")})}
print(json.dumps(res))
ray.shutdown()
cluster.shutdown()
'''


def test_spread_over_nodes_equals_local(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                       env=env, cwd=REPO, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    both = json.loads(r.stdout.strip().splitlines()[-1])
    for name, res in both.items():
        assert res["equal"], name
        # 4 chips x 2 replicas, or the 3 chips of a mapping that splits 16C3p1, spread over the 3
        # nodes; the traffic tables say which links cross them
        assert "on 3 node(s)" in res["log"][0], res["log"]
        assert len(res["nodes"]) == 3 and res["cross"] > 0, res
    assert "holding slices of layers" in both["split"]["log"][0]


def test_the_private_instance_refuses_a_client_without_its_token(ray_session, tmp_path):
    """Token authentication is the gate of a Ray instance whose ports listen on the network (issue
    16): a client with a wrong token, or none, is refused by the GCS."""
    import os
    import subprocess
    import sys

    gcs = ray_session.get_runtime_context().gcs_address
    code = (f"import ray\ntry:\n    ray.init(address={gcs!r}, logging_level='error')\n    print('JOINED')\n"
            "except Exception as exc:\n    print('REFUSED', type(exc).__name__, exc)\n")
    # the instance listens on loopback only; a client finds it there in Ray's single-machine mode
    base = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    base.pop("RAY_AUTH_TOKEN", None)
    for token in ("0" * 64, None):
        env = {**base, "HOME": str(tmp_path)}  # no ~/.ray/auth_token there
        if token:
            env["RAY_AUTH_TOKEN"] = token
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert "REFUSED" in proc.stdout and "JOINED" not in proc.stdout, proc.stdout + proc.stderr[-1500:]
        assert "token" in (proc.stdout + proc.stderr).lower(), proc.stderr[-1500:]  # for its token, not by chance
    # with the owner's token (~/.ray/auth_token) the same client joins: the refusals were the gate's
    proc = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True, timeout=120)
    assert "JOINED" in proc.stdout, proc.stdout + proc.stderr[-1500:]


def test_the_token_file_is_readable_by_its_owner_only(tmp_path, monkeypatch):
    from launch.run.ray_session import private_token

    monkeypatch.setenv("HOME", str(tmp_path))
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("secret")
    token.chmod(0o644)
    private_token()
    assert token.stat().st_mode & 0o777 == 0o600


def _listening(pid: int) -> list[tuple[str, int]]:
    """(local address as /proc/net writes it, port) of every TCP socket process ``pid`` listens on
    (/proc: its socket inodes against the LISTEN tables)."""
    import os

    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # ended meanwhile
        return []
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                address, port = f[1].rsplit(":", 1)
                found.append((address, int(port, 16)))
    return found


def _listening_ports(pid: int) -> set[int]:
    return {port for _, port in _listening(pid)}


def _is_loopback(address: str) -> bool:
    """An address from /proc/net/tcp (8 hex digits, little-endian) or tcp6 (32): 127.0.0.0/8, ::1
    or ::ffff:127.x.x.x."""
    if len(address) == 8:
        return address[6:8] == "7F"
    return address == "0" * 31 + "1" or (address[:24] == "0" * 16 + "FFFF0000" and address[30:32] == "7F")


def test_the_private_instance_listens_on_loopback_only(ray_session):
    """Every port of the private instance (GCS, raylet, the driver's and a chip's worker, the
    dashboard agent and the metrics servers, which take no token) listens on 127.0.0.1 only: nothing
    of it is reachable from another machine (issue 16)."""
    import os

    from actors.chip import ChipConfig
    from actors.ray_chip import ChipActor
    from cluster.mapping import whole_layers
    from cluster.topology import parse_topology
    from launch.run.config import make_config

    cfg = make_config("digits", engine="local")
    chip = ChipActor.options(num_cpus=0.01).remote(
        1, whole_layers(parse_topology(cfg.topology), [(0, 0), (1, 1), (2, 3)]),
        ChipConfig(topology=cfg.topology, step=cfg.step, eta=cfg.eta, momentum=cfg.momentum), {})
    try:
        chip_pid = ray_session.get(chip.ping.remote())["pid"]
        pids = {os.getpid(), *descendants(os.getpid())}
        assert chip_pid in pids
        sockets = {pid: _listening(pid) for pid in pids}
        names = {pid: open(f"/proc/{pid}/comm").read().strip() for pid in sockets if sockets[pid]}
        assert {"gcs_server", "raylet"} <= set(names.values()), names
        assert sum(map(len, sockets.values())) >= 8, sockets  # GCS, raylet x2, 2 workers, agents, metrics
        open_ = {(names[pid], port) for pid, found in sockets.items() for address, port in found
                 if not _is_loopback(address)}
        assert not open_, f"listening beyond loopback: {sorted(open_)}"
    finally:
        ray_session.kill(chip)


def test_the_loopback_check_sees_an_open_port():
    """The check above can fail: a socket bound to all interfaces is seen as such."""
    import os
    import socket

    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        mine = dict((p, a) for a, p in _listening(os.getpid()))
        assert port in mine and not _is_loopback(mine[port])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        mine = dict((p, a) for a, p in _listening(os.getpid()))
        assert _is_loopback(mine[port])


def test_the_raylet_and_a_chip_worker_refuse_calls_without_the_token(ray_session):
    """Beyond the GCS: a gRPC call without the token to the raylet (node manager) and to a chip's
    own worker process is refused as UNAUTHENTICATED."""
    import grpc
    from ray.core.generated import core_worker_pb2, core_worker_pb2_grpc, node_manager_pb2, node_manager_pb2_grpc

    from actors.chip import ChipConfig
    from actors.ray_chip import ChipActor
    from cluster.mapping import whole_layers
    from cluster.topology import parse_topology
    from launch.run.config import make_config

    node = ray_session.nodes()[0]
    channel = grpc.insecure_channel(f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}")
    with pytest.raises(grpc.RpcError) as raylet:
        node_manager_pb2_grpc.NodeManagerServiceStub(channel).GetNodeStats(
            node_manager_pb2.GetNodeStatsRequest(), timeout=20)
    assert raylet.value.code() == grpc.StatusCode.UNAUTHENTICATED, raylet.value

    cfg = make_config("digits", engine="local")
    chip = ChipActor.options(num_cpus=0.01).remote(  # a pooling layer: a chip without weights
        1, whole_layers(parse_topology(cfg.topology), [(0, 0), (1, 1), (2, 3)]),
        ChipConfig(topology=cfg.topology, step=cfg.step, eta=cfg.eta, momentum=cfg.momentum), {})
    try:
        pid = ray_session.get(chip.ping.remote())["pid"]
        ports = _listening_ports(pid)
        assert ports, "the chip's worker listens on no port"
        for port in ports:
            channel = grpc.insecure_channel(f"{node['NodeManagerAddress']}:{port}")
            stub = core_worker_pb2_grpc.CoreWorkerServiceStub(channel)
            with pytest.raises(grpc.RpcError) as worker:
                stub.GetCoreWorkerStats(core_worker_pb2.GetCoreWorkerStatsRequest(), timeout=20)
            assert worker.value.code() == grpc.StatusCode.UNAUTHENTICATED, (port, worker.value)
    finally:
        ray_session.kill(chip)
