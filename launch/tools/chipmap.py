"""``spikegrad map``: a network mapped onto chips with a capacity (:mod:`cluster.mapping`), as a table
with each chip's fill per limit (the binding one marked), the sources of the limits, and a figure."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from cluster.errors import SpikeGradError
from cluster.hardware import SOURCES
from cluster.mapping import Fill, Mapping, Slice, layer_units


def _slice_text(mapping: Mapping, s: Slice) -> str:
    layer = mapping.topology.layers[s.layer]
    units, _, _ = layer_units(mapping.topology, s.layer)
    what = "neurons" if layer.kind == "dense" else "channels"
    part = "" if s.units == units else f" {what[:-1]} {s.lo}" if s.units == 1 else f" {what} {s.lo}-{s.hi - 1}"
    return f"l{s.layer} {layer.token()}{part}"


def _binding(fills: list[Fill]) -> Fill:
    return max(fills, key=lambda f: f.share)


def _limits_text(mapping: Mapping) -> list[str]:
    spec, cap = mapping.spec, mapping.spec.capacity
    if cap.pooled:
        return [f"{spec.name} chip: {cap.neurons:,} neurons (V and U compartments each) and {cap.synapses:,} weights "
                f"(own and copies) per chip, one pool, no cores ({spec.source})"]
    src = cap.sources
    per_core = (f"per core {cap.compartments:,} compartments [{src.get('compartments')}], "
                + (f"{cap.axons:,} input axons [{src.get('axons')}], " if cap.axons is not None else
                   f"input axons not limited (none published) [{src.get('axons')}], ")
                + f"{cap.synapse_bits:,} bits of synaptic memory [{src.get('synapse_bits')}]")
    if cap.layer_per_core_only:
        per_core = ("per core (one layer each) neuron-state entries "
                    + "/".join(f"{n // 1024}Ki" for n in cap.core_neuron_entries) + ", kernel entries "
                    + "/".join(f"{n // 1024}Ki" for n in cap.core_kernel_entries) + f" [{src.get('cores')}]")
    keys = sorted({k for k in src.values()})
    return [f"{spec.name} ({spec.source}): {cap.cores:,} cores per chip [{src.get('cores')}]; {per_core}; weights "
            f"{cap.weight_bits} bit [{src.get('weight_bits')}], kernels "
            f"{'shared by a core' if cap.shares_kernels else 'stored per neuron'} [{src.get('shares_kernels')}], "
            f"{'learns on chip' if cap.learns else 'NO on-chip learning'} [{src.get('learns')}]; "
            f"{spec.compartments_per_neuron} compartment(s) per neuron",
            "sources: " + "; ".join(f"[{k}] {SOURCES.get(k, k)}" for k in keys)]


def format_mapping(mapping: Mapping) -> str:
    """The mapping table: per chip its layer slices, cores, and every limit's fill (``*`` binds)."""
    lines = [f"{mapping.topology.text} mapped onto {len(mapping.chips)} {mapping.spec.name} chip(s)"]
    lines += [w for t in _limits_text(mapping) for w in textwrap.wrap(t, 118, subsequent_indent="  ")]
    names = [f.limit for f in mapping.fill(mapping.chips[0])]
    lines.append(f"{'chip':>4}  " + "  ".join(f"{n:>16}" for n in names) + f"  {'copies':>9}  layer slices")
    for c in mapping.chips:
        fills = mapping.fill(c)
        bind = _binding(fills)
        cells = [f"{f.used:>9,.0f} {100 * f.share:>5.1f}%{'*' if f is bind else ' '}" for f in fills]
        lines.append(f"{c.index:>4}  " + "  ".join(f"{x:>16}" for x in cells) + f"  {c.copies:>9,}  "
                     + ", ".join(_slice_text(mapping, s) for s in c.slices))
    total_n = sum(c.neurons for c in mapping.chips)
    total_s = sum(c.synapses for c in mapping.chips)
    total_c = sum(c.copies for c in mapping.chips)
    split = mapping.split_layers
    links = mapping.links()
    binds: dict[str, int] = {}
    for c in mapping.chips:
        b = _binding(mapping.fill(c)).limit
        binds[b] = binds.get(b, 0) + 1
    lines.append(f"{len(mapping.chips)} chip(s), {total_n:,} neurons, {total_s:,} weights of their own and {total_c:,} "
                 f"copies; " + (f"layers split across chips: {', '.join(str(l) for l in split)}; " if split
                                else "no layer split; ")
                 + f"{len(links)} directed chip-to-chip link(s) carry spikes forward (error spikes go back on the "
                   f"same pairs)")
    lines.append("binding limit (*): " + ", ".join(f"{k} on {v} chip(s)" for k, v in binds.items())
                 + "; copies: weights of a split layer above that a chip also stores, to sum the error spikes sent "
                   "down (counted in the fill)")
    lines += [f"note: {n}" for n in mapping.notes]
    if not mapping.spec.capacity.learns:
        lines.append(f"note: {mapping.spec.name} cannot learn on chip: this maps a trained network for inference "
                     f"(--compartments 1 counts one compartment per neuron); `spikegrad train --chip "
                     f"{mapping.spec.name}` is refused")
    lines.append("assumptions: each stored weight serves forward (W) and backward (Wᵀ); velocities are not counted; "
                 "a core holds one layer (cluster/mapping.py)")
    lines.append("checked against: hand counts of the mnist preset's cores on Loihi and the copies the chips keep "
                 "(tests/cluster/test_mapping.py); no vendor mapper (NengoLoihi, Sinabs) was run, so its packing "
                 "may need more or fewer cores than shown")
    return "\n".join(lines)


def mapping_json(mapping: Mapping) -> dict[str, Any]:
    spec, cap = mapping.spec, mapping.spec.capacity
    chips = []
    for c in mapping.chips:
        fills = mapping.fill(c)
        chips.append({"chip": c.index, "neurons": c.neurons, "synapses": c.synapses, "copy_synapses": c.copies,
                      "fill": [{"limit": f.limit, "used": f.used, "capacity": f.capacity, "unit": f.unit,
                                "share": f.share} for f in fills],
                      "binding": _binding(fills).limit,
                      "slices": [{"layer": s.layer, "lo": s.lo, "hi": s.hi, "neurons": s.neurons,
                                  "synapses": s.synapses, "copies": s.copies, "cores": s.cores, "bits": s.bits,
                                  "axons": s.axons} for s in c.slices]})
    return {"topology": mapping.topology.text,
            "chip": {"name": spec.name, "source": spec.source, "compartments_per_neuron": spec.compartments_per_neuron,
                     "neurons": spec.neurons, "synapses": spec.synapses, "cores": cap.cores,
                     "core_compartments": cap.compartments, "core_axons": cap.axons,
                     "core_synapse_bits": cap.synapse_bits, "weight_bits": cap.weight_bits,
                     "shares_kernels": cap.shares_kernels, "learns_on_chip": cap.learns,
                     "sources": {k: SOURCES.get(v, v) for k, v in cap.sources.items()}},
            "chips": chips, "split_layers": list(mapping.split_layers), "links": [list(p) for p in mapping.links()],
            "notes": list(mapping.notes)}


def fill_figure(mapping: Mapping, path: str | Path) -> Path:
    """A grouped bar chart: per chip, the share of every limit it uses (the binding one outlined)."""
    import matplotlib  # noqa: PLC0415  (matplotlib only when a figure is asked)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415  (matplotlib: only when a figure is drawn)

    out = Path(path)
    if out.is_dir() or not out.parent.is_dir():
        raise SpikeGradError(f"--figure expected a PNG file in an existing folder, got {str(out)!r} "
                             f"({'a directory' if out.is_dir() else 'no such folder'})")
    chips = mapping.chips
    names = [f.limit for f in mapping.fill(chips[0])]
    from matplotlib.patches import Patch  # noqa: PLC0415  (matplotlib: only when a figure is drawn)

    width = 0.8 / len(names)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(chips) + 3), 4.2))
    for i, name in enumerate(names):
        shares = [100 * mapping.fill(c)[i].share for c in chips]
        binds = [_binding(mapping.fill(c)).limit == name for c in chips]
        xs = [c.index + (i - (len(names) - 1) / 2) * width for c in chips]
        ax.bar(xs, shares, width, color=colors[i % len(colors)],
               edgecolor=["black" if b else "none" for b in binds], linewidth=1.2)
    ax.axhline(100, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("chip")
    ax.set_ylabel("fill (% of the limit)")
    ax.set_xticks([c.index for c in chips])
    ax.set_ylim(0, 110)
    spec = mapping.spec
    ax.set_title(f"{mapping.topology.text}\non {len(chips)} {spec.name} chip(s): fill per limit (binding outlined)",
                 fontsize=9)
    handles = [Patch(color=colors[i % len(colors)], label=n) for i, n in enumerate(names)]
    handles.append(Patch(facecolor="white", edgecolor="black", label="binding limit"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.text(0.01, 0.01, f"limits: {spec.source}; copies counted (cluster/hardware.py, cluster/mapping.py)",
             fontsize=6, color="dimgrey")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    try:
        fig.savefig(out, dpi=120, format="png")
    except (OSError, ValueError) as exc:
        raise SpikeGradError(f"--figure {out}: cannot write it ({exc})") from None
    finally:
        plt.close(fig)
    return out
