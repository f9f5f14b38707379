"""The CIFAR-10 preset trains end to end on chips (one layer per chip, ten chips) on the CIFAR-10
subset in ../shared/data: a few batches, the loss falls."""

import pyarrow.parquet as pq
import pytest

from launch.run.config import make_config
from launch.run.runs import train

pytestmark = pytest.mark.ray  # a Ray instance of its own, or the session's (conftest)


def test_cifar10_preset_on_chips_loss_falls(ray_session, shared_dir, tmp_path):
    data = shared_dir / "data" / "cifar10-subset"
    if not (data / "train_subset.bin").is_file():
        pytest.skip(f"CIFAR-10 subset not found in {data}")
    run = tmp_path / "cifar"
    summary = train(make_config("cifar10", data_dir=str(data), limit_train=48, limit_test=16, batch_size=16,
                                epochs=3, out=str(run)), progress=False, log=lambda s: None)
    assert summary["engine"] == "chips"
    loss = [r["train_loss"] for r in pq.read_table(run / "metrics.parquet").to_pylist()]
    assert loss[0] > loss[1] > loss[2], loss  # 9 batches of the same 48 images
    links = pq.read_table(run / "traffic.parquet").to_pylist()
    assert {(r["src"], r["dst"]) for r in links} >= {(k, k + 1) for k in range(9)} | {(k + 1, k) for k in range(9)}
