"""A run that joins a Ray cluster, watched by a parent process that can still speak when Ray ends it.

When the cluster a driver has joined loses its GCS, or the driver's node loses its raylet, Ray's
C++ core worker ends the driver's process itself (exit status 1, measured with Ray 2.60: the
driver is gone as soon as the GCS dies), before any Python code of the run could print what
happened. So ``spikegrad train`` with ``--address`` (or ``RAY_ADDRESS``) and the chips engine runs
the run in a child process, the same command line again, and waits:

- the child tells the parent, over an inherited pipe, its run directory once it has one and its
  exit status when :func:`launch.cli.main` returns (it has then said everything itself);
- a child that ends without that word ended the way Ray ends a driver: the parent removes the
  chips' shared-memory messages of the pipelines the child told it of (``parcels``: their file
  prefix, :mod:`actors.transport`; nobody will take them), prints one ``spikegrad: error:`` line
  with the ``--resume`` command and exits :data:`RAY_LOST_EXIT`, as a private instance's watch
  does (:func:`launch.run.ray_session.watch_ray`);
- SIGTERM sent to the parent is passed to the child once (a second one, or the same signal sent to
  the whole process group, is ignored by the child while it stops); Ctrl-C reaches the child from
  the terminal, and the parent ignores it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

SUPERVISED_FD = "SPIKEGRAD_SUPERVISED_FD"  # in the child's environment: the pipe it reports on
RAY_LOST_EXIT = 3  # exit status of a run whose Ray cluster lost its GCS or raylet


def kept(run: object, what: str) -> str:
    """``what``, then where the run's last checkpoint is and the command that continues it."""
    return f"{what}; the last checkpoint of {run} is kept: continue with spikegrad train --resume {run}"


_pipe: list[tuple[bool, int | None]] = []  # (watched, report fd), once taken from the environment


def _report_pipe() -> tuple[bool, int | None]:
    """Whether a parent watches this process, and the pipe to it. Taken out of the environment at
    the first call, so that processes this one starts do not inherit the variable (the number could
    name another file there)."""
    if not _pipe:
        value = os.environ.pop(SUPERVISED_FD, None)
        _pipe.append((value is not None, int(value) if value is not None and value.isdigit() else None))
    return _pipe[0]


def supervised() -> bool:
    """Whether this process is the child of a watching parent."""
    return _report_pipe()[0]


def tell(key: str, value: object) -> None:
    """Report ``key value`` to the watching parent (nothing when there is none)."""
    fd = _report_pipe()[1]
    if fd is None:
        return
    try:
        os.write(fd, f"{key} {value}\n".encode())
    except OSError:  # no parent listening any more: nothing to tell
        pass


def supervise(argv: Sequence[str], program: Sequence[str] | None = None) -> int:
    """Run ``spikegrad argv`` in a child process and wait (module docstring); returns the exit status.
    ``program``: the command line that runs spikegrad (default: this Python, ``-m launch.cli``)."""
    read, write = os.pipe()
    env = {**os.environ, SUPERVISED_FD: str(write)}
    relayed = False

    def on_sigterm(signum: int, frame: Any) -> None:
        nonlocal relayed
        if not relayed:
            relayed = True
            child.send_signal(signal.SIGTERM)

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        # Started before this process ignores Ctrl-C: an ignored signal stays ignored in a child.
        child = subprocess.Popen([*(program or (sys.executable, "-m", "launch.cli")), *argv], env=env,
                                 pass_fds=(write,))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal sends Ctrl-C to the child as well
        os.close(write)
        signal.signal(signal.SIGTERM, on_sigterm)
        status = child.wait()
        heard = _read_ready(read)
    finally:
        for s, h in before.items():
            signal.signal(s, h)
        os.close(read)
    told = [line.split(" ", 1) for line in heard.splitlines() if " " in line]
    said = dict(told)
    if "exit" in said:
        return status
    parcels = [value for key, value in told if key == "parcels"]
    if parcels:
        from actors.transport import drop_pipelines  # noqa: PLC0415  (pyarrow: only here)

        drop_pipelines(parcels)
    how = f"signal {-status}" if status < 0 else f"exit status {status}"
    what = (f"the run's process ended without a word ({how}); Ray ends a driver so when its cluster "
            f"loses the GCS or this node's raylet")
    run = said.get("run")
    print(f"spikegrad: error: {kept(run, what) if run else what + ', before the run had a directory'}",
          file=sys.stderr, flush=True)
    return RAY_LOST_EXIT


def _read_ready(fd: int) -> str:
    """What the pipe holds now (the child has ended; processes it forked may still hold the pipe
    open, so its end is not waited for)."""
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            chunk = b""
        if not chunk:
            return b"".join(chunks).decode(errors="replace")
        chunks.append(chunk)
