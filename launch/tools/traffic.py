"""Chip counters as tables: Parquet rows and the text the CLI prints (no Ray needed)."""

from __future__ import annotations

from typing import Any

from cluster.synops import COUNTERS


def traffic_rows(epoch: int, reports: list[dict]) -> tuple[list[dict], list[dict]]:
    """Parquet rows: (links: epoch, src, dst, messages, bytes, spikes), (chips: epoch, chip, ops, timing)."""
    links, chips = [], []
    for rep in reports:
        for dst, link in rep["traffic"].items():
            links.append(dict(epoch=epoch, src=rep["chip"], dst=int(dst), **link))
        ops: dict[str, Any] = {k: sum(row[k] for row in rep["synops"].values()) for k in COUNTERS}
        checks = rep.get("event_checks", {"values": 0, "differ": 0})
        chips.append(dict(epoch=epoch, chip=rep["chip"], layers="-".join(map(str, rep["layers"])),
                          **ops, **{f"{k}_seconds": v for k, v in rep["timing"].items()},
                          event_values_checked=checks["values"], event_values_differ=checks["differ"]))
    return links, chips


def format_traffic(links: list[dict], chips: list[dict], epoch: int | None = None) -> str:
    """The chip-to-chip traffic matrix (spikes and bytes) and the per-chip operation table, as text."""
    if epoch is None:
        epoch = max((r["epoch"] for r in chips), default=0)
    links = [r for r in links if r["epoch"] == epoch]
    chips = [r for r in chips if r["epoch"] == epoch]
    ids = sorted({r["chip"] for r in chips})
    cell = {(r["src"], r["dst"]): r for r in links}
    events = sum(r.get("event_values_checked", 0) for r in chips)
    what = "address events" if events else "spikes (counts)"
    lines = [f"chip-to-chip traffic, epoch {epoch} (row: from, column: to; {what} / bytes)"]
    lines.append("from\\to " + "".join(f"{c:>22d}" for c in ids))
    for s in ids:
        vals = []
        for d in ids:
            r = cell.get((s, d))
            vals.append(f"{r['spikes']:>11.3g} / {r['bytes']:>8.3g}" if r else f"{'-':>22s}")
        lines.append(f"{s:>7d} " + "".join(f"{v:>22s}" for v in vals))
    lines.append("")
    lines.append(f"{'chip':>4} {'layers':>7} {'spikes':>11} {'err spikes':>11} {'ACC fwd':>11} {'ACC bwd':>11} "
                 f"{'ACC upd':>11} {'MACs':>11} {'busy s':>7} {'enc s':>6} {'dec s':>6}")
    for r in chips:
        lines.append(f"{r['chip']:>4} {r['layers']:>7} {r['spikes']:>11.3g} {r['error_spikes']:>11.3g} "
                     f"{r['acc_forward']:>11.3g} {r['acc_backward']:>11.3g} {r['acc_update']:>11.3g} "
                     f"{r['macs']:>11.3g} {r.get('busy_seconds', 0):>7.2f} {r.get('encode_seconds', 0):>6.2f} "
                     f"{r.get('decode_seconds', 0):>6.2f}")
    if events:
        differ = sum(r.get("event_values_differ", 0) for r in chips)
        lines.append(f"event wire: the spiking network on the chips equals the ANN on {events - differ:.6g} of "
                     f"{events:.6g} values of S, E and Z ({'all' if not differ else f'{differ:.6g} differ'})")
    return "\n".join(lines)
