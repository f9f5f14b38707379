"""`ray job submit` against a real local head with token authentication on.

Starts `ray start --head --block` on 127.0.0.1 with its own ports and temp dir (dashboard on: the
job API needs it) in its own process group, submits a short `spikegrad train` job with the
absolute path of this environment's `spikegrad`, waits for SUCCEEDED, checks the job's metrics,
and stops only the processes it started (the process group), never a `ray stop` for the machine.
"""

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..procs import descendants

pytestmark = pytest.mark.ray  # a Ray instance of its own, or the session's (conftest)

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



@contextlib.contextmanager
def ray_head(start: list[str], env: dict, dashboard: bool):
    """``start`` (a ``ray start --head`` command line) with --block, every port of its own (another Ray
    instance, the test session's, may hold the defaults) and its own temp dir, in its own process
    group; yields (process, GCS port, dashboard port); stops only that group."""
    gcs, dash = free_port(), free_port()
    own_ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]
    temp = Path("/tmp") / f"sg-ray-{secrets.token_hex(4)}"  # short: Ray's socket paths have a length limit
    head = subprocess.Popen(
        [*start, "--block", f"--port={gcs}", f"--dashboard-port={dash}",
         f"--include-dashboard={str(dashboard).lower()}", f"--temp-dir={temp}", "--disable-usage-stats", *own_ports],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield head, gcs, dash
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def token_env() -> dict:
    """Token authentication on: one token shared by the head and its clients."""
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    return env


def readme_recipe() -> list[str]:
    """The shell lines of the README's job recipe (between its job-recipe markers)."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = text.split("<!-- job-recipe -->", 1)[1].split("<!-- /job-recipe -->", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("```")]


def test_the_readme_recipe_is_what_the_test_runs():
    recipe = readme_recipe()
    assert recipe[0].startswith("export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=")
    assert [line.split()[0:2] for line in recipe[1:]] == [["ray", "start"], ["ray", "job"], ["ray", "job"],
                                                          ["spikegrad", "traffic"], ["ray", "stop"]]


def test_ray_job_submit_trains(tmp_path):
    ray_cli, spikegrad = BIN / "ray", BIN / "spikegrad"
    if not ray_cli.exists() or not spikegrad.exists():
        pytest.skip(f"needs the installed 'ray' and 'spikegrad' commands in {BIN} (pip install -e .)")
    env = token_env()
    recipe = readme_recipe()
    run = tmp_path / "job-run"
    job_id = f"spikegrad-test-{secrets.token_hex(4)}"
    dash = 0  # the head's dashboard port, once it is started

    def from_readme(line: str) -> list[str]:
        """A recipe line with this test's port, paths and job id (and the installed commands)."""
        line = (line.replace("8265", str(dash)).replace('"$PWD/runs/job-1"', str(run))
                .replace("spikegrad-job-1", job_id))
        words = shlex.split(line)
        return [str(BIN / words[0]) if words[0] in ("ray", "spikegrad") else words[0],
                *[str(spikegrad) if w == "spikegrad" else w for w in words[1:]]]

    start = from_readme(next(line for line in recipe if line.startswith("ray start")))
    with ray_head(start, env, dashboard=True) as (_, _, port):
        dash = port
        assert wait_http(dash, 120), "the head's dashboard did not come up"
        cmd = from_readme(next(line for line in recipe if line.startswith("ray job submit")))
        deadline = time.time() + 120
        while True:
            submit = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
            # The dashboard answers before its job agent is up; Ray then says to try again later.
            if submit.returncode == 0 or "No available agent" not in submit.stdout + submit.stderr \
                    or time.time() > deadline:
                break
            time.sleep(2)
        assert submit.returncode == 0, submit.stdout[-2000:] + submit.stderr[-2000:]
        status = subprocess.run(from_readme(next(line for line in recipe if line.startswith("ray job status"))),
                                env=env, capture_output=True, text=True, timeout=60)
        # `ray job status` prints "Job '<id>' succeeded" for the SUCCEEDED state.
        assert f"Job '{job_id}' succeeded" in status.stdout + status.stderr, status.stdout + status.stderr
        summary = json.loads((run / "summary.json").read_text())
        assert summary["engine"] == "chips" and summary["epochs"] == 2
        assert summary["test_accuracy"] > 25  # a 2-epoch run on 300 images: well above chance (10 %)
        assert (run / "traffic.parquet").is_file()
        traffic = subprocess.run(from_readme(next(line for line in recipe if line.startswith("spikegrad traffic"))),
                                 env=env, capture_output=True, text=True, timeout=120)
        assert traffic.returncode == 0 and "chip-to-chip traffic" in traffic.stdout, \
            traffic.stdout[-1000:] + traffic.stderr[-1000:]


def test_a_joined_cluster_losing_its_gcs_ends_with_the_resume_command(tmp_path):
    """Ray ends a driver whose cluster loses its GCS from C++ (exit status 1, no Python runs), so a
    run that joins a cluster is watched by a parent process (launch.run.supervise): killing the head's
    GCS ends the run with one spikegrad line naming --resume, exit status 3, and its checkpoint kept."""
    ray_cli = BIN / "ray"
    if not ray_cli.exists():
        pytest.skip(f"needs the installed 'ray' command in {BIN} (pip install -e .)")
    env = token_env()
    start = [str(ray_cli), "start", "--head", "--node-ip-address=127.0.0.1", "--num-cpus=2"]
    run = tmp_path / "joined"
    with ray_head(start, env, dashboard=False) as (head, gcs, _):
        deadline = time.time() + 120
        while not {"gcs_server", "raylet"} <= set(descendants(head.pid).values()) and time.time() < deadline:
            time.sleep(0.5)
        proc = subprocess.Popen([sys.executable, "-m", "launch.cli", "train", "--address", f"127.0.0.1:{gcs}",
                                 "--epochs", "100000", "--limit-train", "256", "--limit-test", "32", "--quiet",
                                 "--out", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                cwd=Path(__file__).resolve().parents[2])
        try:
            deadline = time.time() + 240
            while time.time() < deadline and proc.poll() is None and not (run / "metrics.parquet").is_file():
                time.sleep(0.2)  # an epoch is done, with its checkpoint
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            gcs_pid = next(p for p, n in descendants(head.pid).items() if n == "gcs_server")
            os.kill(gcs_pid, signal.SIGKILL)
            err = proc.communicate(timeout=180)[1].decode().strip().splitlines()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 3, err[-8:]
    assert err[-1].startswith("spikegrad: error: the run's process ended without a word"), err[-8:]
    assert err[-1].endswith(f"the last checkpoint of {run} is kept: continue with spikegrad train --resume {run}")
    assert (run / "checkpoint.npz").is_file()
