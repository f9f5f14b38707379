"""CPU per batch of the chips' own work, without Ray, against the local engine's, in turns.

One process, BLAS limited to one thread, the MNIST preset, batch 256 of synthetic images, initial
weights: the chips of one layer per chip run in this process as the pipeline drives them
(actors.chip.run_chips: the same Arrow messages, encoded and decoded), and the local engine runs
the same batch with one worker. Six rounds of 3 batches each, taking turns; prints the CPU
milliseconds per batch of each round and the median ratio chips / local.

    python docs/measurements/chip-work-inprocess.py [MICRO_BATCH]
"""

import statistics
import sys
import time

from threadpoolctl import threadpool_limits

threadpool_limits(1, "blas")

from actors.chip import Chip, ChipConfig, parse_chips, run_chips  # noqa: E402
from cluster.mapping import whole_layers  # noqa: E402
from cluster.topology import parse_topology  # noqa: E402
from launch.run.config import TrainConfig  # noqa: E402
from launch.run.driver import seeded_params  # noqa: E402
from launch.run.local import LocalEngine  # noqa: E402
from launch.tools.bench import synthetic_batch  # noqa: E402

MB = int(sys.argv[1]) if len(sys.argv) > 1 else 256
cfg = TrainConfig(dataset="mnist", topology="mnist", engine="local", batch_size=256, theta_ff=0.25, lr=1e-5, epochs=1)
topo = parse_topology(cfg.topology)
params = seeded_params(cfg)
ccfg = ChipConfig(topology=cfg.topology, step=cfg.step, eta=cfg.eta, momentum=cfg.momentum)
groups = parse_chips(None, len(topo.layers))
layout = whole_layers(topo, groups)
chips = [Chip(i, layout, ccfg, {l: params[l] for l in range(lo, hi + 1) if l in params})
         for i, (lo, hi) in enumerate(groups)]
local = LocalEngine(cfg, topo, params)
local.workers, local.micro_batch = 1, MB
x, y = synthetic_batch(topo.input_shape, 256, topo.num_classes)
run_chips(chips, x, y, MB, 0)  # warm-up
local.train_step(x, y)
tcs, tls = [], []
for r in range(6):
    t0 = time.process_time()
    for b in range(3):
        run_chips(chips, x, y, MB, 1 + 3 * r + b)
    tcs.append((time.process_time() - t0) / 3)
    t0 = time.process_time()
    for b in range(3):
        local.train_step(x, y)
    tls.append((time.process_time() - t0) / 3)
print(f"micro-batch {MB}: chips {[round(t * 1e3) for t in tcs]} ms, local {[round(t * 1e3) for t in tls]} ms "
      f"CPU per batch; median ratio {statistics.median(c / l for c, l in zip(tcs, tls)):.2f}")
