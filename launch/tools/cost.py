"""What a run's training costs per sample in a neuromorphic system's units: spike packets and
bandwidth per link, and an energy estimate per pass, SNN against its equivalent ANN.

Packets. Every spike event crossing a link is one packet (a spike count of n is n events, as the
event wire sends them). Formats (``--packet``):

* ``spinnaker`` (default): 40 bits, an 8-bit header and a 32-bit routing key that names the
  source neuron, the sign folded into the key (SpiNNaker's multicast packet without payload;
  Furber et al., "The SpiNNaker project", Proc. IEEE 102(5), 2014);
* ``aer``: the smallest address-event packet for the link: an 8-bit header, ceil(log2 N) address
  bits for the N neurons whose spikes the link carries, and one sign bit. N is taken from the run's
  chip table: the neurons of the sender's top layer forward, of the receiver's top layer backward,
  whole layers even where chips hold slices of them (a slice's spikes need no more bits; a chip
  whose link also carries a lower layer's spikes may need one or two bits more).

The replica exchange (``--replicas``) moves float arrays, counted by their bytes.

Energy (an estimate, never a measurement): operations times energy per operation. Defaults, every
one overridable: a 32-bit float MAC 4.6 pJ and a 32-bit float accumulation (ACC) 0.9 pJ (Horowitz,
"Computing's energy problem", ISSCC 2014, 45 nm; the figures SNN papers use); a packet 3.5 pJ per
link it crosses (Loihi's across-tile spike, Davies et al., IEEE Micro 38(1), 2018; a chip-to-chip
link costs more: set ``--e-hop``). The SNN does ACCs, except layer 0, which multiplies the float
input (MACs); the ANN does MACs: forward, backward (layers ≥ 1) and the weight update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cluster.errors import SpikeGradError
from cluster.topology import Topology

from ..run.engine import upgrade_row

E_MAC_PJ, E_ACC_PJ, E_HOP_PJ = 4.6, 0.9, 3.5
HEADER_BITS = 8
PACKETS = ("spinnaker", "aer")


def packet_bits(fmt: str, neurons: int) -> int:
    """Bits of one spike packet on a link carrying the spikes of ``neurons`` neurons."""
    if fmt == "spinnaker":
        return 40
    if fmt == "aer":
        return HEADER_BITS + max(1, math.ceil(math.log2(max(2, neurons)))) + 1
    raise ValueError(f"packet format expected one of {', '.join(PACKETS)}, got {fmt!r}")


def _top_layer(chips: list[dict], chip: int, topo: Topology) -> int:
    """The last layer chip ``chip`` holds, from the chips table ("2-3" -> 3)."""
    held = [r["layers"] for r in chips if r["chip"] == chip]
    try:
        top = int(str(held[0]).split("-")[-1])
    except (IndexError, ValueError):
        raise SpikeGradError(f"the chips table has no layers for chip {chip} (got {held[:1]!r})") from None
    if not 0 <= top < len(topo.layers):
        raise SpikeGradError(f"the chips table gives chip {chip} layer {top}; {topo.text!r} has "
                             f"layers 0-{len(topo.layers) - 1}")
    return top


def link_costs(links: list[dict], chips: list[dict], images: int, seconds: float, topo: Topology, fmt: str,
               rate: float) -> list[dict]:
    """Per link of one epoch: spikes, packets and bits per sample, and the bandwidth it needs at the
    epoch's measured rate (images / seconds) and at ``rate`` images/s (Mbit/s).

    A forward link (to a higher chip) carries the spikes of the sender's top layer; a backward link
    the error spikes of the receiver's top layer (its U compartments emit them, Eq. (6))."""
    measured = images / seconds if seconds > 0 else float("nan")
    out = []
    for r in links:
        src, dst = int(r["src"]), int(r["dst"])
        if r.get("kind", "spikes") == "increments":
            bits = 8.0 * r["bytes"] / images
            row = dict(src=src, dst=dst, what="increments", spikes=0.0, packets=0.0, packet_bits=0, bits=bits)
        else:
            forward = dst > src
            neurons = topo.neurons(_top_layer(chips, src if forward else dst, topo))
            pb = packet_bits(fmt, neurons)
            spikes = r["spikes"] / images
            row = dict(src=src, dst=dst, what="spikes" if forward else "error spikes", spikes=spikes,
                       packets=spikes, packet_bits=pb, bits=spikes * pb)
        row.update(cross_node=bool(r.get("cross_node", False)), mbps_measured=row["bits"] * measured / 1e6,
                   mbps_at_rate=row["bits"] * rate / 1e6)
        out.append(row)
    return out


@dataclass(frozen=True)
class Energies:
    """Energy per operation, pJ (module docstring for the sources)."""

    mac: float = E_MAC_PJ
    acc: float = E_ACC_PJ
    hop: float = E_HOP_PJ


def energy_per_sample(layer_rows: list[dict], images: int, e: Energies, packets: float = 0.0) -> list[dict]:
    """Per pass (forward, backward, update): SNN and ANN operations and energy per sample (pJ), from
    one epoch's rows of layers.parquet; ``packets`` per sample add e.hop each (communication)."""
    rows = [upgrade_row(int(r["layer"]), r) for r in layer_rows]  # tables written before input_macs too
    fwd_mac = sum(r["input_macs"] for r in rows)  # layer 0 multiplies its float input
    fwd_acc = sum(r["acc_forward"] for r in rows)
    passes = [
        ("forward", fwd_acc, fwd_mac, sum(r["macs"] for r in rows)),
        ("backward", sum(r["acc_backward"] for r in rows), 0.0,
         sum(r["macs"] for r in rows if r["layer"] > 0)),
        ("update", sum(r["acc_update"] for r in rows), 0.0,
         sum(r["macs"] for r in rows if r["kind"] != "pool")),  # the layers with weights
    ]
    out = []
    for name, acc, mac, ann in passes:
        snn_pj = (acc * e.acc + mac * e.mac) / images
        ann_pj = ann * e.mac / images
        out.append(dict(pass_=name, snn_acc=acc / images, snn_mac=mac / images, ann_mac=ann / images,
                        snn_pj=snn_pj, ann_pj=ann_pj))
    if packets:
        out.append(dict(pass_="links", snn_acc=0.0, snn_mac=0.0, ann_mac=0.0, snn_pj=packets * e.hop, ann_pj=0.0))
    return out


def format_cost(links: list[dict], energy: list[dict], epoch: int, fmt: str, rate: float, e: Energies) -> str:
    lines = []
    if links:
        lines += [f"per sample, epoch {epoch}, packets '{fmt}' (one per spike event; module launch.tools.cost):",
                  f"{'link':>7} {'carries':>13} {'spikes':>10} {'bits/pkt':>8} {'bits':>11} "
                  f"{'Mbit/s measured':>15} {f'Mbit/s @{rate:g}/s':>16}"]
        for r in links:
            lines.append(f"{r['src']:>3}->{r['dst']:<3} {r['what']:>13} {r['spikes']:>10.4g} {r['packet_bits']:>8} "
                         f"{r['bits']:>11.4g} {r['mbps_measured']:>15.4g} {r['mbps_at_rate']:>16.4g}"
                         + (" *" if r["cross_node"] else ""))
        lines.append("")
    lines += [f"energy per sample, epoch {epoch} (an ESTIMATE: MAC {e.mac:g} pJ, ACC {e.acc:g} pJ, "
              f"packet hop {e.hop:g} pJ):",
              f"{'pass':>8} {'SNN ACC':>11} {'SNN MAC':>11} {'SNN nJ':>9} {'ANN MAC':>11} {'ANN nJ':>9} {'SNN/ANN':>8}"]
    for r in energy:
        ratio = r["snn_pj"] / r["ann_pj"] if r["ann_pj"] else float("nan")
        lines.append(f"{r['pass_']:>8} {r['snn_acc']:>11.4g} {r['snn_mac']:>11.4g} {r['snn_pj'] / 1e3:>9.4g} "
                     f"{r['ann_mac']:>11.4g} {r['ann_pj'] / 1e3:>9.4g} {ratio:>8.3g}")
    total_s = sum(r["snn_pj"] for r in energy)
    total_a = sum(r["ann_pj"] for r in energy)
    lines.append(f"{'total':>8} {'':>11} {'':>11} {total_s / 1e3:>9.4g} {'':>11} {total_a / 1e3:>9.4g} "
                 f"{total_s / total_a if total_a else float('nan'):>8.3g}")
    return "\n".join(lines)


def run_cost(metrics: list[dict], layers: list[dict], links: list[dict], chips: list[dict], topo: Topology,
             epoch: int, fmt: str, rate: float, e: Energies) -> dict[str, Any]:
    """Links and energy of one epoch of a run (rows as the run directory holds them)."""
    m = next(r for r in metrics if r["epoch"] == epoch)
    if not (isinstance(m["images"], int) and m["images"] > 0):
        raise SpikeGradError(f"epoch {epoch} of the metrics table expected a positive image count, got {m['images']!r}")
    lrows = [r for r in layers if r["epoch"] == epoch]
    cost_links = link_costs([r for r in links if r["epoch"] == epoch], [r for r in chips if r["epoch"] == epoch],
                            int(m["images"]), float(m["seconds"]), topo, fmt, rate)
    packets = sum(r["packets"] for r in cost_links)
    return dict(links=cost_links, energy=energy_per_sample(lrows, int(m["images"]), e, packets))
