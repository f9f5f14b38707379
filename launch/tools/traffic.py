"""Chip counters as tables: Parquet rows and the text the CLI prints (no Ray needed)."""

from __future__ import annotations

from typing import Any

from cluster.synops import COUNTERS

from ..run.engine import upgrade_row


def traffic_rows(epoch: int, reports: list[dict]) -> tuple[list[dict], list[dict]]:
    """Parquet rows: (links: epoch, src, dst, kind, messages, bytes, spikes, cross_node), (chips: epoch,
    chip, layers, node, ops, timing). ``kind`` "spikes": spike messages between chips; "increments":
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
        ops: dict[str, Any] = {k: sum(upgrade_row(int(l), row)[k] for l, row in rep["synops"].items())
                               for k in COUNTERS}
        checks = rep.get("event_checks", {"values": 0, "differ": 0})
        chips.append(dict(epoch=epoch, chip=rep["chip"], layers="-".join(map(str, rep["layers"])),
                          node=",".join(n[:8] for n in nodes[rep["chip"]]), micro_batch=rep.get("micro_batch", 0),
                          **ops, **{f"{k}_seconds": v for k, v in rep["timing"].items()},
                          event_values_checked=checks["values"], event_values_differ=checks["differ"]))
    return links, chips


def _totals(links: list[dict]) -> str:
    """Spikes, bytes and messages within nodes and across them (replica exchanges included)."""
    parts = []
    for where, cross in (("within a node", False), ("across nodes", True)):
        rows = [r for r in links if bool(r.get("cross_node", False)) == cross]
        parts.append(f"{where} {sum(r['spikes'] for r in rows):.4g} spikes, {sum(r['bytes'] for r in rows):.4g} "
                     f"bytes, {sum(r['messages'] for r in rows):.4g} messages")
    return "; ".join(parts)


def format_traffic(links: list[dict], chips: list[dict], epoch: int | None = None) -> str:
    """The chip-to-chip traffic matrix (spikes, bytes, messages per link), totals within and across
    nodes for the epoch and the whole run, and the per-chip operation table, as text."""
    every_epoch = links
    if epoch is None:
        epoch = max((r["epoch"] for r in chips), default=0)
    links = [r for r in links if r["epoch"] == epoch]
    chips = [r for r in chips if r["epoch"] == epoch]
    ids = sorted({r["chip"] for r in chips})
    cell = {(r["src"], r["dst"]): r for r in links if r.get("kind", "spikes") == "spikes"}
    exchange = [r for r in links if r.get("kind") == "increments"]
    events = sum(r.get("event_values_checked", 0) for r in chips)
    what = "address events" if events else "spikes (counts)"
    lines = [f"chip-to-chip traffic, epoch {epoch} (row: from, column: to; {what} / bytes / messages; "
             f"* crosses nodes)"]
    lines.append("from\\to " + "".join(f"{c:>31d}" for c in ids))
    for s in ids:
        vals = []
        for d in ids:
            r = cell.get((s, d))
            vals.append(f"{r['spikes']:>10.3g} / {r['bytes']:>8.3g} / {r['messages']:>6.3g}"
                        + ("*" if r.get("cross_node") else " ") if r else f"{'-':>31s}")
        lines.append(f"{s:>7d} " + "".join(f"{v:>31s}" for v in vals))
    for r in exchange:
        lines.append(f"replica exchange, chip {r['src']}: {r['bytes']:.4g} bytes of increments in {r['messages']:.4g} "
                     f"messages" + (" (across nodes)" if r.get("cross_node") else ""))
    lines.append(f"epoch {epoch}: {_totals(links)}")
    epochs = sorted({r["epoch"] for r in every_epoch})
    if len(epochs) > 1:
        lines.append(f"epochs {epochs[0]}-{epochs[-1]}: {_totals(every_epoch)}")
    lines.append("")
    lines.append(f"{'chip':>4} {'node':>8} {'layers':>7} {'spikes':>10} {'err emit':>10} {'err deliv':>10} "
                 f"{'input MAC':>10} {'ACC fwd':>10} {'ACC bwd':>10} {'ACC upd':>10} {'ANN MACs':>10} "
                 f"{'busy s':>7} {'enc s':>6} {'dec s':>6}")
    for r in chips:
        r = upgrade_row(-1, r)  # chips tables written before the counters got one meaning each
        lines.append(f"{r['chip']:>4} {r.get('node', '') or '-':>8} {r['layers']:>7} {r['spikes']:>10.3g} "
                     f"{r['error_spikes']:>10.3g} {r['error_spikes_delivered']:>10.3g} {r['input_macs']:>10.3g} "
                     f"{r['acc_forward']:>10.3g} {r['acc_backward']:>10.3g} {r['acc_update']:>10.3g} "
                     f"{r['macs']:>10.3g} {r.get('busy_seconds', 0):>7.2f} "
                     f"{r.get('encode_seconds', 0):>6.2f} {r.get('decode_seconds', 0):>6.2f}")
    lines.append("err emit: error spikes of the chip's U compartments (Eq. (6)), what its incoming backward link "
                 "carries; err deliv: those passing S′ (δ, Eq. (7)); input MAC: layer 0's float input multiplied in")
    if events:
        differ = sum(r.get("event_values_differ", 0) for r in chips)
        lines.append(f"event wire: the spiking network on the chips equals the ANN on {events - differ:.6g} of "
                     f"{events:.6g} values of S, E and Z ({'all' if not differ else f'{differ:.6g} differ'})")
    return "\n".join(lines)
