"""``spikegrad map``: a network mapped onto chips with a capacity (:mod:`cluster.mapping`), as a table."""

from __future__ import annotations

from typing import Any

from cluster.mapping import Mapping, Plan, Slice, layer_units


def _slice_text(mapping: Mapping, s: Slice) -> str:
    layer = mapping.topology.layers[s.layer]
    units, _, _ = layer_units(mapping.topology, s.layer)
    what = "neurons" if layer.kind == "dense" else "channels"
    part = "" if s.units == units else f" {what[:-1]} {s.lo}" if s.units == 1 else f" {what} {s.lo}-{s.hi - 1}"
    return f"l{s.layer} {layer.token()}{part}"


def format_mapping(mapping: Mapping) -> str:
    """The mapping table: chip, layer slices, neurons, synapses, fill, weight copies; then totals and links."""
    spec = mapping.spec
    plan = Plan.of(mapping)
    copies = [plan.copy_synapses(c.index) for c in mapping.chips]
    lines = [f"{mapping.topology.text} on {spec.name} chips: {spec.neurons:,} neurons, {spec.synapses:,} synapses "
             f"each ({spec.source})",
             f"{'chip':>4}  {'neurons':>10}  {'fill':>6}  {'synapses':>12}  {'fill':>6}  {'copies':>12}  layer slices"]
    for c, cp in zip(mapping.chips, copies):
        lines.append(f"{c.index:>4}  {c.neurons:>10,}  {100 * c.neurons / spec.neurons:>5.1f}%  {c.synapses:>12,}  "
                     f"{100 * c.synapses / spec.synapses:>5.1f}%  {cp:>12,}  "
                     + ", ".join(_slice_text(mapping, s) for s in c.slices))
    total_n = sum(c.neurons for c in mapping.chips)
    total_s = sum(c.synapses for c in mapping.chips)
    split = mapping.split_layers
    links = mapping.links()
    lines.append(f"{len(mapping.chips)} chip(s), {total_n:,} neurons, {total_s:,} synapses; "
                 + (f"layers split across chips: {', '.join(str(l) for l in split)}; " if split else "no layer split; ")
                 + f"{len(links)} directed chip-to-chip link(s) carry spikes forward (error spikes go back on "
                   f"the same pairs)")
    if any(copies):
        lines.append(f"copies: weights of split layers that the chips below them also store ({sum(copies):,} in all, "
                     f"and as many velocities), to sum the error spikes sent down (not counted in the fill)")
    return "\n".join(lines)


def mapping_json(mapping: Mapping) -> dict[str, Any]:
    spec = mapping.spec
    return {"topology": mapping.topology.text,
            "chip": {"name": spec.name, "neurons": spec.neurons, "synapses": spec.synapses, "source": spec.source},
            "chips": [{"chip": c.index, "neurons": c.neurons, "synapses": c.synapses,
                       "copy_synapses": Plan.of(mapping).copy_synapses(c.index),
                       "slices": [{"layer": s.layer, "lo": s.lo, "hi": s.hi, "neurons": s.neurons,
                                   "synapses": s.synapses} for s in c.slices]} for c in mapping.chips],
            "split_layers": list(mapping.split_layers), "links": [list(p) for p in mapping.links()]}
