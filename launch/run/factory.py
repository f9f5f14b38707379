"""The engine factory: the one place that knows both engines (the composition root of a run; the
engine protocol, :mod:`launch.run.engine`, knows neither)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .engine import Engine


def make_engine(cfg: Any, topo: Any, params: dict, address: str | None = None,
                on_lost: Callable[[str], str] | None = None) -> Engine:
    """The engine ``cfg.engine`` names, holding ``params`` (initial host weights): the one place
    that knows both. ``address``: the Ray cluster the chips join (None: RAY_ADDRESS or a private one);
    on_lost: the error text for a private Ray instance that dies under the run (chips only)."""
    if cfg.engine == "chips":
        from .chips import ChipEngine  # noqa: PLC0415  (imports Ray: only a chips run pays for it)

        return ChipEngine(cfg, topo, params, address=address, on_lost=on_lost)
    from .local import LocalEngine  # noqa: PLC0415  (kept beside ChipEngine's: one engine is built)

    return LocalEngine(cfg, topo, params)
