"""ray_config.yaml is a well-formed cluster-launcher config that follows the README's security advice."""

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML comes with ray[default]")

CONFIG = Path(__file__).resolve().parents[2] / "ray_config.yaml"


def test_ray_config_shape_and_safety():
    cfg = yaml.safe_load(CONFIG.read_text())
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type",
                "setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in cfg, key
    assert cfg["head_node_type"] in cfg["available_node_types"]
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert any("pip install" in c and "spikegrad" in c for c in cfg["setup_commands"])
