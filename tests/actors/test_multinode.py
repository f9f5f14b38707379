"""Several raylets on one machine (ray.cluster_utils.Cluster): chips spread over nodes, with
replicas; the result equals one process. Runs in a subprocess: it needs its own
Ray cluster, separate from the session's. Ray's test cluster binds the machine's own interface
address (its nodes would not find a loopback-only head); nothing leaves the machine."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import json, sys
import numpy as np
import ray
from ray.cluster_utils import Cluster
from launch.config import make_config
from launch.runs import train

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, logging_level="error")
out = {}
kw = dict(epochs=1, limit_train=128, limit_test=32, batch_size=32, micro_batch=8)
for name, extra in [("local", dict(engine="local")), ("spread", dict(placement="spread", replicas=2))]:
    logs = []
    s = train(make_config("digits", out=sys.argv[1] + "/" + name, **kw, **extra), progress=False, log=logs.append)
    with np.load(sys.argv[1] + "/" + name + "/checkpoint.npz") as z:
        out[name] = {k: z[k].tolist() for k in z.files}
    out[name + "_log"] = [l for l in logs if "chips:" in l]
print(json.dumps({"equal": all(out["local"][k] == out["spread"][k] for k in out["local"]),
                  "log": out["spread_log"]}))
ray.shutdown()
cluster.shutdown()
'''


def test_spread_over_nodes_equals_local(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                       env=env, cwd=REPO, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["equal"]
    # 4 chips x 2 replicas spread over the 3 nodes
    assert "on 3 node(s)" in res["log"][0], res["log"]


def test_the_private_instance_refuses_a_client_without_its_token(ray_session, tmp_path):
    """Token authentication is the gate of a Ray instance whose ports listen on the network (issue
    16): a client with a wrong token, or none, is refused by the GCS."""
    import os
    import subprocess
    import sys

    gcs = ray_session.get_runtime_context().gcs_address
    code = ("import ray\ntry:\n    ray.init(address=%r, logging_level='error')\n    print('JOINED')\n"
            "except Exception as exc:\n    print('REFUSED', type(exc).__name__, exc)\n") % gcs
    for token in ("0" * 64, None):
        env = {**os.environ, "HOME": str(tmp_path), "RAY_AUTH_MODE": "token"}  # no ~/.ray/auth_token there
        env.pop("RAY_AUTH_TOKEN", None)
        if token:
            env["RAY_AUTH_TOKEN"] = token
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert "REFUSED" in proc.stdout and "JOINED" not in proc.stdout, proc.stdout + proc.stderr[-1500:]
        assert "token" in (proc.stdout + proc.stderr).lower(), proc.stderr[-1500:]  # for its token, not by chance


def test_the_token_file_is_readable_by_its_owner_only(tmp_path, monkeypatch):
    from launch.chip_trainer import private_token

    monkeypatch.setenv("HOME", str(tmp_path))
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("secret")
    token.chmod(0o644)
    private_token()
    assert token.stat().st_mode & 0o777 == 0o600
