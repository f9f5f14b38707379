"""Listeners of a private Ray instance: python docs/measurements/ray-listeners-2026-12-01.py plain|init_private."""
import logging
import os
import subprocess
import sys
import time
import urllib.request

import ray

mode = sys.argv[1]
if mode == "init_private":
    from launch.run.ray_session import init_private
    init_private(1, 256 * 1024 * 1024, logging.ERROR)
else:
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=1,
             object_store_memory=256 * 1024 * 1024, logging_level=logging.ERROR)
@ray.remote
def f():
    return os.getpid()


ray.get(f.remote())
time.sleep(2)
print("node address:", ray._private.worker.global_worker.node.address_info["node_ip_address"])
names = ("gcs_server", "raylet", "ray::", "python")
for l in subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout.splitlines():
    if any(n in l for n in names):
        print(" ".join(l.split()[3:4] + l.split()[5:6]))
hostip = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()[0]
for port in (44227, 44217):
    for host in ("127.0.0.1", hostip):
        try:
            body = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read()
            print(f"GET http://{host}:{port}/metrics -> 200, {len(body)} bytes, no token")
        except Exception as exc:
            print(f"GET http://{host}:{port}/metrics -> {type(exc).__name__}: {getattr(exc, 'reason', exc)}")
ray.shutdown()
