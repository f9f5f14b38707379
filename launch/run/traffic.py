"""Chip counters as tables: the rows the driver writes to ``traffic.parquet`` and ``chips.parquet``, and
the text it prints at the end of a chip run and ``spikegrad traffic`` prints (no Ray needed)."""

from __future__ import annotations

import math
from typing import Any

from cluster.errors import SpikeGradError
from cluster.synops import COUNTERS


def traffic_rows(epoch: int, reports: list[dict]) -> tuple[list[dict], list[dict]]:
    """Parquet rows: (links: epoch, src, dst, kind, messages, bytes, spikes, cross_node), (chips: epoch,
    chip, layers, node, micro_batch, transport (``shm``, ``ray`` or both, over its replicas:
    :mod:`actors.transport`), ops, timing). ``kind`` "spikes": spike messages between chips; "increments":
    the replica exchange, src = dst = the chip index, each replica's ω sent to the others (float
    arrays, no spikes). A link crosses nodes when its two chips ran on different Ray nodes (with
    replicas: when the sets of their replicas' nodes differ; an exchange when its replicas span nodes)."""
    links, chips = [], []
    nodes = {rep["chip"]: tuple(rep.get("nodes", ())) for rep in reports}
    for rep in reports:
        for dst, link in rep["traffic"].items():
            links.append(dict(epoch=epoch, src=rep["chip"], dst=int(dst), kind="spikes", **link,
                              cross_node=nodes.get(rep["chip"], ()) != nodes.get(int(dst), ())))
        ex = rep.get("exchange", {})
        if ex.get("messages"):
            links.append(dict(epoch=epoch, src=rep["chip"], dst=rep["chip"], kind="increments",
                              messages=ex["messages"], bytes=ex["bytes"], spikes=0.0, min_payload_bytes=0,
                              cross_node=len(nodes.get(rep["chip"], ())) > 1))
        ops: dict[str, Any] = {k: sum(row[k] for row in rep["synops"].values())
                               for k in COUNTERS}
        checks = rep.get("event_checks", {"values": 0, "differ": 0})
        chips.append(dict(epoch=epoch, chip=rep["chip"], layers="-".join(map(str, rep["layers"])),
                          node=",".join(n[:8] for n in nodes[rep["chip"]]), micro_batch=rep.get("micro_batch", 0),
                          transport=rep.get("transport", ""),
                          **ops, **{f"{k}_seconds": v for k, v in rep["timing"].items()},
                          event_values_checked=checks["values"], event_values_differ=checks["differ"]))
    return links, chips


def _direction(r: dict) -> str:
    """A spike link to a higher chip carries spikes forward; to a lower one, error spikes backward
    (chips are numbered up the network, as launch.tools.cost reads them too)."""
    return "forward" if int(r["dst"]) > int(r["src"]) else "backward"


def _sums(rows: list[dict], images: float) -> dict[str, float]:
    return dict(spikes_per_sample=sum(r["spikes"] for r in rows) / images,
                wire_bits_per_sample=8.0 * sum(r["bytes"] for r in rows) / images,
                bytes=float(sum(r["bytes"] for r in rows)), messages=float(sum(r["messages"] for r in rows)))


def traffic_json(links: list[dict], chips: list[dict], epoch: int, images: int) -> dict[str, Any]:
    """One epoch's traffic per training sample (``images``: the epoch's training images), from the run's
    traffic and chips tables. Units: spikes per sample (spike events with ``--wire events``, spike
    counts otherwise: what a spike router carries, one packet each), wire bits per sample (8 × the
    bytes of the Arrow messages the emulator sent, over ``images``), and bytes and messages of the
    epoch (the wire as sent).

    Returns {epoch, images, wire, links: [{src, dst, direction, cross_node, spikes_per_sample,
    wire_bits_per_sample, bytes, messages}], busiest: {by_wire_bits, by_spikes} (a link row or None),
    totals: {forward, backward, within_node, across_nodes, exchange}, exchange: [replica exchange rows],
    chips: [per chip: node, layers, each counter per sample, busy/cpu/encode/decode seconds]}."""
    if not (isinstance(images, int) and images > 0):
        raise SpikeGradError(f"traffic: epoch {epoch} expected a positive image count, got {images!r}")
    rows = [r for r in links if r["epoch"] == epoch]
    spikes = sorted((r for r in rows if r.get("kind", "spikes") == "spikes"), key=lambda r: (r["src"], r["dst"]))
    exchange = [r for r in rows if r.get("kind") == "increments"]
    table: list[dict[str, Any]] = [dict(src=int(r["src"]), dst=int(r["dst"]), direction=_direction(r),
                                        cross_node=bool(r.get("cross_node", False)), **_sums([r], images))
                                   for r in spikes]
    busiest = {f"by_{k}": max(table, key=lambda r: r[f"{k}_per_sample"], default=None)
               for k in ("wire_bits", "spikes")}
    totals = {d: _sums([r for r in spikes if _direction(r) == d], images) for d in ("forward", "backward")}
    totals.update({where: _sums([r for r in rows if bool(r.get("cross_node", False)) == cross], images)
                   for where, cross in (("within_node", False), ("across_nodes", True))})
    totals["exchange"] = _sums(exchange, images)
    events = [r for r in chips if r["epoch"] == epoch]
    chip_rows = []
    for r in sorted(events, key=lambda r: r["chip"]):
        chip_rows.append(dict(chip=int(r["chip"]), node=r.get("node", "") or "", layers=str(r["layers"]),
                              **{f"{k}_per_sample": float(r.get(k, math.nan)) / images for k in COUNTERS},
                              **{k: float(r.get(k) or 0.0) for k in ("busy_seconds", "cpu_seconds", "encode_seconds",
                                                                    "decode_seconds")}))
    checked = sum(r.get("event_values_checked", 0) for r in events)
    return dict(epoch=epoch, images=images, wire="address events" if checked else "spike counts", links=table,
                busiest=busiest, totals=totals,
                exchange=[dict(chip=int(r["src"]), cross_node=bool(r.get("cross_node", False)), **_sums([r], images))
                          for r in exchange],
                chips=chip_rows, event_values_checked=checked,
                event_values_differ=sum(r.get("event_values_differ", 0) for r in events))


def _total_line(name: str, t: dict) -> str:
    """A totals row in the link table's columns (src, dst, direction and crosses as one name)."""
    return (f"{name:>27} {t['spikes_per_sample']:>14.4g} {t['wire_bits_per_sample']:>17.4g} {t['bytes']:>11.4g} "
            f"{t['messages']:>9.4g}")


def format_traffic(links: list[dict], chips: list[dict], images: dict[int, int], epoch: int | None = None) -> str:
    """One epoch's traffic as text at most 110 characters wide: one row per directed link, the busiest
    link, totals forward and backward and within and across nodes, the replica exchange, the chip
    table (per sample), and totals of the whole run per sample when it has several epochs.
    ``images``: each epoch's training images (the metrics table's ``images``)."""
    if epoch is None:
        epoch = max((r["epoch"] for r in chips), default=0)
    if epoch not in images:
        raise SpikeGradError(f"traffic: epoch {epoch} has no image count in the metrics table")
    t = traffic_json(links, chips, epoch, images[epoch])
    lines = [f"chip-to-chip traffic, epoch {epoch}, per training sample ({t['images']:,} images), one row per "
             f"directed link:",
             f"spikes/sample: {t['wire']}, a spike router's packets; wire bits/sample: the emulator's messages;",
             "bytes, messages: the epoch's, as sent",
             f"{'src':>4} {'dst':>4} {'direction':>9} {'crosses':>7} {'spikes/sample':>14} {'wire bits/sample':>17} "
             f"{'bytes':>11} {'messages':>9}"]
    for r in t["links"]:
        lines.append(f"{r['src']:>4} {r['dst']:>4} {r['direction']:>9} {'nodes' if r['cross_node'] else '-':>7} "
                     f"{r['spikes_per_sample']:>14.4g} {r['wire_bits_per_sample']:>17.4g} {r['bytes']:>11.4g} "
                     f"{r['messages']:>9.4g}")
    b = t["busiest"]
    if b["by_wire_bits"] is not None:
        w, s = b["by_wire_bits"], b["by_spikes"]
        lines.append(f"busiest link: chip {w['src']} -> {w['dst']} ({w['direction']}), "
                     f"{w['wire_bits_per_sample']:.4g} wire bits/sample, {w['spikes_per_sample']:.4g} spikes/sample")
        if (s["src"], s["dst"]) != (w["src"], w["dst"]):
            lines.append(f"busiest by spikes: chip {s['src']} -> {s['dst']} ({s['direction']}), "
                         f"{s['spikes_per_sample']:.4g} spikes/sample, {s['wire_bits_per_sample']:.4g} wire "
                         f"bits/sample")
    lines.append("totals:")
    for name in ("forward", "backward", "within_node", "across_nodes"):
        lines.append(_total_line(name.replace("_", " "), t["totals"][name]))
    for r in t["exchange"]:
        lines.append(f"replica exchange, chip {r['chip']}: {r['wire_bits_per_sample']:.4g} wire bits/sample of "
                     f"increments ({r['bytes']:.4g} bytes in {r['messages']:.4g} messages)"
                     + (" (across nodes)" if r["cross_node"] else ""))
    epochs = sorted({r["epoch"] for r in links} & set(images))
    if len(epochs) > 1:
        every = [traffic_json(links, chips, e, images[e])["totals"] for e in epochs]
        n = sum(images[e] for e in epochs)
        for name in ("forward", "backward"):  # per sample over the whole run: each epoch weighed by its images
            whole = {k: sum(x[name][k] * (images[e] if k.endswith("per_sample") else 1) for x, e in zip(every, epochs))
                     / (n if k.endswith("per_sample") else 1) for k in every[0][name]}
            lines.append(_total_line(f"{name}, epochs {epochs[0]}-{epochs[-1]}", whole))
    lines.append("")
    lines.append("per chip and training sample:")
    lines.append(f"{'chip':>4} {'layers':>7} {'spikes':>9} {'err emit':>9} {'err deliv':>9} {'input MAC':>9} "
                 f"{'ACC fwd':>9} {'ACC bwd':>9} {'ACC upd':>9} {'ANN MACs':>9}")
    for r in t["chips"]:
        lines.append(f"{r['chip']:>4} {r['layers']:>7} " + " ".join(
            f"{r[f'{k}_per_sample']:>9.4g}" for k in ("spikes", "error_spikes", "error_spikes_delivered", "input_macs",
                                                       "acc_forward", "acc_backward", "acc_update", "macs")))
    lines.append("err emit: error spikes of the chip's U compartments (Eq. (6)), what its incoming backward link "
                 "carries;")
    lines.append("err deliv: those passing S′ (δ, Eq. (7)); input MAC: layer 0's float input multiplied in")
    lines.append("per chip, the epoch's seconds:")
    lines.append(f"{'chip':>4} {'node':>8} {'busy s':>8} {'CPU s':>8} {'encode s':>8} {'decode s':>8}")
    for r in t["chips"]:
        lines.append(f"{r['chip']:>4} {r['node'] or '-':>8} {r['busy_seconds']:>8.3f} {r['cpu_seconds']:>8.3f} "
                     f"{r['encode_seconds']:>8.3f} {r['decode_seconds']:>8.3f}")
    if t["event_values_checked"]:
        checked, differ = t["event_values_checked"], t["event_values_differ"]
        lines.append(f"event wire: the spiking network on the chips equals the ANN on {checked - differ:.6g} of "
                     f"{checked:.6g} values of S, E and Z ({'all' if not differ else f'{differ:.6g} differ'})")
    return "\n".join(lines)
