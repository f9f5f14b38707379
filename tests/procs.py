"""Linux /proc helpers for tests that look at process trees (Ray's daemons, engine workers), and
the chips' shared-memory messages in /dev/shm (actors/transport.py)."""

from __future__ import annotations

import os


def _stat(pid: int) -> tuple[str, int] | None:
    """(name, parent PID) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat[stat.index("(") + 1:stat.rindex(")")], int(stat[stat.rindex(")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def ppid(pid: int) -> int:
    """The parent of ``pid``, or -1 when the process is gone."""
    st = _stat(pid)
    return -1 if st is None else st[1]


def descendants(root: int) -> dict[int, str]:
    """{pid: name} of every process below ``root``."""
    table = {int(p): st for p in os.listdir("/proc") if p.isdigit() and (st := _stat(int(p))) is not None}
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        p = frontier.pop()
        for c, (name, pp) in table.items():
            if pp == p and c not in found:
                found[c] = name
                frontier.append(c)
    return found


def parcels() -> set[str]:
    """The names of the chips' shared-memory messages now in /dev/shm (none where it is missing)."""
    return {n for n in os.listdir("/dev/shm") if n.startswith("spikegrad-")} if os.path.isdir("/dev/shm") else set()
