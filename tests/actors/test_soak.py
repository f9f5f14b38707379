"""Soak: a 20-epoch chip run keeps its memory flat: driver and chip resident sets and Ray's
object store at the last epoch within 10 % of the second epoch (no leaked references)."""

import pyarrow.parquet as pq
import pytest

from launch.run.config import make_config
from launch.run.runs import train

pytestmark = pytest.mark.ray  # a Ray instance of its own, or the session's (conftest)


def test_twenty_epochs_memory_flat(ray_session, tmp_path):
    run = tmp_path / "soak"
    train(make_config("digits", epochs=20, limit_train=320, limit_test=64, micro_batch=8, out=str(run)),
          progress=False, log=lambda s: None)
    rows = pq.read_table(run / "metrics.parquet").to_pylist()
    assert len(rows) == 20
    second, last = rows[1], rows[-1]
    for key in ("rss_driver_mib", "rss_chips_mib"):
        assert last[key] <= 1.10 * second[key], (key, [round(r[key], 1) for r in rows])
    if "object_store_objects" in second:  # Ray's internal summary was readable
        # a few objects are in flight at any moment; a leak of per-batch references would leave
        # hundreds after 20 epochs of 10 batches x 4 micro-batches
        assert last["object_store_objects"] <= 50, [r["object_store_objects"] for r in rows]
        assert last["object_store_mib"] <= 1.10 * second["object_store_mib"] + 1
