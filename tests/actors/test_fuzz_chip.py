"""10,000 mutated spike messages sent to a live chip actor: each one is refused with the same
clear error a local decode gives, or (when the mutation left a valid message) answered exactly
as a local chip answers it; afterwards the chip still serves a good message."""

import numpy as np
import pytest

from actors.chip import Chip, ChipConfig
from actors.ray_chip import ChipActor
from actors.wire import encode
from cluster.mapping import whole_layers
from cluster.topology import parse_topology
from launch.run.config import make_config
from launch.run.driver import seeded_params

N_MESSAGES = 10_000


def mutate(rng, good: bytes, variants: list) -> bytes:
    b = bytearray(good)
    kind = rng.integers(0, 6)
    if kind == 0:  # flip 1-4 bytes
        for _ in range(rng.integers(1, 5)):
            b[rng.integers(0, len(b))] ^= int(rng.integers(1, 256))
    elif kind == 1:  # truncate
        b = b[:rng.integers(0, len(b))]
    elif kind == 2:  # insert or delete a run of bytes
        pos = int(rng.integers(0, len(b)))
        if rng.random() < 0.5:
            b[pos:pos] = rng.bytes(int(rng.integers(1, 16)))
        else:
            del b[pos:pos + int(rng.integers(1, 16))]
    elif kind == 3:  # random bytes
        b = bytearray(rng.bytes(int(rng.integers(0, 2 * len(good)))))
    elif kind == 4:  # a well-formed message with a wrong header or values (ids, shape, kind, range)
        b = bytearray(variants[rng.integers(0, len(variants))])
    else:  # a valid variant, then a flipped byte
        b = bytearray(variants[rng.integers(0, len(variants))])
        b[rng.integers(0, len(b))] ^= int(rng.integers(1, 256))
    return bytes(b)


@pytest.mark.slow
def test_ten_thousand_mutated_messages(ray_session):
    import ray

    cfg = make_config("digits", engine="local")
    params = seeded_params(cfg)
    ccfg = ChipConfig(topology=cfg.topology, step=cfg.step, eta=cfg.eta, momentum=cfg.momentum)
    rest = {l: params[l] for l in (2, 3) if l in params}
    layout = whole_layers(parse_topology(cfg.topology), [(0, 0), (1, 3)])
    local = Chip(1, layout, ccfg, rest)
    remote = ChipActor.options(num_cpus=0.01).remote(1, layout, ccfg, rest)
    ops = next(s.ops for s in local.plan.steps(train=False) if s.chip == 1)  # FORWARD of layers 1-3, evaluating
    shape = tuple(local.topo.layers[0].out_shape)
    n = int(np.prod(shape))
    rng = np.random.default_rng(11)
    counts = rng.integers(0, 4, (6, n)) * (rng.random((6, n)) < 0.3)
    head = dict(kind="forward", src=0, dst=1, batch=0, micro=0, shape=shape)
    good = encode(counts, **head).to_pybytes()
    variants = [
        encode(counts, **{**head, "dst": 2}).to_pybytes(),
        encode(counts, **{**head, "kind": "error"}).to_pybytes(),
        encode(counts[:, :-1], **{**head, "shape": (n - 1,)}).to_pybytes(),
        encode(counts, **{**head, "batch": 7}).to_pybytes(),
        encode(counts * 1000, **head).to_pybytes(),                      # int16 values: still valid
        encode(counts.astype(np.float64) + 0.5, **head).to_pybytes(),   # floats where counts go
        encode(counts, **head, encoding="dense").to_pybytes(),
        encode(np.zeros((0, n)), **head).to_pybytes(),
    ]
    want_good = local.step(ops, 0, 0, None, None, 0, None, False, False, None, 0, good)
    msgs = [mutate(rng, good, variants) for _ in range(N_MESSAGES)]
    refs = []
    for i in range(0, N_MESSAGES, 1000):  # at most 1000 calls queued at once
        refs += [remote.step.remote(ops, 0, 0, None, None, 0, None, False, False, None, 0, m) for m in msgs[i:i + 1000]]
        ray.wait(refs[i:i + 1000], num_returns=1000)
    refused = answered = 0
    for m, ref in zip(msgs, refs):
        try:
            want = local.step(ops, 0, 0, None, None, 0, None, False, False, None, 0, m)
        except Exception as exc:
            want = exc
        try:
            got = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            assert isinstance(want, Exception), f"remote refused a message the local chip accepted: {exc}"
            cause = exc.cause if hasattr(exc, "cause") else exc
            assert type(cause).__name__ == type(want).__name__ and str(cause) == str(want)
            assert "expected" in str(want), str(want)  # says what it expected and what came
            refused += 1
            continue
        assert not isinstance(want, Exception), f"remote accepted what the local chip refused: {want}"
        np.testing.assert_array_equal(got, want)
        answered += 1
    assert refused > N_MESSAGES // 2 and answered > 0, (refused, answered)  # both verdicts were exercised
    again = remote.step.remote(ops, 0, 0, None, None, 0, None, False, False, None, 0, good)
    np.testing.assert_array_equal(ray.get(again), want_good)
    ray.kill(remote)
