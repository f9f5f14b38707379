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
