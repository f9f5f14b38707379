"""The versions of a run directory's files, and the one place that reads each older version.

Every file a run writes carries the format it was written in: ``config.json`` a key ``"format"``,
``checkpoint.npz`` a scalar array ``format``, each Parquet table the schema metadata key
``spikegrad.format``. :data:`FORMAT` is the version written now. Files of a version newer than
this program's are refused (naming both); older ones are migrated here, on reading, so that the
rest of the program sees one format only.

====== ================================ =====================================================
format written by                        how it is told apart, what reading it changes
====== ================================ =====================================================
0      0.1.0 before 2026-12-01 03:49    no stamp; a layers/chips table without the column
                                         ``error_spikes_delivered``: its ``error_spikes`` were the
                                         gated δ (now ``error_spikes_delivered``; the emitted count
                                         is unknown, NaN) and layer 0's float-input
                                         multiplications were in ``acc_forward`` (now
                                         ``input_macs``); banked counters in a checkpoint's
                                         progress record have 6 columns in the order
                                         :data:`OLD_COUNTERS`
1      0.1.0 from 2026-12-01 03:49      no stamp; today's counters; a capacity (``chip_neurons``,
                                         ``chip_synapses``, ``chip``) was mapped counting neither
                                         weight copies nor per-core limits, so today's mapping of
                                         its config may differ from the chips it trained on
2      0.2.0 (2026-12-07)               stamped
====== ================================ =====================================================

A config.json or checkpoint.npz without a stamp is format 1 unless its tables say 0 (the config
and checkpoint did not change between 0 and 1).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from cluster.errors import SpikeGradError
from cluster.synops import COUNTERS

FORMAT = 2
OLD_COUNTERS = ("spikes", "error_spikes", "acc_forward", "acc_backward", "acc_update", "macs")
PARQUET_KEY = b"spikegrad.format"


def _checked(version: object, what: str) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise SpikeGradError(f"{what}: format expected an integer >= 0, got {version!r}")
    if version > FORMAT:
        raise SpikeGradError(f"{what} is of format {version}, written by a newer spikegrad; this one reads formats "
                             f"0-{FORMAT}")
    return version


# -- config.json ------------------------------------------------------------------------------------

def config_data(data: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A decoded config.json's fields for :class:`~launch.run.config.TrainConfig`, and its format."""
    data = dict(data)
    version = _checked(data.pop("format", 1), "config.json")
    return data, version  # formats 0-1: the same keys; fields added since take their defaults


def stamp_config(text: str) -> str:
    """config.json's text with the format added (the config's own JSON object, sorted keys)."""
    data = json.loads(text)
    data["format"] = FORMAT
    return json.dumps(data, indent=2, sort_keys=True)


# -- checkpoint.npz ---------------------------------------------------------------------------------

def checkpoint_arrays(arrays: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    """A checkpoint's arrays in today's format (the stamp removed)."""
    arrays = dict(arrays)
    stamp = arrays.pop("format", None)
    if stamp is not None:
        if stamp.shape != () or stamp.dtype.kind not in "iu":
            raise SpikeGradError(f"{what}: format expected a scalar integer, got {stamp.dtype} of shape {stamp.shape}")
        _checked(int(stamp), what)
    return arrays  # formats 0-1: the same arrays; banked counters are read by banked_counters


def stamp_checkpoint(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**arrays, "format": np.asarray(FORMAT, dtype=np.int64)}


def banked_counters(data: Any, n_layers: int) -> tuple[np.ndarray, list[dict]]:
    """A checkpoint progress record's banked counters as (layers (n_layers, len(COUNTERS)), chip
    reports): today's ``{"layers": ..., "chips": ...}``, format 0's 6-column rows, or the two forms of
    the first trainers (a list of layer rows; a list of chip reports)."""
    from actors.chip import merge_reports  # noqa: PLC0415  (chip reports are the actors' format)

    if data is None:
        return np.zeros((n_layers, len(COUNTERS))), []
    if isinstance(data, dict):
        layers, chips = np.asarray(data["layers"], dtype=np.float64), merge_reports(list(data["chips"]),
                                                                                   over_time=True)
    elif data and isinstance(data[0], dict):
        chips = merge_reports(list(data), over_time=True)
        layers = np.zeros((n_layers, len(COUNTERS)))
        for rep in chips:
            for l, row in rep["synops"].items():
                row = counters_row(int(l), row)
                layers[int(l)] += [row[k] for k in COUNTERS]  # a split layer: rows of several chips
    else:
        layers, chips = np.asarray(data, dtype=np.float64), []
    if layers.shape == (n_layers, len(OLD_COUNTERS)):  # format 0
        layers = np.array([[counters_row(l, dict(zip(OLD_COUNTERS, row)))[k] for k in COUNTERS]
                           for l, row in enumerate(layers.tolist())])
    if layers.shape != (n_layers, len(COUNTERS)):
        raise ValueError(f"banked counters of shape {layers.shape}, expected {(n_layers, len(COUNTERS))}")
    return layers, chips


# -- Parquet tables ---------------------------------------------------------------------------------

def counters_row(l: int, row: dict) -> dict:
    """A format-0 counters row of layer l in today's names (module docstring); l < 0: a chip's row
    summed over its layers, where layer 0's input MACs cannot be told apart (``input_macs`` NaN).
    A row already in today's names is returned as it is."""
    if "error_spikes_delivered" in row:
        return row
    out = dict(row)
    out["error_spikes_delivered"], out["error_spikes"] = row.get("error_spikes", 0.0), float("nan")
    out["input_macs"] = float("nan") if l < 0 else row.get("acc_forward", 0.0) if l == 0 else 0.0
    if l == 0:
        out["acc_forward"] = 0.0
    return out


def table_version(metadata: dict[bytes, bytes] | None, columns: list[str], what: str) -> int:
    """The format of a table: its stamp, else 0 or 1 from its columns (module docstring)."""
    raw = (metadata or {}).get(PARQUET_KEY)
    if raw is not None:
        try:
            version = int(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise SpikeGradError(f"{what}: format expected an integer, got {raw[:20]!r}") from None
        return _checked(version, what)
    counted = "acc_update" in columns  # a table of counters (layers, chips)
    return 0 if counted and "error_spikes_delivered" not in columns else 1


def table_rows(table: str, rows: list[dict], version: int) -> list[dict]:
    """A table's rows in today's format."""
    if version == 0 and table in ("layers", "chips"):
        return [counters_row(int(r["layer"]) if table == "layers" else -1, r) for r in rows]
    return rows


def parquet_metadata() -> dict[bytes, bytes]:
    return {PARQUET_KEY: str(FORMAT).encode("ascii")}
