"""A run's training as a neuromorphic system would carry it: routed traffic (multicast, mesh, link
classes), energy per sample per epoch under a profile (SNN against its equivalent ANN, data movement
included), and a forecast of on-chip learning's speed (``spikegrad traffic --system``,
``spikegrad forecast``). The models are :mod:`cluster.routing` and :mod:`cluster.energy`; this module
reads the run's tables, lays its network on the chips asked for, and prints every assumption."""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from pathlib import Path
from typing import Any

from cluster.energy import SampleCounts, ann_terms, forecast, snn_terms, total
from cluster.errors import SpikeGradError
from cluster.hardware import PROFILES as HARDWARE
from cluster.hardware import SOURCES, Energy, Profile, energy_from_dict
from cluster.mapping import ChipSpec, Plan, layer_units, map_network
from cluster.routing import flows, parse_placement, place, route

HEADER_BITS = 8
PACKETS = ("spinnaker", "aer")
MAX_ENERGY_FILE = 1 << 20


def packet_bits(fmt: str, neurons: int) -> int:
    """Bits of one spike packet naming one of ``neurons`` source neurons: ``spinnaker`` 40 (8-bit header,
    32-bit key, sign folded in); ``aer`` 8-bit header, ceil(log2 N) address bits, a sign bit."""
    if fmt == "spinnaker":
        return 40
    if fmt == "aer":
        return HEADER_BITS + max(1, math.ceil(math.log2(max(2, neurons)))) + 1
    raise SpikeGradError(f"packet format expected spinnaker or aer, got {fmt!r}")


def load_energy(name_or_file: str, base: Profile) -> tuple[str, Energy]:
    """An energy profile: a profile name of :mod:`cluster.hardware`, or a JSON file of figures
    (:func:`cluster.hardware.energy_from_dict`), missing figures taken from ``base``."""
    if name_or_file in HARDWARE:
        return name_or_file, HARDWARE[name_or_file].energy
    path = Path(name_or_file)
    if not path.is_file():
        raise SpikeGradError(f"--energy expected a profile ({', '.join(HARDWARE)}) or a JSON file, got "
                             f"{name_or_file!r} (no such file)")
    if path.stat().st_size > MAX_ENERGY_FILE:
        raise SpikeGradError(f"--energy file {path} is over {MAX_ENERGY_FILE:,} bytes: not an energy profile")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SpikeGradError(f"--energy file {path} is not JSON: {exc}") from None
    return str(path), energy_from_dict(data, base.energy, f"--energy {path}")


def _mapped(topo: Any, spec: ChipSpec) -> tuple[Plan, dict[int, int]]:
    """A mapping's plan and the cores each chip uses (none counted on a chip without uniform cores)."""
    m = map_network(topo, spec)
    counted = not spec.capacity.pooled and not spec.capacity.layer_per_core_only
    return Plan.of(m), ({c.index: sum(s.cores for s in c.slices) for c in m.chips} if counted else {})


def run_plan(cfg: Any, spec: ChipSpec | None) -> tuple[Plan, ChipSpec | None, str, dict[int, int]]:
    """The chips to lay the run on, as (plan, chip, where, cores used per chip): ``spec`` mapped
    afresh, else the run's own chips (its capacity's mapping or its ``--chips`` groups)."""
    if spec is not None:
        if not spec.capacity.learns:
            raise SpikeGradError(f"{spec.name} cannot learn on chip [{spec.capacity.sources.get('learns', 'assumed')}]"
                                 f": a training run's traffic, energy and time have no meaning there; `spikegrad map "
                                 f"--chip {spec.name} --compartments 1` maps the trained network for inference")
        plan, cores = _mapped(cfg.topo, spec)
        return plan, spec, f"the network mapped onto {spec.name} chips", cores
    if cfg.engine != "chips":  # a one-process run: Loihi's chips, or Loihi 2's where Loihi cannot hold it
        from cluster.mapping import PROFILES  # noqa: PLC0415  (beside its one use)

        for name, why in (("loihi", "no chips named, --chip to choose"), ("loihi2", "Loihi cannot hold it")):
            try:
                plan, cores = _mapped(cfg.topo, PROFILES[name])
            except SpikeGradError:
                if name == "loihi2":
                    raise
                continue
            return plan, PROFILES[name], f"the network mapped onto {name} chips (a one-process run: {why})", cores
    own = cfg.chip_spec()
    if own is not None:
        plan, cores = _mapped(cfg.topo, own)
        return plan, own, f"the run's own {own.name} chips", cores
    groups, _ = cfg.chip_layout()
    layout = tuple(tuple((l, 0, layer_units(cfg.topo, l)[0]) for l in range(a, b + 1)) for a, b in groups)
    return Plan(cfg.topo, layout), None, "the run's own --chips groups", {}


def _per_sample(rows: list[dict], images: int, topo: Any) -> dict[str, list[float]]:
    rows = sorted(rows, key=lambda r: int(r["layer"]))  # RunDir.read_table gives today's counters
    for l, r in enumerate(rows):
        if int(r["layer"]) != l or r["kind"] != topo.layers[l].kind:
            raise SpikeGradError(f"the layers table's row {l} is layer {r['layer']!r} of kind {r['kind']!r}; the "
                                 f"run's topology has layer {l} of kind {topo.layers[l].kind!r}")
    keys = ("spikes", "error_spikes", "error_spikes_delivered", "input_macs", "acc_forward", "acc_backward",
            "acc_update", "macs")
    out = {k: [float(r.get(k) or 0.0) / images for r in rows] for k in keys}
    # a run of format 0 did not count the emitted error spikes (NaN): the delivered ones, after the S′
    # gate, stand in for them, a lower bound (launch.run.formats)
    out["error_spikes"] = [z if math.isfinite(z) else e for z, e in zip(out["error_spikes"],
                                                                        out["error_spikes_delivered"])]
    out["lower_bound"] = [float(any(not math.isfinite(float(r.get("error_spikes") or 0.0)) for r in rows))]
    return out


def system_model(cfg: Any, metrics: list[dict], layers: list[dict], spec: ChipSpec | None, energy: str | None,
                 fmt: str, multicast: bool | None, placement: str, board: tuple[int, int] | None,
                 boards_per_node: int, rate: float, ann_bits: int, steps: int | None,
                 measured: list[dict] | None = None) -> dict[str, Any]:
    """Every epoch's routed traffic and energy per sample, and the hardware forecast of the last.
    ``measured``: the run's traffic.parquet rows; where the chips are the run's own, each epoch's
    modelled chip-to-chip spikes are compared with them link by link (``check``)."""
    plan, chip, where, cores = run_plan(cfg, spec)
    own = spec is None
    profile = chip.profile if chip is not None and chip.profile is not None else HARDWARE["loihi"]
    cap = chip.capacity if chip is not None else profile.capacity
    e_name, e = load_energy(energy or profile.name, profile)
    mc = cap.multicast if multicast is None else multicast
    bd = board or cap.board
    topo = cfg.topo
    cpn = chip.compartments_per_neuron if chip is not None else 2
    neurons = sum(topo.neurons(l) for l in range(len(topo.layers)))
    n_per = [layer_units(topo, l)[1] for l in range(len(topo.layers))]
    epochs = []
    notes: set[str] = set()
    pos = None
    for m in sorted(metrics, key=lambda r: r["epoch"]):
        images = m.get("images")
        rows = [r for r in layers if r["epoch"] == m["epoch"]]
        if not (isinstance(images, int) and images > 0) or len(rows) != len(topo.layers):
            raise SpikeGradError(f"epoch {m['epoch']}: expected a positive image count and {len(topo.layers)} layer "
                                 f"rows, got {images!r} and {len(rows)}")
        c = _per_sample(rows, images, topo)
        fl = flows(plan, c["spikes"], c["error_spikes"], c["error_spikes_delivered"])
        if c["lower_bound"][0]:
            notes.add("this run (format 0) did not count the error spikes its U compartments emitted: the "
                      "delivered ones stand in for them, so the backward traffic is a lower bound")
        check = None
        if own and measured:  # the chips measured every link: the model's spread, checked, then scaled to it
            check, scale = _check(fl, measured, m["epoch"], images)
            fl = [dataclasses.replace(f, spikes=f.spikes * scale.get((f.src, f.dst), 1.0)) if f.src != f.dst else f
                  for f in fl]
        if pos is None:  # placed once, on the first epoch's traffic, and kept
            pos = (parse_placement(placement, plan.n_chips) if placement not in ("snake", "auto")
                   else place(plan.n_chips, fl, bd, boards_per_node, placement))
        routed, load, per_class = route(fl, pos, mc)
        _, _, uni_class = route(fl, pos, False)
        values = {k: 0.0 for k in per_class}
        for r in routed:  # the ANN moves every value of the flow, densely, on the same route
            values[r.cls] += r.flow.neurons * max(1, r.hops if r.cls != "on-chip" else 1)
        links: dict[tuple[int, int, str], dict] = {}
        for r in routed:
            f = r.flow
            if f.src == f.dst:
                continue
            pb = packet_bits(fmt, (f.hi - f.lo) * n_per[f.layer])  # AER: the address of the slice's neurons
            row = links.setdefault((f.src, f.dst, f.direction), dict(src=f.src, dst=f.dst, direction=f.direction,
                                                                      spikes=0.0, bits=0.0, ann_values=0.0,
                                                                      hops=r.hops, cls=r.cls))
            row["spikes"] += f.spikes
            row["bits"] += f.spikes * pb
            row["ann_values"] += f.neurons
        for row in links.values():
            row["mbps_at_rate"] = row["bits"] * rate / 1e6
            row["ann_mbps_at_rate"] = row["ann_values"] * ann_bits * rate / 1e6
        mean_pb = (sum(r["bits"] for r in links.values()) / max(1e-300, sum(r["spikes"] for r in links.values()))
                   if links else packet_bits(fmt, 2))
        counts = SampleCounts(
            synops=sum(c["input_macs"]) + sum(c["acc_forward"]) + sum(c["acc_backward"]),
            updates=sum(c["acc_update"]), compartments=neurons * cpn,
            spikes_emitted=sum(c["spikes"]) + sum(x for x in c["error_spikes"] if math.isfinite(x)),
            macs_forward=sum(c["macs"]),
            macs_backward=sum(x for l, x in enumerate(c["macs"]) if l > 0),
            macs_update=sum(x for l, x in enumerate(c["macs"]) if topo.layers[l].trainable),
            packets=per_class, values=values)
        used_cores = max(1, cap.cores or 1)
        snn, ann = snn_terms(counts, e, int(round(mean_pb)), used_cores), ann_terms(counts, e, ann_bits)
        link_rows = sorted(links.values(), key=lambda r: (r["src"], r["dst"], r["direction"]))
        busiest = max(link_rows, key=lambda r: r["bits"], default=None)
        mesh_busiest = max(load.items(), key=lambda kv: kv[1], default=None)
        epochs.append(dict(
            epoch=m["epoch"], images=images, links=link_rows, busiest=busiest, check=check,
            mesh_busiest=None if mesh_busiest is None else dict(link=[list(mesh_busiest[0][0]),
                                                                      list(mesh_busiest[0][1])],
                                                                packets=mesh_busiest[1]),
            totals={d: dict(spikes=sum(r["spikes"] for r in link_rows if r["direction"] == d),
                            bits=sum(r["bits"] for r in link_rows if r["direction"] == d),
                            ann_bits=sum(r["ann_values"] * ann_bits for r in link_rows if r["direction"] == d))
                    for d in ("forward", "backward")},
            packet_hops=per_class, unicast_packet_hops=uni_class,
            snn=[dict(term=t.name, count=t.count * t.factor, pj_each=t.each.value, pj=t.pj, source=t.each.source)
                 for t in snn],
            ann=[dict(term=t.name, count=t.count * t.factor, pj_each=t.each.value, pj=t.pj, source=t.each.source)
                 for t in ann],
            snn_pj=total(snn), ann_pj=total(ann), _mesh_bits=max(load.values(), default=0.0) * mean_pb,
            _node_bits=_node_bits(routed, pos, fmt, n_per),
            layer_ops=[(c["input_macs"][l] + c["acc_forward"][l] + c["acc_backward"][l], c["acc_update"][l])
                       for l in range(len(topo.layers))]))
    last = epochs[-1]
    fc = _forecast(plan, cores, profile, last, n_per, steps)
    sources = sorted({t["source"] for ep in epochs for t in ep["snn"] + ep["ann"]})
    for ep in epochs:
        del ep["layer_ops"], ep["_mesh_bits"], ep["_node_bits"]
    return dict(where=where, chip=chip.name if chip else None, energy=e_name, multicast=mc, board=list(bd),
                boards_per_node=boards_per_node, placement=placement, positions=[list(p) for p in pos or []],
                packet=fmt, rate=rate, ann_bits=ann_bits, epochs=epochs, forecast=fc, notes=sorted(notes),
                sources={k: SOURCES.get(k, k) for k in sources})


def _check(fl: list, measured: list[dict], epoch: int, images: int) -> tuple[dict[str, Any] | None, dict]:
    """The model's spikes per chip-to-chip link (a slice's share of its layer's spikes is its share of the
    neurons) against what the chips measured on the same links: the ratios, and the factor per link
    that makes the model's flows carry exactly the measured spikes."""
    got = {(int(r["src"]), int(r["dst"])): float(r["spikes"]) / images for r in measured
           if r["epoch"] == epoch and r.get("kind", "spikes") == "spikes"}
    model: dict[tuple[int, int], float] = {}
    for f in fl:
        if f.src != f.dst:
            model[(f.src, f.dst)] = model.get((f.src, f.dst), 0.0) + f.spikes
    if any(k not in model for k in got):  # the run's chips are not today's mapping of its configuration
        return dict(links=0, mismatch=sorted(list(k) for k in got if k not in model)), {}
    ratios = {k: model[k] / v for k, v in got.items() if v > 0 and model.get(k, 0.0) > 0}
    scale = {k: got.get(k, 0.0) / v for k, v in model.items() if v > 0 and k in got}
    if not ratios:
        return None, scale
    worst = max(ratios, key=lambda k: abs(math.log(ratios[k])))
    return dict(links=len(ratios), total_ratio=sum(model.get(k, 0.0) for k in got) / max(1e-300, sum(got.values())),
                min_ratio=min(ratios.values()), max_ratio=max(ratios.values()), worst=list(worst),
                unmodelled=sorted(list(k) for k in got if k not in model)), scale


def _node_bits(routed: list, pos: list, fmt: str, n_per: list[int]) -> dict[int, float]:
    """Per node, the bits per sample its network interface carries: the larger of what leaves it and
    what enters it (full duplex), over the flows that cross nodes."""
    out: dict[int, float] = {}
    into: dict[int, float] = {}
    for r in routed:
        if r.cls != "node-to-node":
            continue
        f = r.flow
        bits = f.spikes * packet_bits(fmt, (f.hi - f.lo) * n_per[f.layer])
        out[pos[f.src][0]] = out.get(pos[f.src][0], 0.0) + bits
        into[pos[f.dst][0]] = into.get(pos[f.dst][0], 0.0) + bits
    return {n: max(out.get(n, 0.0), into.get(n, 0.0)) for n in set(out) | set(into)}


def _forecast(plan: Plan, cores: dict[int, int], profile: Profile, ep: dict, n_per: list[int],
              steps: int | None) -> dict[str, Any]:
    """The hardware forecast from one epoch's counts: each chip's share of a layer's operations is its
    share of the layer's neurons, its cores those its mapping uses (cluster.energy.forecast)."""
    from cluster.energy import ChipWork  # noqa: PLC0415  (kept beside its only use)

    topo = plan.topo
    rows = ep["links"]
    layer_ops = ep["layer_ops"]
    work = []
    for c, slices in enumerate(plan.layout):
        syn = upd = 0.0
        for l, lo, hi in slices:
            share = (hi - lo) * n_per[l] / topo.neurons(l)
            syn += share * layer_ops[l][0]
            upd += share * (layer_ops[l][1] + 2 * (hi - lo) * n_per[l])
        packets = sum(r["spikes"] for r in rows if c in (r["src"], r["dst"]))
        work.append(ChipWork(c, cores.get(c, 1), syn, upd, packets))
    link_bits = {"busiest mesh link": ep["_mesh_bits"]}  # a router-to-router link's packets × packet bits
    node_bits = ep["_node_bits"]
    L = len(topo.layers) - 1
    T = steps if steps is not None else 2 * (L + 1)
    out: dict[str, Any] = {}
    for use in ("value", "low", "high"):
        f = forecast(work, link_bits, node_bits, T, profile.rates, use)
        out[use] = dict(samples_per_second=f["samples_per_second"], latency_s=f["latency_s"], binding=f["binding"],
                        bounds=f["bounds"])
    r = profile.rates
    out["assumptions"] = [
        f"profile {profile.name}: synaptic events per core per second {r.synops_per_core.cite()}",
        f"compartment updates per core per second {r.updates_per_core.cite()}",
        f"router packets per second {r.packets_per_router.cite()}",
        f"chip link {r.chip_link_bps.cite()} bit/s; node link {r.node_link_bps.cite()} bit/s",
        f"{T} time steps per sample (default 2 per layer: one forward and one backward wave, a lower bound; "
        f"--steps), each ended by a barrier of {r.step_barrier_s.cite()} s",
        "chips work on different samples at once (a pipeline); a chip's cores share its work evenly; a chip's share "
        "of a layer's operations is its share of the layer's neurons; weight updates cost one synaptic event each",
        "checked against: nothing measured on neuromorphic hardware (none is available here); the low-high range "
        "comes from the sources' ranges only",
    ]
    out["steps"] = T
    return out


def format_system(s: dict[str, Any]) -> str:
    routers = "multicast" if s["multicast"] else "unicast (no multicast)"
    lines = [f"as a neuromorphic system: {s['where']}; routers {routers}; chips on {s['board'][0]}x"
             f"{s['board'][1]} boards, {s['boards_per_node']} board(s) per node, placement {s['placement']}; "
             f"packets '{s['packet']}'; per training sample, a slice's spikes its share of its layer's",
             f"energy figures: {s['energy']}"]
    last = s["epochs"][-1]
    lines.append(f"links, epoch {last['epoch']} (spikes and bits per sample; Mbit/s at {s['rate']:g} samples/s; the "
                 f"ANN beside it at {s['ann_bits']} bits per value):")
    lines.append(f"{'link':>9} {'direction':>9} {'class':>14} {'hops':>4} {'spikes':>10} {'bits':>11} "
                 f"{'Mbit/s':>9} {'ANN Mbit/s':>10}")
    for r in last["links"]:
        lines.append(f"{r['src']:>4}->{r['dst']:<4} {r['direction']:>9} {r['cls']:>14} {r['hops']:>4} "
                     f"{r['spikes']:>10.4g} {r['bits']:>11.4g} {r['mbps_at_rate']:>9.4g} "
                     f"{r['ann_mbps_at_rate']:>10.4g}")
    b = last["busiest"]
    if b:
        lines.append(f"busiest link: {b['src']}->{b['dst']} ({b['direction']}), {b['bits']:.4g} bits per sample, "
                     f"{b['mbps_at_rate']:.4g} Mbit/s at {s['rate']:g} samples/s")
    for d, t in last["totals"].items():
        lines.append(f"{d}: {t['spikes']:.4g} spikes, {t['bits']:.4g} bits per sample between chips; the ANN "
                     f"{t['ann_bits']:.4g} bits")
    ck = last.get("check")
    if ck and ck.get("mismatch"):
        shown = ", ".join(f"{a}->{b}" for a, b in ck["mismatch"][:4])
        lines.append(f"the chips' measured links ({shown}, ...) are not "
                     f"links of today's mapping of the run's configuration (a run mapped by an earlier version?): "
                     f"the flows above are the model's, not scaled to the measurement")
    elif ck:
        lines.append(f"checked against the chips' measured links, epoch {last['epoch']}: modelled / measured spikes "
                     f"{ck['total_ratio']:.3f} in all, {ck['min_ratio']:.3f}-{ck['max_ratio']:.3f} per link over "
                     f"{ck['links']} links (worst {ck['worst'][0]}->{ck['worst'][1]}; a layer's spikes are not spread "
                     f"evenly over its neurons); the flows above are scaled to the measured links")
    ph, uh = last["packet_hops"], last["unicast_packet_hops"]
    lines.append("packet-hops per sample: " + ", ".join(f"{k} {v:.4g}" for k, v in ph.items())
                 + (" (unicast would be: " + ", ".join(f"{k} {v:.4g}" for k, v in uh.items() if k != "on-chip") + ")"
                    if s["multicast"] else ""))
    lines.append("")
    lines.append("energy per sample (nJ) by epoch, SNN against its equivalent ANN (moving its data too):")
    lines.append(f"{'epoch':>5} {'SNN nJ':>10} {'range':>19} {'ANN nJ':>10} {'SNN/ANN':>8}")
    for ep in s["epochs"]:
        sv, slo, shi = ep["snn_pj"]
        av = ep["ann_pj"][0]
        lines.append(f"{ep['epoch']:>5} {sv / 1e3:>10.4g} {f'{slo / 1e3:.4g}-{shi / 1e3:.4g}':>19} {av / 1e3:>10.4g} "
                     f"{sv / av if av else float('nan'):>8.3g}")
    lines.append(f"terms, epoch {last['epoch']}:")
    for side in ("snn", "ann"):
        for t in last[side]:
            lines.append(f"  {side.upper()} {t['term']:<34} {t['count']:>12.4g} x {t['pj_each']:>8.4g} pJ = "
                         f"{t['pj'] / 1e3:>10.4g} nJ [{t['source']}]")
    lines.append("energy checked against: no energy measured here (no neuromorphic chip); each figure is its "
                 "source's own measurement or estimate, the range the spread between sources; the ANN reads one "
                 "32-bit weight per MAC (no reuse across a batch) and the SNN's compartments update once per sample "
                 "and once per spike (event-driven; cluster/energy.py)")
    lines += [f"note: {n}" for n in s["notes"]]
    lines.append("sources: " + "; ".join(f"[{k}] {v}" for k, v in s["sources"].items()))
    return "\n".join(w for line in lines for w in (textwrap.wrap(line, 110, subsequent_indent="  ")
                                                    if len(line) > 110 else [line]))


def format_forecast(s: dict[str, Any]) -> str:
    f = s["forecast"]
    v, lo, hi = f["value"], f["low"], f["high"]
    lines = [f"forecast of on-chip learning on {s['where']} (a model of the hardware, not of this emulator; "
             f"`spikegrad plan` forecasts the emulator):",
             f"samples per second {v['samples_per_second']:.4g} (range {lo['samples_per_second']:.4g}-"
             f"{hi['samples_per_second']:.4g}), bound by {v['binding']}; latency per sample "
             f"{v['latency_s'] * 1e6:.4g} us (range {hi['latency_s'] * 1e6:.4g}-{lo['latency_s'] * 1e6:.4g})",
             "bounds (s per sample): " + ", ".join(f"{k} {x:.3g}" for k, x in v["bounds"].items()),
             "assumptions:"]
    lines += [f"  {a}" for a in f["assumptions"]]
    return "\n".join(w for line in lines for w in (textwrap.wrap(line, 110, subsequent_indent="    ")
                                                    if len(line) > 110 else [line]))
