"""The PyTorch comparison network does the same step as the engine (skipped without torch)."""

import numpy as np
import pytest

from cluster.network import StepConfig, backward, forward
from cluster.topology import parse_topology

torch = pytest.importorskip("torch", reason="torch is only a benchmark comparison, not a dependency")


@pytest.mark.parametrize("text", ["28x28-15C5-P2-40C5-P2-300-10", "12x12x3-4C3p1-P2-6C3p1-P2-10"])
def test_torch_step_matches_engine(text):
    from launch.tools.torch_ref import make_torch_step

    topo = parse_topology(text)
    rng = np.random.default_rng(0)
    params = {l: (rng.integers(-16, 17, topo.layers[l].weight_shape) / 64.0,
                  rng.integers(-16, 17, topo.layers[l].weight_shape[:1]) / 64.0) for l in topo.trainable}
    x = rng.integers(0, 256, (8, *topo.input_shape)) / 256
    y = rng.integers(0, 10, 8)
    cfg = StepConfig(theta_ff=0.5, theta_bp=0.5, alpha=32.0)
    eta = 1 / 1024
    fp = forward(np, topo, params, x, cfg)
    bp = backward(np, topo, params, fp, y, cfg)
    step = make_torch_step(topo, params, "cpu", "float64", 0.5, 0.5, 32.0, eta, 0.0)
    step(torch.tensor(x), torch.tensor(y))
    for l, (W, b) in params.items():
        np.testing.assert_allclose(step.params[l][0].numpy(), W - eta * bp.sums[l][0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(step.params[l][1].numpy(), b - eta * bp.sums[l][1], rtol=0, atol=1e-12)
