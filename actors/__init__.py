"""Chips: plain classes that each hold one layer's state, speak the Arrow spike wire and keep
counters, wrapped as Ray actors at the edge (DESIGN §5).

Not built yet: the chip engine, the wire and the Ray pipeline are the next piece of work
(issue 3). Until then ``spikegrad train --engine local`` is the only engine.
"""
