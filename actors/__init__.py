"""Chips: one plain class whose objects each hold slices of one or more consecutive layers (a whole
layer being the slice of all its units), speak the Arrow spike wire and keep counters (``chip``,
``wire``; pieces of layers in ``slices``), wrapped as Ray actors at the edge
(``ray_chip``) and fed by the driver's pipeline (``pipeline``) (docs/design.md §5).

Nothing here imports ``launch``; only ``ray_chip`` and ``pipeline`` import Ray, so the chips
themselves run and are tested without it (``actors.chip.run_chips``).
"""
