"""`ray job submit` against a real local head with token authentication on.

Starts `ray start --head --block` on 127.0.0.1 with its own ports and temp dir (dashboard on: the
job API needs it) in its own process group, submits a short `spikegrad train` job with the
absolute path of this environment's `spikegrad`, waits for SUCCEEDED, checks the job's metrics,
and stops only the processes it started (the process group), never a `ray stop` for the machine.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, timeout: float) -> bool:
    import urllib.request

    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=2)
            return True
        except Exception as exc:  # 401 counts as up: the server answered
            if getattr(exc, "code", None) in (401, 403):
                return True
            time.sleep(0.5)
    return False



def test_ray_job_submit_trains(tmp_path):
    ray_cli, spikegrad = BIN / "ray", BIN / "spikegrad"
    if not ray_cli.exists() or not spikegrad.exists():
        pytest.skip(f"needs the installed 'ray' and 'spikegrad' commands in {BIN} (pip install -e .)")
    # Token authentication stays on: one token shared by the head and the CLI.
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    gcs, dash = free_port(), free_port()
    # Every port of its own: another Ray instance (the test session's) may hold the defaults.
    own_ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]
    temp = Path("/tmp") / f"sg-ray-{secrets.token_hex(4)}"  # short: Ray's socket paths have a length limit
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
         "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats", *own_ports],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_http(dash, 120), "the head's dashboard did not come up"
        run = tmp_path / "job-run"
        job_id = f"spikegrad-test-{secrets.token_hex(4)}"
        cmd = [str(ray_cli), "job", "submit", f"--address=http://127.0.0.1:{dash}", f"--submission-id={job_id}",
               "--", str(spikegrad), "train", "--epochs", "2", "--limit-train", "300", "--limit-test", "100",
               "--quiet", "--json", "--out", str(run)]
        deadline = time.time() + 120
        while True:
            submit = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
            # The dashboard answers before its job agent is up; Ray then says to try again later.
            if submit.returncode == 0 or "No available agent" not in submit.stdout + submit.stderr \
                    or time.time() > deadline:
                break
            time.sleep(2)
        assert submit.returncode == 0, submit.stdout[-2000:] + submit.stderr[-2000:]
        status = subprocess.run([str(ray_cli), "job", "status", f"--address=http://127.0.0.1:{dash}", job_id],
                                env=env, capture_output=True, text=True, timeout=60)
        # `ray job status` prints "Job '<id>' succeeded" for the SUCCEEDED state.
        assert f"Job '{job_id}' succeeded" in status.stdout + status.stderr, status.stdout + status.stderr
        summary = json.loads((run / "summary.json").read_text())
        assert summary["engine"] == "chips" and summary["epochs"] == 2
        assert summary["test_accuracy"] > 25  # a 2-epoch run on 300 images: well above chance (10 %)
        assert (run / "traffic.parquet").is_file()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)
