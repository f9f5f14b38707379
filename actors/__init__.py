"""Chips: plain classes that each hold one layer, or a group of consecutive layers, speak the
Arrow spike wire and keep counters (``chip``, ``wire``), wrapped as Ray actors at the edge
(``ray_chip``) and fed by the driver's pipeline (``pipeline``) (DESIGN §5).

Nothing here imports ``launch``; only ``ray_chip`` and ``pipeline`` import Ray, so the chips
themselves run and are tested without it (``actors.chip.run_chain``).
"""
