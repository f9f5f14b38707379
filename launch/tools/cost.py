"""What a chip run's links carried per training sample, in a spike router's units: packets, bits and the
bandwidth each link needs, from the traffic the chips measured (``traffic.parquet``).

Every spike event crossing a link is one packet (a spike count of n is n events, as the event wire
sends them). Formats (``--packet``, :func:`launch.tools.system.packet_bits`): ``spinnaker`` 40 bits
(an 8-bit header and a 32-bit key naming the source neuron, the sign folded in; Furber et al., Proc.
IEEE 102(5), 2014); ``aer`` the smallest address-event packet: 8-bit header, ceil(log2 N) address
bits for the N neurons of the *slice* whose spikes the message carries, a sign bit. The replica
exchange (``--replicas``) moves float arrays, counted by their bytes.

The energy of these packets, routed on a mesh with or without multicast, and the operations' energy
are :mod:`launch.tools.system`'s (profiles with sources).
"""

from __future__ import annotations

from typing import Any

from cluster.errors import SpikeGradError
from cluster.mapping import Plan
from cluster.routing import flows

from .system import packet_bits


def message_neurons(plan: Plan | None) -> dict[tuple[int, int], int]:
    """Per chip pair (src, dst), the most neurons one of its messages names: the address space an AER
    packet on that link needs."""
    if plan is None:
        return {}
    zeros = [0.0] * (plan.L + 1)
    out: dict[tuple[int, int], int] = {}
    for f in flows(plan, zeros, zeros, zeros, on_chip=False):
        out[(f.src, f.dst)] = max(out.get((f.src, f.dst), 0), f.neurons)
    return out


def link_costs(links: list[dict], images: int, seconds: float, fmt: str, rate: float,
               neurons: dict[tuple[int, int], int]) -> list[dict]:
    """Per link of one epoch: spikes, packets and bits per sample, and the bandwidth it needs at the
    epoch's measured rate (images / seconds) and at ``rate`` images/s (Mbit/s). A link to a higher chip
    carries spikes forward, to a lower one error spikes backward."""
    measured = images / seconds if seconds > 0 else float("nan")
    out = []
    for r in links:
        src, dst = int(r["src"]), int(r["dst"])
        if r.get("kind", "spikes") == "increments":
            bits = 8.0 * r["bytes"] / images
            row = dict(src=src, dst=dst, what="increments", spikes=0.0, packets=0.0, packet_bits=0, bits=bits)
        else:
            pb = packet_bits(fmt, neurons.get((src, dst), 2 ** 31))
            spikes = r["spikes"] / images
            row = dict(src=src, dst=dst, what="spikes" if dst > src else "error spikes", spikes=spikes,
                       packets=spikes, packet_bits=pb, bits=spikes * pb)
        row.update(cross_node=bool(r.get("cross_node", False)), mbps_measured=row["bits"] * measured / 1e6,
                   mbps_at_rate=row["bits"] * rate / 1e6)
        out.append(row)
    return out


def format_cost(links: list[dict], epoch: int, fmt: str, rate: float) -> str:
    lines = [f"per sample, epoch {epoch}, packets '{fmt}' (one per spike event; launch/tools/cost.py):",
             f"{'link':>7} {'carries':>13} {'spikes':>10} {'bits/pkt':>8} {'bits':>11} "
             f"{'Mbit/s measured':>15} {f'Mbit/s @{rate:g}/s':>16}"]
    for r in links:
        lines.append(f"{r['src']:>3}->{r['dst']:<3} {r['what']:>13} {r['spikes']:>10.4g} {r['packet_bits']:>8} "
                     f"{r['bits']:>11.4g} {r['mbps_measured']:>15.4g} {r['mbps_at_rate']:>16.4g}"
                     + (" *" if r["cross_node"] else ""))
    return "\n".join(lines)


def run_cost(metrics: list[dict], links: list[dict], topo_plan: Plan | None, epoch: int, fmt: str,
             rate: float) -> dict[str, Any]:
    """The measured links of one epoch of a chip run, per sample (rows as the run directory holds them)."""
    m = next((r for r in metrics if r["epoch"] == epoch), None)
    if m is None or not (isinstance(m["images"], int) and m["images"] > 0):
        raise SpikeGradError(f"epoch {epoch} of the metrics table expected a positive image count, got "
                             f"{None if m is None else m['images']!r}")
    return dict(links=link_costs([r for r in links if r["epoch"] == epoch], int(m["images"]), float(m["seconds"]),
                                 fmt, rate, message_neurons(topo_plan)))
