"""Spike traffic as a multi-chip system's routers carry it: flows, placement on a mesh, multicast trees.

A **flow** is what one chip's slice sends another per training sample: the spikes Sˡ of some units
of layer l forward, the error spikes Zˡ (or Eˡ⁺¹ down to the copies, :meth:`Plan.sums_below`)
backward, exactly the messages of :class:`cluster.mapping.Plan`; a flow whose two ends are the same
chip stays on it (between its cores). Per sample, a flow carries ``rate × neurons`` spikes: the
layer's counter per sample (``layers.parquet``) spread evenly over its neurons (the one assumption
here: a slice's share of a layer's spikes is its share of the neurons; checked against a chip run's
measured links by ``launch.tools.cost``). The equivalent ANN sends the same partition's values
densely: one value per neuron of the flow at 8 or 16 bits.

**Placement.** Chips sit on boards of ``board = (columns, rows)`` chips joined in a 2-D mesh,
``boards_per_node`` boards per node. ``snake`` places chips in index order row by row, reversing
every other row (neighbouring layers stay adjacent); ``auto`` starts there and swaps pairs of chips
while the traffic-weighted hop count falls (a local search, bounded). A hop is one
router-to-router link: on a board, XY (dimension-order) routing gives |Δx| + |Δy| hops; between
boards of a node, a packet goes to its board's corner (0, 0), crosses one board-to-board link and
goes on from the other board's corner; between nodes, the same with a node-to-node link instead.

**Multicast.** Where the routers multicast (SpiNNaker), the spikes a slice sends to several chips
leave it once and are copied where XY paths part: a flow group's packets cross each link of the
union of its paths once. Without multicast (Loihi, TrueNorth, Speck) every destination gets its own
copy over its own path. Flows of one source slice to several destinations with the same units form
one group; each link class is counted per packet and per hop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import SpikeGradError
from .mapping import Plan, layer_units

Position = tuple[int, int, int, int]  # node, board, x, y


@dataclass(frozen=True)
class Flow:
    """Per training sample: ``spikes`` from ``src`` to ``dst`` (chips), ``direction`` "forward" or
    "backward", of ``neurons`` neurons of layer ``layer`` (their values, for the ANN baseline)."""

    src: int
    dst: int
    direction: str
    layer: int
    lo: int
    hi: int
    neurons: int
    spikes: float


def flows(plan: Plan, spikes: list[float], error_spikes: list[float], delivered: list[float],
          on_chip: bool = True) -> list[Flow]:
    """Every flow of one training sample (module docstring); ``spikes[l]``, ``error_spikes[l]``
    (Zˡ, emitted) and ``delivered[l]`` (Eˡ) are layer l's counts per sample."""
    topo = plan.topo
    L = plan.L
    n_per = [layer_units(topo, l)[1] for l in range(L + 1)]
    density = {"S": [spikes[l] / topo.neurons(l) for l in range(L + 1)],
               "Z": [error_spikes[l] / topo.neurons(l) for l in range(L + 1)],
               "E": [delivered[l] / topo.neurons(l) for l in range(L + 1)]}
    out: list[Flow] = []

    def add(src: int, dst: int, direction: str, l: int, lo: int, hi: int, what: str) -> None:
        n = (hi - lo) * n_per[l]
        if n > 0 and (on_chip or src != dst):
            out.append(Flow(src, dst, direction, l, lo, hi, n, density[what][l] * n))

    for l in range(L + 1):
        for p in plan.owners[l]:
            if l < L:
                for t in plan.forward_targets(l, p.chip):
                    add(p.chip, t.chip, "forward", l, t.lo, t.hi, "S")
            if l > 0:
                for t in plan.backward_targets(l, p.chip):
                    if plan.sums_below(l):
                        add(p.chip, t.chip, "backward", l, t.lo, t.hi, "E")
                    else:
                        add(p.chip, t.chip, "backward", l - 1, t.lo, t.hi, "Z")
            if l > 0 and on_chip:  # what this chip's slice of l reads from its own slice of l - 1
                for s in plan.forward_sources(l, p.chip):
                    if s.chip == p.chip:
                        add(p.chip, p.chip, "forward", l - 1, s.lo, s.hi, "S")
                        if not plan.sums_below(l):
                            add(p.chip, p.chip, "backward", l - 1, s.lo, s.hi, "Z")
                if plan.sums_below(l) and p.chip in plan.chips_of(l - 1):
                    add(p.chip, p.chip, "backward", l, p.lo, p.hi, "E")
    return out


# -- placement --------------------------------------------------------------------------------------

def snake(n_chips: int, board: tuple[int, int], boards_per_node: int) -> list[Position]:
    """Chips in index order, row by row, every other row reversed; boards in order; nodes in order."""
    cols, rows = board
    per_board = cols * rows
    out = []
    for c in range(n_chips):
        b, i = divmod(c, per_board)
        y, x = divmod(i, cols)
        if y % 2:
            x = cols - 1 - x
        out.append((b // boards_per_node, b, x, y))
    return out


def path(a: Position, b: Position) -> list[tuple[Position, Position]]:
    """The router-to-router links from a to b (module docstring), each as (from, to) positions."""
    links: list[tuple[Position, Position]] = []

    def walk(p: Position, q: Position) -> None:  # XY on one board: x first, then y
        n, bd, x, y = p
        while x != q[2]:
            nx = x + (1 if q[2] > x else -1)
            links.append(((n, bd, x, y), (n, bd, nx, y)))
            x = nx
        while y != q[3]:
            ny = y + (1 if q[3] > y else -1)
            links.append(((n, bd, x, y), (n, bd, x, ny)))
            y = ny

    if a == b:
        return links
    if a[1] == b[1]:
        walk(a, b)
        return links
    ca, cb = (a[0], a[1], 0, 0), (b[0], b[1], 0, 0)
    walk(a, ca)
    links.append((ca, cb))  # the board-to-board (same node) or node-to-node link
    walk(cb, b)
    return links


def link_class(p: Position, q: Position) -> str:
    if p[0] != q[0]:
        return "node-to-node"
    if p[1] != q[1]:
        return "board-to-board"
    return "chip-to-chip"


def _cost(fl: list[Flow], pos: list[Position]) -> float:
    return sum(f.spikes * len(path(pos[f.src], pos[f.dst])) for f in fl if f.src != f.dst)


def place(n_chips: int, fl: list[Flow], board: tuple[int, int], boards_per_node: int, how: str = "snake",
          budget: int = 20_000) -> list[Position]:
    """Chip positions: ``snake``, or ``auto`` (``snake`` improved by pairwise swaps of chips and free
    mesh places while the spike-weighted hop count falls; at most ``budget`` evaluations)."""
    if board[0] < 1 or board[1] < 1 or boards_per_node < 1:
        raise SpikeGradError(f"a board expected at least 1x1 chips and a node at least 1 board, got {board} and "
                             f"{boards_per_node}")
    pos = snake(n_chips, board, boards_per_node)
    if how == "snake":
        return pos
    if how != "auto":
        raise SpikeGradError(f"placement expected snake or auto, got {how!r}")
    spots = snake(max(n_chips, board[0] * board[1] * math.ceil(n_chips / (board[0] * board[1]))), board,
                  boards_per_node)
    free = [s for s in spots if s not in pos]
    best = _cost(fl, pos)
    tries = 0
    improved = True
    while improved and tries < budget:
        improved = False
        for i in range(n_chips):
            for j in list(range(i + 1, n_chips)) + [-1 - k for k in range(len(free))]:
                tries += 1
                cand = list(pos)
                if j >= 0:
                    cand[i], cand[j] = cand[j], cand[i]
                else:
                    cand[i] = free[-1 - j]
                c = _cost(fl, cand)
                if c < best - 1e-9:
                    if j < 0:
                        free[-1 - j] = pos[i]
                    pos, best, improved = cand, c, True
                if tries >= budget:
                    break
            if tries >= budget:
                break
    return pos


def parse_placement(text: str, n_chips: int) -> list[Position]:
    """A placement given as "node.board.x.y" per chip, comma-separated, in chip order."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != n_chips:
        raise SpikeGradError(f"placement expected {n_chips} positions node.board.x.y, got {len(parts)}")
    out = []
    for p in parts:
        try:
            n, b, x, y = (int(v) for v in p.split("."))
        except ValueError:
            raise SpikeGradError(f"placement position expected node.board.x.y (integers), got {p!r}") from None
        if min(n, b, x, y) < 0 or max(n, b, x, y) > 10**6:
            raise SpikeGradError(f"placement position expected integers in 0..10^6, got {p!r}")
        out.append((n, b, x, y))
    if len(set(out)) != len(out):
        raise SpikeGradError("placement puts two chips on one position")
    return out


# -- routing ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Routed:
    """A flow on the mesh: its hops, the class of its longest step, and the packets it adds to each link
    (shared with the other flows of its multicast group where the routers multicast)."""

    flow: Flow
    hops: int
    cls: str


def route(fl: list[Flow], pos: list[Position], multicast: bool) -> tuple[list[Routed], dict, dict]:
    """(routed flows, packets per sample on each directed mesh link, packet-hops per sample per class).

    Classes: ``on-chip`` (a flow within one chip: one packet, no mesh hop), ``chip-to-chip`` hops on a
    board, ``board-to-board`` and ``node-to-node`` links. With ``multicast``, flows from one chip of
    the same layer, direction and units share the links of their paths' union."""
    routed = []
    load: dict[tuple[Position, Position], float] = {}
    per_class = {"on-chip": 0.0, "chip-to-chip": 0.0, "board-to-board": 0.0, "node-to-node": 0.0}
    groups: dict[tuple, list[Flow]] = {}
    for f in fl:
        if f.src == f.dst:
            routed.append(Routed(f, 0, "on-chip"))
            per_class["on-chip"] += f.spikes
            continue
        links = path(pos[f.src], pos[f.dst])
        classes = {link_class(p, q) for p, q in links}
        cls = next(c for c in ("node-to-node", "board-to-board", "chip-to-chip") if c in classes)
        routed.append(Routed(f, len(links), cls))
        key = (f.src, f.direction, f.layer, f.lo, f.hi) if multicast else (id(f),)
        groups.setdefault(key, []).append(f)
    for group in groups.values():
        spikes = group[0].spikes
        edges: dict[tuple[Position, Position], None] = {}
        for f in group:
            for e in path(pos[f.src], pos[f.dst]):
                if multicast:
                    edges[e] = None
                else:
                    load[e] = load.get(e, 0.0) + f.spikes
                    per_class[link_class(*e)] += f.spikes
        for e in edges:
            load[e] = load.get(e, 0.0) + spikes
            per_class[link_class(*e)] += spikes
    return routed, load, per_class
