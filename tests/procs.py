"""Linux /proc helpers for tests that look at process trees (Ray's daemons, engine workers), and
the chips' shared-memory messages in /dev/shm (actors/transport.py)."""

from __future__ import annotations

import os

from launch.run import ray_session


def ppid(pid: int) -> int:
    """The parent of ``pid``, or -1 when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def descendants(root: int) -> dict[int, str]:
    """{pid: name} of every process below ``root`` (the product's own walk of /proc)."""
    return {pid: name for pid, (name, _) in ray_session.descendants(root).items()}


def parcels() -> set[str]:
    """The names of the chips' shared-memory messages now in /dev/shm (none where it is missing)."""
    return {n for n in os.listdir("/dev/shm") if n.startswith("spikegrad-")} if os.path.isdir("/dev/shm") else set()
